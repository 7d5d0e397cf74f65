"""The Prefect ingest flow against a real Prefect server: same result as the CLI (first run and
incremental re-runs), the run's artifact, and a transient store failure retried to completion."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import collection_points

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.errors import StoreUnavailableError
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.schemas.config import Settings

pytest.importorskip("prefect")

SHARD_SIZE = 3


def _settings(root: Path, model_dir: Path) -> Settings:
    return Settings(root=root, model=f"local-dir:{model_dir}", pretrained=None, workers=0, batch_size=4,
                    shard_size=SHARD_SIZE)


def _flow_params(corpus: Path, root: Path, model_dir: Path, collection: str = "c", **more: Any) -> dict[str, Any]:
    from mmindex.pipeline.ingest.options import IndexOptions

    given: dict[str, Any] = {"root": str(root), "model": f"local-dir:{model_dir}", "workers": 0, "batch_size": 4,
                             "shard_size": SHARD_SIZE, **more}
    options = IndexOptions(source=str(corpus), collection=collection, **given)
    return {"options": options}


def _points(settings: Settings, collection: str) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
    found = collection_points(settings, collection, with_vectors=True)
    return {point_id: (point.payload, point.vector) for point_id, point in found.items()}


def _shards(root: Path) -> dict[str, int]:
    return {path.name: pq.read_metadata(path).num_rows for path in sorted((root / "shards").glob("*/*/[0-9]*.parquet"))}


def _assert_same_index(cli: Settings, flow: Settings, collection: str) -> None:
    cli_points, flow_points = _points(cli, collection), _points(flow, collection)
    assert cli_points.keys() == flow_points.keys() and cli_points
    for point_id, (payload, vector) in cli_points.items():
        assert flow_points[point_id][0] == payload
        np.testing.assert_allclose(flow_points[point_id][1], vector, rtol=0, atol=1e-6)
    assert _shards(cli.root) == _shards(flow.root)
    cli_state, flow_state = collection_state(cli, collection), collection_state(flow, collection)
    assert cli_state.current.applied_through == flow_state.current.applied_through
    for name in ("items_seen", "new", "changed", "renamed", "deleted", "unchanged", "embedded", "reused", "failed",
                 "points_upserted", "points_deleted", "shards_written"):
        assert getattr(flow_state.last_run, name) == getattr(cli_state.last_run, name), name


def _edit(corpus: Path) -> None:
    """New, deleted, renamed and edited items."""
    (corpus / "rocket.bmp").rename(corpus / "launch.bmp")
    (corpus / "food" / "coffee.webp").unlink()
    (corpus / "notes" / "rockets.txt").write_text("A rocket lands back on the barge.\n", encoding="utf-8")
    (corpus / "notes" / "new.md").write_text("Fresh notes about telescopes and stars.\n", encoding="utf-8")


def test_flow_matches_cli_first_run_and_incremental(
    prefect_api: str, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from mmindex.flows.ingest import ingest_flow

    corpus = tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus)
    cli, flow = _settings(tmp_path / "cli", tiny_local_dir), _settings(tmp_path / "flow", tiny_local_dir)

    index_source(IndexRequest(corpus, "c"), cli)
    first = ingest_flow(**_flow_params(corpus, flow.root, tiny_local_dir))
    assert first["shards"] >= 3 and first["failed"] == 0
    _assert_same_index(cli, flow, "c")

    _edit(corpus)
    cli_again = index_source(IndexRequest(corpus, "c"), cli)
    flow_again = ingest_flow(**_flow_params(corpus, flow.root, tiny_local_dir))
    assert flow_again["plan"] == {**flow_again["plan"], "renamed": 1, "deleted": 1, "changed": 1, "new": 1}
    assert sorted(flow_again["embedded_keys"]) == sorted(cli_again.embedded_keys)
    _assert_same_index(cli, flow, "c")

    noop = ingest_flow(**_flow_params(corpus, flow.root, tiny_local_dir))
    assert noop["embedded"] == 0 and noop["shards"] == 0
    dry = ingest_flow(**_flow_params(corpus, flow.root, tiny_local_dir, dry_run=True))
    assert dry["dry_run"] and dry["plan"] == noop["plan"] and dry["shards"] == 0

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    tables = [entry for entry in artifact if entry.key == "mmindex-ingest-c"]
    assert tables and "| items seen |" in str(tables[0].data) and "| failed |" in str(tables[0].data)


def test_transient_store_failure_is_retried(
    prefect_api: str, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from mmindex.flows import ingest as flows_ingest
    from mmindex.pipeline.store.edge_store import EdgeStore

    monkeypatch.setattr(flows_ingest, "IO_RETRY_DELAYS", [0.5, 1.0, 2.0])
    failures: list[int] = []
    real_upsert = EdgeStore.upsert

    def flaky_upsert(self: EdgeStore, name: str, points: Any) -> None:
        if not failures:
            failures.append(len(points))
            raise StoreUnavailableError("injected: Qdrant unreachable")
        real_upsert(self, name, points)

    monkeypatch.setattr(EdgeStore, "upsert", flaky_upsert)
    shard = flows_ingest.shard_task.with_options(retry_delay_seconds=[0.5, 1.0, 2.0])
    monkeypatch.setattr(flows_ingest, "shard_task", shard)
    settings = _settings(tmp_path / "root", tiny_local_dir)

    # Decode in 2 worker processes: processes forked inside a flow run must exit cleanly too.
    params = _flow_params(photo_corpus, settings.root, tiny_local_dir, workers=2)
    state = flows_ingest.ingest_flow(**params, return_state=True)
    assert state.is_completed(), state
    report = state.result()
    assert failures, "the injected failure never happened"
    expected_points = report["images"] + report["text_chunks"]
    assert len(_points(settings, "c")) == expected_points and expected_points > 0

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    shard_runs = [run for run in runs if run.name.startswith("shard-")]
    assert len(shard_runs) == report["shards"]
    assert sorted(run.run_count for run in shard_runs) == [1] * (len(shard_runs) - 1) + [2]
    assert all(run.state is not None and run.state.is_completed() for run in shard_runs)


def test_flow_and_schedule_take_the_options_of_index() -> None:
    """One options model: `mmindex index`'s flags are its fields, `schedule` takes them all but
    --dry-run, and the flow takes the model itself as one parameter."""
    import inspect
    import typing

    from mmindex.flows.ingest import ingest_flow
    from mmindex.pipeline.cli.ingest import index, schedule
    from mmindex.pipeline.ingest.options import IndexOptions

    fields = set(IndexOptions.model_fields)
    assert set(inspect.signature(index).parameters) - {"as_json", "list_all"} == fields  # how a report prints
    assert fields - {"dry_run"} <= set(inspect.signature(schedule).parameters)
    assert typing.get_type_hints(ingest_flow.fn)["options"] is IndexOptions


def test_a_run_that_fails_before_planning_creates_nothing_in_the_root(
    prefect_api: str, tiny_local_dir: Path, tmp_path: Path
) -> None:
    """The shipped schedule's placeholder source on a machine without it: a one-line SourceError,
    and no lock folder, store or state file left in the root."""
    from mmindex.flows.ingest import ingest_flow
    from mmindex.pipeline.errors import SourceError

    root = tmp_path / "root"
    root.mkdir()
    state = ingest_flow(**_flow_params(tmp_path / "no-such-photos", root, tiny_local_dir), return_state=True)
    assert state.is_failed()
    with pytest.raises(SourceError, match="source directory not found"):
        state.result()
    assert list(root.iterdir()) == []


def test_the_flows_refuse_a_qdrant_url_with_credentials(prefect_api: str, tiny_local_dir: Path, tmp_path: Path) -> None:
    """Prefect stores a run's parameters: a key in a Qdrant URL parameter is refused (redacted) at once."""
    from mmindex.flows.ingest import embed_shard, ingest_flow
    from mmindex.pipeline.errors import ConfigError

    params = _flow_params(tmp_path, tmp_path / "root", tiny_local_dir, qdrant_url="http://admin:s3cret@127.0.0.1:6333")
    state = ingest_flow(**params, return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=r"'http://\*\*\*@127.0.0.1:6333' carries credentials") as refused:
        state.result()
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ConfigError, match="carries credentials"):
        embed_shard.fn(str(tmp_path / "root"), "c", "run", 1, qdrant_url="https://127.0.0.1:6333/?api_key=s3cret")
    assert not (tmp_path / "root").exists()
