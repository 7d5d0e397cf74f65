"""A shard written but not applied (the process stopped between the Parquet write and the upsert)
is applied by the next run exactly once: made deterministic by failing the apply step of one
shard through the real ingest path, not by killing a process at a lucky moment."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import BACKENDS, collection_points

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.errors import StoreUnavailableError
from mmindex.pipeline.ingest import execute
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.schemas.config import Settings

FAILING_SEQ = 2


class _Interrupted(StoreUnavailableError):
    """Stands in for the process dying after the shard's write, before its upsert."""


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None if request.param == "edge" else f"local:{tmp_path / 'qdrant-client'}"
    return Settings(root=tmp_path / "root", qdrant_url=url, workers=0, batch_size=2, shard_size=2, device="cpu")


def _shard_rows(settings: Settings) -> dict[int, tuple[Path, list[str]]]:
    """Each shard of the current version by seq: its file and the keys of its rows."""
    version = collection_state(settings, "c").current
    return {ref.seq: (Path(str(ref.path)), pq.read_table(ref.path, columns=["key"]).column(0).to_pylist())
            for ref in IndexPaths(settings.root).shard_log("c", version.physical_name).shards()}


def test_a_written_but_unapplied_shard_is_applied_once_by_the_next_run(
    settings: Settings, photo_corpus: Path, tiny_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = execute.apply_rows
    applied: list[int] = []

    def apply_but_fail_one(store, physical_name, rows, context=None):
        applied.append(len(applied) + 1)
        if len(applied) == FAILING_SEQ:
            raise _Interrupted("stopped after writing shard 2, before applying it")
        return real_apply(store, physical_name, rows, context)

    monkeypatch.setattr(execute, "apply_rows", apply_but_fail_one)
    with pytest.raises(_Interrupted):
        index_source(IndexRequest(photo_corpus, "c"), settings, embedder=tiny_embedder)
    monkeypatch.setattr(execute, "apply_rows", real_apply)

    interrupted = _shard_rows(settings)
    assert sorted(interrupted) == [1, 2]  # shard 2 is on disk, and nothing was written after it
    assert collection_state(settings, "c").current.applied_through == 1
    unapplied_path, unapplied_keys = interrupted[FAILING_SEQ]
    unapplied_stat = unapplied_path.stat()
    points = collection_points(settings, "c")
    assert {point.payload["key"] for point in points.values()} == set(interrupted[1][1])  # shard 2's points are not in

    report = index_source(IndexRequest(photo_corpus, "c"), settings, embedder=tiny_embedder)
    assert report.replayed_shards == 1
    assert not set(unapplied_keys) & set(report.embedded_keys)  # replayed from Parquet, not embedded again
    shards = _shard_rows(settings)
    assert shards[FAILING_SEQ][0].stat().st_mtime_ns == unapplied_stat.st_mtime_ns  # the same file, not rewritten
    all_rows = [key for _, keys in shards.values() for key in keys]
    assert len(all_rows) == len(set(all_rows))  # no item in two shards
    points = collection_points(settings, "c")
    assert sorted(point.payload["key"] for point in points.values()) == sorted(all_rows)
    index_source(IndexRequest(photo_corpus, "clean"), settings, embedder=tiny_embedder)  # the same corpus, never interrupted
    clean = collection_points(settings, "clean")
    assert len(points) == len(clean) and points.keys() == clean.keys()
    assert collection_state(settings, "c").current.applied_through == max(shards)

    again = index_source(IndexRequest(photo_corpus, "c"), settings, embedder=tiny_embedder)
    assert again.replayed_shards == 0 and again.counts.shards_written == 0
    assert _shard_rows(settings) == shards and len(collection_points(settings, "c")) == len(points)
