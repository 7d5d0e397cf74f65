"""Prefect machinery end to end, in separate processes against a real Prefect server:
``mmindex schedule`` serves the ingest flow and a scheduled run completes; two process workers of
one work pool split the shards of one run, each shard done exactly once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.index.open_store import open_store
from mmindex.pipeline.io.catalog import summarize
from mmindex.pipeline.apply import shard_log
from mmindex.pipeline.query import collection_state
from mmindex.schemas.config import Settings

pytest.importorskip("prefect")

DEADLINE_S = 240.0
T = TypeVar("T")


def _poll(what: str, check: Callable[[], T | None], deadline_s: float = DEADLINE_S, every_s: float = 0.5) -> T:
    """Poll ``check`` until it returns something (not None/False) or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)  # polling interval; the loop waits on the condition, not the clock
    raise AssertionError(f"{what}: not within {deadline_s}s")


def _child_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "MMINDEX_PRECISION": "fp32", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO"}


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start background processes (logs in tmp_path); all of them are stopped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(args, env=_child_env(), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        processes.append(process)
        return process

    yield start
    for process in processes:
        _stop(process)


def _flow_runs(deployment_name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name])))


def test_served_schedule_produces_a_completed_run(
    prefect_api: str, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path, started: Callable[..., Any]
) -> None:
    root = tmp_path / "root"
    runner = started([sys.executable, "-m", "mmindex.pipeline.cli", "schedule", str(photo_corpus), "-c", "sched",
                      "--root", str(root), "--model", f"local-dir:{tiny_local_dir}", "--workers", "0",
                      "--interval", "5", "--name", "sched-test"], "schedule")

    def completed() -> list[Any] | None:
        if runner.poll() is not None:
            raise AssertionError(f"mmindex schedule exited: {(tmp_path / 'schedule.log').read_text()[-3000:]}")
        runs = _flow_runs("sched-test")
        failed = [run for run in runs if run.state is not None and run.state.is_final() and not run.state.is_completed()]
        assert not failed, f"scheduled run ended {failed[0].state}: {(tmp_path / 'schedule.log').read_text()[-3000:]}"
        return [run for run in runs if run.state is not None and run.state.is_completed()]

    done = _poll("a completed scheduled run", completed)
    assert done[0].parameters["collection"] == "sched" and done[0].auto_scheduled
    settings = Settings(root=root)
    state = collection_state(settings, "sched")
    assert state.last_run is not None and state.last_run.failed == 0 and state.last_run.items_seen == 8


def test_two_workers_split_the_shards_exactly_once(
    prefect_api: str, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path, started: Callable[..., Any]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.deployments.runner import EntrypointType

    from mmindex.flows.ingest import embed_shard, ingest_flow
    from mmindex.pipeline.runplan import run_outcomes

    pool = "cpu-test"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    embed_shard.deploy(name="embed-shard-test", work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH,
                       build=False, push=False, ignore_warnings=True, print_next_steps=False)
    for name in ("w1", "w2"):
        started([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                 "--name", name, "--limit", "1"], name)

    def online() -> bool:
        with get_client(sync_client=True) as client:
            workers = client.read_workers_for_work_pool(pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])))
        return {worker.name for worker in workers} >= {"w1", "w2"}

    _poll("both workers online", online)
    root = tmp_path / "root"
    report = ingest_flow(
        source=str(photo_corpus), collection="scale", root=str(root), model=f"local-dir:{tiny_local_dir}",
        workers=0, batch_size=4, shard_size=2, embed_deployment="embed-shard/embed-shard-test", poll_seconds=1.0,
    )

    settings = Settings(root=root)
    version = collection_state(settings, "scale").current
    log = shard_log(root, "scale", version)
    shards = log.shards()
    assert len(shards) == 4 == report["shards"]  # 8 items, 2 per shard
    assert [ref.seq for ref in shards] == [1, 2, 3, 4]
    runs_dir = root / "runs" / "scale"
    (run_dir,) = list(runs_dir.iterdir())
    outcomes = run_outcomes(root, "scale", run_dir.name)
    assert [outcome.seq for outcome in outcomes] == [1, 2, 3, 4]
    assert not any(outcome.reapplied for outcome in outcomes)
    assert sorted(outcome.shard for outcome in outcomes) == sorted(ref.path.name for ref in shards)

    runs = _flow_runs("embed-shard-test")
    assert len(runs) == 4 and all(run.state is not None and run.state.is_completed() for run in runs)
    assert sorted(run.parameters["seq"] for run in runs) == [1, 2, 3, 4]  # one child run per shard, none repeated
    by_worker = {name: set(re.findall(rf"Worker '{name}' submitting flow run '([0-9a-f-]+)'", (tmp_path / f"{name}.log").read_text()))
                 for name in ("w1", "w2")}
    assert by_worker["w1"] and by_worker["w2"], by_worker  # both workers took shards
    assert not by_worker["w1"] & by_worker["w2"]
    assert by_worker["w1"] | by_worker["w2"] == {str(run.id) for run in runs}

    summary = summarize(log)
    assert summary.ok == sum(pq.read_metadata(ref.path).num_rows for ref in shards) - summary.failed
    store = open_store(settings)
    try:
        assert store.count(version.physical_name) == summary.ok == report["images"] + report["text_chunks"]
    finally:
        store.close()
