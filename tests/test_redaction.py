"""#22.9: credentials inside URLs (``user:pass@``, signed-URL and token query parameters, a
Qdrant URL carrying a key) are never shown: not in errors, log lines, reports, failed rows'
reasons, tables or ``--json`` output. Through the real CLI against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import ImageServer, assert_one_line_error, free_port, run_cli
from PIL import Image
from skimage import data as skdata

from mmindex.pipeline.errors import StoreUnavailableError
from mmindex.pipeline.redact import redact_secrets

SECRETS = ("hunter2", "AKIASECRET", "SIGSECRET", "TOKSECRET", "QKEYSECRET")


def _assert_no_secret(*texts: str) -> None:
    for text in texts:
        leaked = [secret for secret in SECRETS if secret in text]
        assert not leaked, (leaked, text)


@pytest.mark.parametrize(("text", "shown"), [
    ("cannot reach https://bob:hunter2@h:6333/x", "cannot reach https://***@h:6333/x"),
    ("s3://AKIASECRET:SIGSECRET@bucket/p", "s3://***@bucket/p"),
    ("http://h/a.jpg?X-Amz-Credential=AKIASECRET%2F1&X-Amz-Signature=SIGSECRET&X-Amz-Expires=60",
     "http://h/a.jpg?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60"),
    ("https://a.blob.core.windows.net/c/b.jpg?sv=2020&sig=SIGSECRET%3D&se=2026",
     "https://a.blob.core.windows.net/c/b.jpg?sv=2020&sig=***&se=2026"),
    ('{"uri": "https://h/x?access_token=TOKSECRET&page=2"}', '{"uri": "https://h/x?access_token=***&page=2"}'),
    ("https://QKEYSECRET@cloud.qdrant.io?api-key=QKEYSECRET", "https://***@cloud.qdrant.io?api-key=***"),
    ("photos/me@home.jpg and a=b and https://h/a@b.jpg", "photos/me@home.jpg and a=b and https://h/a@b.jpg"),
])
def test_redact_secrets(text: str, shown: str) -> None:
    assert redact_secrets(text) == shown
    assert str(StoreUnavailableError(text)) == shown  # every mmindex error message


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skdata.chelsea()).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_the_cli_never_shows_credentials(tmp_path: Path, tiny_local_dir: Path) -> None:
    root = ["--root", str(tmp_path / "root")]
    with ImageServer() as server:
        good = server.add_image("cat.jpg", _jpeg()).replace("http://", "http://bob:hunter2@")
        rows = [
            f"{good}?token=TOKSECRET,a cat",
            server.url("/missing.jpg?X-Amz-Credential=AKIASECRET&X-Amz-Signature=SIGSECRET") + ",gone",
            "http://bob:hunter2@127.0.0.1:1/x.jpg,refused",
        ]
        manifest = tmp_path / "m.csv"
        manifest.write_text("url,caption\n" + "\n".join(rows) + "\n", encoding="utf-8")
        indexed = run_cli("--verbose", "index", str(manifest), "-c", "web", "--model", f"local-dir:{tiny_local_dir}",
                          "--workers", "0", "--allow-network", "127.0.0.1/32", "--fetch-retries", "0", "--json", *root)
    assert indexed.code == 0, indexed.stderr
    report = json.loads(indexed.stdout)
    assert (report["images"], report["failed"]) == (1, 2)
    assert report["failures"] and all("***" in failure["path"] or "@" not in failure["path"]
                                      for failure in report["failures"])
    shown = [indexed.stdout, indexed.stderr]
    for args in (["info", "-c", "web", "--failed", "--json"], ["info", "-c", "web", "--failed"], ["info", "--json"],
                 ["info", "-c", "web"], ["query", "a cat", "-c", "web", "--json"], ["query", "a cat", "-c", "web"]):
        listed = run_cli(*args, *root)
        assert listed.code == 0, (args, listed.stderr)
        shown += [listed.stdout, listed.stderr]
    _assert_no_secret(*shown)
    reasons = [row["error"] for shard in (tmp_path / "root" / "shards").rglob("*.parquet")
               for row in pq.read_table(shard, columns=["error"]).to_pylist() if row["error"]]
    assert reasons
    _assert_no_secret(*reasons)  # the durable failed rows' reasons too


def test_a_qdrant_url_with_a_key_is_never_shown(tmp_path: Path, tiny_local_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("a note", encoding="utf-8")
    url = f"http://admin:QKEYSECRET@127.0.0.1:{free_port()}/?api_key=QKEYSECRET"  # nothing listens there
    for env in ({}, {"QDRANT_URL": url}):
        flags = () if env else ("--qdrant-url", url)
        result = run_cli("index", str(corpus), "-c", "notes", "--model", f"local-dir:{tiny_local_dir}", "--workers", "0",
                         "--root", str(tmp_path / "root"), *flags, env=env)
        assert_one_line_error(result, "cannot reach Qdrant at http://***@127.0.0.1:")
        assert "api_key=***" in result.stderr
        _assert_no_secret(result.stdout, result.stderr)
