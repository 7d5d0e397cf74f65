"""URL manifests: every format streams to the same items; indexing one fetches from a real server
on 127.0.0.1, fails bad rows with their reasons, puts other columns under ``meta.``, and re-runs
download exactly what changed (the server counts the bodies it sent)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ImageServer, run_cli
from PIL import Image

from mmindex.pipeline.errors import ConfigError, SourceError
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.search.query import SearchQuery, search
from mmindex.pipeline.sources import manifest as manifest_module
from mmindex.pipeline.sources.manifest import ManifestSource, normalized_url
from mmindex.pipeline.sources.resolve import source_options, source_spec
from mmindex.schemas.config import Settings

ROWS = [
    {"url": "http://Example.org:80/a.jpg#frag", "caption": "a cat", "license": "cc-by", "year": 2009},
    {"url": "https://example.org/b.png", "caption": "a rocket", "license": "cc0", "year": 2011},
]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """Write ``rows`` in the format ``path``'s name asks for."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if name.endswith((".csv", ".tsv")):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), delimiter="\t" if name.endswith(".tsv") else ",")
        writer.writeheader()
        writer.writerows(rows)
        body = text.getvalue()
    elif name.endswith(".array.json"):
        body = json.dumps(rows)
    else:
        body = "".join(json.dumps(row) + "\n" for row in rows)
    data = body.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["m.csv", "m.tsv", "m.jsonl", "m.json", "m.array.json", "m.parquet", "m.csv.gz",
                                  "m.jsonl.gz"])
def test_every_format_gives_the_same_items(tmp_path: Path, name: str) -> None:
    path = write_manifest(tmp_path / name, ROWS)
    spec = source_spec(str(path))
    assert spec.kind == "manifest"
    refs = list(ManifestSource("m", spec).items())
    assert [ref.uri for ref in refs] == [row["url"] for row in ROWS]
    assert [ref.path for ref in refs] == ["http://example.org/a.jpg", "https://example.org/b.png"]
    assert [ref.caption for ref in refs] == ["a cat", "a rocket"]
    assert [json.loads(ref.metadata_json or "{}") for ref in refs] == [
        {"license": "cc-by", "year": 2009}, {"license": "cc0", "year": 2011}]
    assert [ref.ext for ref in refs] == ["jpg", "png"]


def test_columns_can_be_named(tmp_path: Path) -> None:
    rows = [{"link": "https://example.org/x.jpg", "alt": "x", "id": "row-1", "other": 1}]
    path = write_manifest(tmp_path / "m.jsonl", rows)
    with pytest.raises(SourceError, match="no URL column"):
        list(ManifestSource("m", source_spec(str(path))).items())
    options = source_options(url_column="link", caption_column="alt", key_column="id")
    (ref,) = ManifestSource("m", source_spec(str(path), options)).items()
    assert (ref.uri, ref.caption, ref.path, ref.key, ref.metadata_json) == (
        "https://example.org/x.jpg", "x", "row-1", "m/row-1", '{"other": 1}')


def test_a_large_json_array_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "MAX_JSON_ARRAY_BYTES", 64)
    path = write_manifest(tmp_path / "m.array.json", ROWS)
    with pytest.raises(SourceError, match="write it as JSON Lines"):
        list(ManifestSource("m", source_spec(str(path))).items())


def test_source_is_a_string_and_its_kind_comes_from_it(tmp_path: Path) -> None:
    remote = source_spec("s3://bucket/laion/part-0.parquet")
    assert (remote.kind, remote.path) == ("manifest", "s3://bucket/laion/part-0.parquet")
    assert source_spec(str(tmp_path)).kind == "folder"
    assert source_spec("s3://bucket/prefix/").kind == "prefix"
    with pytest.raises(ConfigError, match="--format must be one of"):
        source_options(format="zip")


def test_normalized_url_keys() -> None:
    assert normalized_url("HTTPS://user:pw@Example.ORG:443/a.jpg?x=1#y") == "https://example.org/a.jpg?x=1"
    assert normalized_url("http://example.org:8080") == "http://example.org:8080/"


def photo(name: str) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def server():
    with ImageServer() as running:
        yield running


def test_index_a_manifest_then_rerun_downloads_only_what_changed(
    tmp_path: Path, server: ImageServer, tiny_embedder: object
) -> None:
    good = {name: server.add_image(f"{name}.jpg", photo(name)) for name in ("chelsea", "astronaut", "rocket")}
    rows = [
        {"url": good["chelsea"], "caption": "a cat", "license": "cc-by"},
        {"url": good["astronaut"], "caption": "an astronaut", "license": "cc0"},
        {"url": server.url("/missing.jpg"), "caption": "gone", "license": "cc-by"},
        {"url": server.url("/page.jpg"), "caption": "html", "license": "cc-by"},
        {"url": "file:///etc/passwd", "caption": "local", "license": "cc-by"},
        {"url": "/etc/hostname", "caption": "a bare path", "license": "cc-by"},
    ]
    manifest = write_manifest(tmp_path / "laion.parquet", rows)
    settings = Settings(root=tmp_path / "root", workers=0, batch_size=4, shard_size=3)
    options = source_options(allow_network=["127.0.0.1/32"], fetch_retries=0, fetch_timeout=5)

    def run(**extra: object):
        request = IndexRequest(str(manifest), "m", source_options=options, **extra)  # type: ignore[arg-type]
        return index_source(request, settings, embedder=tiny_embedder)  # type: ignore[arg-type]

    first = run()
    assert (first.counts.embedded, first.counts.failed) == (2, 4)
    assert dict(first.failures) == {
        normalized_url(server.url("/missing.jpg")): "http 404",
        normalized_url(server.url("/page.jpg")): "not an image (text/html)",
        "file:///etc/passwd": "scheme file: refused",
        "/etc/hostname": "scheme (none): refused",  # a manifest's path is never opened as a file
    }
    assert server.bodies_sent() == 2
    hits = search(SearchQuery("m", text="a cat", where=("meta.license=cc-by",), limit=10), settings,
                  embedder=tiny_embedder)  # type: ignore[arg-type]
    assert [hit.payload["caption"] for hit in hits] == ["a cat"]
    assert hits[0].payload["meta"] == {"license": "cc-by"} and len(hits[0].payload["sha256"]) == 64

    again = run()
    assert (again.counts.unchanged, again.counts.failed_unchanged, again.counts.embedded) == (2, 4, 0)
    assert server.bodies_sent() == 2  # an unchanged manifest downloads nothing

    rows.append({"url": good["rocket"], "caption": "a rocket", "license": "cc0"})
    rows[1]["caption"] = "an astronaut in a suit"
    write_manifest(manifest, rows)
    edited = run()
    assert (edited.counts.new, edited.counts.changed, edited.counts.embedded) == (1, 1, 2)
    assert server.bodies_sent() == 4  # exactly the new row and the edited one

    del rows[0]
    write_manifest(manifest, rows)
    assert run(delete_missing=False).counts.deleted == 0
    removed = run()
    assert removed.counts.deleted == 1 and server.bodies_sent() == 4

    missing_requests = server.requests["/missing.jpg"]
    retried = run(retry_failed=True)
    assert retried.counts.retried == 4 and server.requests["/missing.jpg"] == missing_requests + 1


def test_cli_indexes_a_manifest_and_lists_failures(tmp_path: Path, server: ImageServer, tiny_local_dir: Path) -> None:
    rows = [{"url": server.add_image("cat.jpg", photo("chelsea")), "caption": "a cat"},
            {"url": server.url("/noai.jpg"), "caption": "opted out"}]
    server.add_image("flaky", photo("rocket"))
    manifest = write_manifest(tmp_path / "m.csv", rows)
    flags = ["--root", str(tmp_path / "root")]
    result = run_cli("index", str(manifest), "-c", "web", "--model", f"local-dir:{tiny_local_dir}", "--workers", "0",
                     "--allow-network", "127.0.0.1/32", "--fetch-retries", "0", "--json", *flags)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["images"], report["failed"]) == (1, 1)
    listed = run_cli("info", "-c", "web", "--failed", "--json", *flags)
    assert [item["error"] for item in json.loads(listed.stdout)] == ["opted out: X-Robots-Tag noai"]

    refused = run_cli("index", str(manifest), "-c", "web2", "--model", f"local-dir:{tiny_local_dir}", "--workers", "0",
                      "--fetch-retries", "0", "--json", *flags)  # no --allow-network: loopback is refused
    assert refused.code == 0, refused.stderr
    assert json.loads(refused.stdout)["failed"] == 2
    bad = run_cli("index", str(manifest), "-c", "web3", "--allow-network", "not-a-net", *flags)
    assert bad.code != 0 and "is not a network" in bad.stderr


def test_a_unit_s_fetches_start_before_its_model_is_loaded(
    tmp_path: Path, server: ImageServer, tiny_embedder: object
) -> None:
    """Loading the model (seconds in a flow's shard process) overlaps the unit's first fetches."""
    import time

    from mmindex.pipeline.ingest.run import RunSession, holding_ingest_lock, plan_run

    url = server.add_image("cat.jpg", photo("chelsea"))
    manifest = write_manifest(tmp_path / "m.jsonl", [{"url": url, "caption": "a cat"}])
    settings = Settings(root=tmp_path / "root", workers=0, batch_size=4)
    options = source_options(allow_network=["127.0.0.1/32"], fetch_retries=0, fetch_timeout=5)
    with holding_ingest_lock(settings, "m"):
        run = plan_run(IndexRequest(str(manifest), "m", source_options=options), settings,
                       embedder=tiny_embedder).run  # type: ignore[arg-type]
    assert run is not None and server.bodies_sent() == 0
    fetched_before_load: list[bool] = []

    def loader(spec: object, loader_settings: object) -> object:
        deadline = time.monotonic() + 10
        while not server.bodies_sent() and time.monotonic() < deadline:
            time.sleep(0.01)  # polls the server's count; the deadline only bounds a failure
        fetched_before_load.append(server.bodies_sent() == 1)
        return tiny_embedder

    with RunSession(settings, "m", run.run_id, loader=loader) as session:  # type: ignore[arg-type]
        outcome = session.process(run.seqs[0])
    assert fetched_before_load == [True] and outcome.counts.embedded == 1
