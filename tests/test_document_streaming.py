"""One long document is indexed in bounded memory (issue 16 item 5): its chunks are embedded a
group at a time and written to the unit's shard a row group at a time, then applied a row group
at a time. The shard still holds the whole document (it is never split across shards), so
incremental reindex, a killed run and a re-run behave exactly as for a short document."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import BACKENDS, collection_points, run_cli

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.embed.chunking import chunk_text
from mmindex.pipeline.ids import chunk_key
from mmindex.pipeline.ingest import execute
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.io.atomic import TMP_PREFIX
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.schemas.config import Settings

ROW_GROUP = 16
CHILD_HOOKS = Path(__file__).parent / "child_hooks"
DEADLINE_S = 240


def _prose(seed: int, paragraphs: int) -> str:
    """Seeded paragraphs of pseudo-words (the shape benchmarks/documents.py generates)."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("etaoinshrdlucmfwypvbg") for _ in range(rng.randint(2, 9))) for _ in range(400)]
    out = []
    for _ in range(paragraphs):
        sentences = [" ".join(rng.choices(vocabulary, k=rng.randint(5, 20))).capitalize() + "." for _ in range(rng.randint(2, 6))]
        out.append(" ".join(sentences))
    return "\n\n".join(out) + "\n"


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None if request.param == "edge" else f"local:{tmp_path / 'qdrant-client'}"
    return Settings(root=tmp_path / "root", qdrant_url=url, workers=0, batch_size=4, shard_size=2, device="cpu",
                    text_model="none")


def _shards(settings: Settings, collection: str = "c") -> list[Path]:
    version = collection_state(settings, collection).current
    return [Path(str(ref.path)) for ref in IndexPaths(settings.root).shard_log(collection, version.physical_name).shards()]


def _expected_chunks(text: str, embedder) -> list[str]:
    return [chunk.text for chunk in chunk_text(text, embedder.count_tokens, embedder.context_length - 2, 16)]


def _document_points(settings: Settings, key: str) -> dict[int, str]:
    """chunk index -> chunk text of the document's points (asserting one point per index)."""
    found: dict[int, str] = {}
    for point in collection_points(settings, "c").values():
        if point.payload.get("doc_key") == key:
            index = point.payload["chunk_index"]
            assert index not in found, f"chunk {index} twice"
            found[index] = point.payload["text"]
    return found


def test_a_long_document_streams_through_row_groups_exactly_once(
    settings: Settings, tmp_path: Path, tiny_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execute, "ROW_GROUP_ROWS", ROW_GROUP)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    long_text = _prose(1, 60)
    (corpus / "long.txt").write_text(long_text, encoding="utf-8")
    (corpus / "short.txt").write_text("A short note about backups.\n", encoding="utf-8")
    expected = _expected_chunks(long_text, tiny_embedder)
    assert len(expected) > 3 * ROW_GROUP  # the document crosses several row groups (and embedding groups)

    report = index_source(IndexRequest(corpus, "c"), settings, embedder=tiny_embedder)
    assert report.counts.embedded == 2 and report.counts.failed == 0
    assert report.counts.text_chunks == len(expected) + 1
    key = f"{corpus.resolve().as_posix()}/long.txt"
    points = _document_points(settings, key)
    assert points == dict(enumerate(expected))  # every chunk once, as the whole-document chunker cuts it
    (shard,) = [path for path in _shards(settings) if key in pq.read_table(path, columns=["doc_key"]).column(0).to_pylist()]
    assert pq.ParquetFile(shard).num_row_groups > 1  # written a row group at a time, still one shard
    assert not [path for path in shard.parent.iterdir() if path.name.startswith(TMP_PREFIX)]
    assert run_cli("verify", "-c", "c", "--root", str(settings.root), *_url(settings)).code == 0

    again = index_source(IndexRequest(corpus, "c"), settings, embedder=tiny_embedder)  # a no-op
    assert again.counts.embedded == 0 and again.counts.shards_written == 0
    assert _document_points(settings, key) == points

    shorter = _prose(2, 20)  # an edit: fewer chunks, other text; every old chunk is replaced or removed
    (corpus / "long.txt").write_text(shorter, encoding="utf-8")
    edited = index_source(IndexRequest(corpus, "c"), settings, embedder=tiny_embedder)
    assert edited.counts.embedded == 1
    assert _document_points(settings, key) == dict(enumerate(_expected_chunks(shorter, tiny_embedder)))
    assert edited.counts.points_deleted == len(expected) - len(_expected_chunks(shorter, tiny_embedder))
    assert run_cli("verify", "-c", "c", "--root", str(settings.root), *_url(settings)).code == 0


def _url(settings: Settings) -> list[str]:
    return ["--qdrant-url", settings.qdrant_url] if settings.qdrant_url else []


def test_streamed_rows_equal_rows_written_whole(
    settings: Settings, tmp_path: Path, tiny_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Guide\n\n## Install\n\n" + _prose(3, 25) + "\n## Use\n\n" + _prose(4, 25), encoding="utf-8")
    (corpus / "b.txt").write_text(_prose(5, 30), encoding="utf-8")
    index_source(IndexRequest(corpus, "whole"), settings, embedder=tiny_embedder)
    monkeypatch.setattr(execute, "ROW_GROUP_ROWS", ROW_GROUP)
    index_source(IndexRequest(corpus, "streamed"), settings, embedder=tiny_embedder)
    columns = ["key", "text", "chunk_index", "char_start", "char_end", "heading_path", "status", "embedding"]

    def rows(collection: str) -> list[dict]:
        found = [row for path in _shards(settings, collection) for row in pq.read_table(path, columns=columns).to_pylist()]
        return sorted(found, key=lambda row: row["key"])

    whole, streamed = rows("whole"), rows("streamed")
    assert len(whole) > 3 * ROW_GROUP
    assert [{k: v for k, v in row.items() if k != "embedding"} for row in streamed] == \
        [{k: v for k, v in row.items() if k != "embedding"} for row in whole]
    for one, other in zip(whole, streamed, strict=True):
        assert one["embedding"] == pytest.approx(other["embedding"], abs=1e-5)


def _tmp_shards(root: Path) -> list[Path]:
    return list(root.glob(f"shards/*/*/{TMP_PREFIX}*"))


def test_a_run_killed_mid_document_leaves_nothing_half_applied(tmp_path: Path, tiny_local_dir: Path) -> None:
    corpus, root = tmp_path / "corpus", tmp_path / "root"
    corpus.mkdir()
    (corpus / "long.txt").write_text(_prose(6, 300), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MMINDEX_BATCH_SIZE": "4", "MMINDEX_TEST_ROW_GROUP_ROWS": str(ROW_GROUP),
           "PYTHONPATH": os.pathsep.join([str(CHILD_HOOKS), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "-c", "c", "--root", str(root),
            "--model", f"local-dir:{tiny_local_dir}", "--workers", "0", "--text-model", "none"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + DEADLINE_S
    while not _tmp_shards(root):  # the first row groups of the document are written, the shard is not published
        assert process.poll() is None, f"the ingest finished before it wrote a row group: {process.stderr.read()!r}"
        assert time.monotonic() < deadline, "no row group was written before the deadline"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    assert not list(root.glob("shards/*/*/[0-9]*.parquet"))  # no shard of the document was published
    settings = Settings(root=root, workers=0, device="cpu")
    assert collection_points(settings, "c") == {}  # and nothing of it was applied

    code, _, stderr = run_cli("index", str(corpus), "-c", "c", "--root", str(root), "--workers", "0")
    assert code == 0, stderr
    assert not _tmp_shards(root)  # the killed writer's file was removed
    text = (corpus / "long.txt").read_text(encoding="utf-8")
    points = collection_points(settings, "c")
    indices = sorted(point.payload["chunk_index"] for point in points.values())
    assert indices == list(range(len(indices))) and len(indices) > 8 * ROW_GROUP
    assert {point.payload["key"] for point in points.values()} == {
        chunk_key(f"{corpus.resolve().as_posix()}/long.txt", index) for index in indices}
    assert all(text[p.payload["char_start"]:p.payload["char_end"]] == p.payload["text"] for p in points.values())
    assert run_cli("verify", "-c", "c", "--root", str(root)).code == 0
    again = run_cli("index", str(corpus), "-c", "c", "--root", str(root), "--workers", "0", "--json")
    assert again.code == 0 and json.loads(again.stdout)["embedded"] == 0
