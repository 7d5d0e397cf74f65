"""Run plans without Prefect: units processed out of order give the same index as the CLI's
in-order run, a unit is never written twice, and a unit whose shard was written before a crash is
only re-applied."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.ingest.run import (
    IndexRequest,
    RunSession,
    holding_ingest_lock,
    index_source,
    plan_run,
)
from mmindex.pipeline.ingest.units import RunDir
from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings


def _settings(root: Path, model_dir: Path) -> Settings:
    return Settings(root=root, model=f"local-dir:{model_dir}", pretrained=None, workers=0, batch_size=4, shard_size=2)


def _shards(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((root / "shards").glob("*/*/[0-9]*.parquet"))}


def test_units_out_of_order_match_the_in_order_run(photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path) -> None:
    ordered = _settings(tmp_path / "ordered", tiny_local_dir)
    index_source(IndexRequest(photo_corpus, "c"), ordered)

    settings = _settings(tmp_path / "shuffled", tiny_local_dir)
    with holding_ingest_lock(settings, "c"):
        run = plan_run(IndexRequest(photo_corpus, "c"), settings).run
        assert run is not None and run.seqs == [1, 2, 3, 4]
        with RunSession(settings, "c", run.run_id) as session:
            last = session.process(4)
            assert collection_state(settings, "c").current.applied_through == 0  # 1-3 not applied yet
            outcomes = {seq: session.process(seq) for seq in (2, 1, 3)}
            # The marker moves only when the next shard is applied (never past an unapplied one);
            # finalize moves it past the whole run.
            assert collection_state(settings, "c").current.applied_through == 1
            written = _shards(settings.root)
            again = session.process(4)  # already done: nothing redone
            assert again == last and _shards(settings.root) == written

            # A crash between the shard's write and its outcome: the shard is only applied again.
            RunDir(settings.root, "c", run.run_id).outcome_path(2).unlink()
            redone = session.process(2)
            assert redone.reapplied and redone.shard == outcomes[2].shard and _shards(settings.root) == written
            report = session.finalize()

    assert collection_state(settings, "c").current.applied_through == 4
    assert {name: pq.read_table(tmp_path / "ordered" / "shards" / "c" / collection_state(ordered, "c").current.physical_name / name).to_pylist()
            for name in _shards(ordered.root)} == \
           {name: pq.read_table(settings.root / "shards" / "c" / collection_state(settings, "c").current.physical_name / name).to_pylist()
            for name in _shards(settings.root)}
    version = collection_state(settings, "c").current
    store = open_store(settings)
    try:
        assert store.count(version.physical_name) == report.counts.images + report.counts.text_chunks > 0
    finally:
        store.close()


def test_retry_condition_retries_io_only() -> None:
    from prefect.states import Failed

    from mmindex.flows.ingest import retry_on_io
    from mmindex.pipeline.errors import SchemaMismatchError, StoreUnavailableError

    def retried(exc: BaseException) -> bool:
        return retry_on_io(None, None, Failed(data=exc))  # type: ignore[arg-type]

    assert retried(StoreUnavailableError("qdrant down")) and retried(OSError("disk full"))
    assert not retried(SchemaMismatchError("wrong model")) and not retried(ValueError("bug"))


def test_a_run_id_that_is_not_one_is_refused_before_it_becomes_a_path(tmp_path: Path) -> None:
    """A run id reaches a worker as a flow parameter (embed_shard) and becomes a folder name."""
    assert RunDir(tmp_path, "c", "20260101T000000000000Z-0123abcd").run_id
    for hostile in ("../../../etc", "20260101T000000000000Z-0123abcd/../../x", "20260101T000000000000Z-0123abcd\n", ""):
        with pytest.raises(ConfigError, match="invalid run id"):
            RunDir(tmp_path, "c", hostile)
    assert list(tmp_path.iterdir()) == []
