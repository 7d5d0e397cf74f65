"""Prefect machinery end to end, in separate processes against a real Prefect server:
``mmindex schedule`` serves the ingest flow and a scheduled run completes; two process workers of
one work pool (``embed-shard`` with deploy/prefect.yaml's job variables: each run's engine started
directly) split the shards of one run, each shard done exactly once; a shard whose process is
killed while it is provably mid-shard (held there by ``child_hooks/sitecustomize.py``) is redone."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.io.catalog import summarize
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings

pytest.importorskip("prefect")

DEADLINE_S = 240.0
CHILD_HOOKS = Path(__file__).parent / "child_hooks"
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
    assert done[0].parameters["options"]["collection"] == "sched" and done[0].auto_scheduled
    settings = Settings(root=root)
    state = collection_state(settings, "sched")
    assert state.last_run is not None and state.last_run.failed == 0 and state.last_run.items_seen == 8


@dataclass(frozen=True)
class WorkerPool:
    """A process work pool with the embed-shard deployment and two workers (logs in ``logs``);
    creating ``hold / "armed"`` makes the next shard process that embeds stop mid-shard."""

    deployment: str
    logs: Path
    hold: Path
    workers: dict[str, subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def worker_pool(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus
    from prefect.deployments.runner import EntrypointType

    from mmindex.flows.ingest import embed_shard

    pool, logs, hold = "cpu-test", tmp_path_factory.mktemp("workers"), tmp_path_factory.mktemp("hold")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
    # Job variables as deploy/prefect.yaml sets them: the worker starts each run's engine directly.
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "prefect.yaml").read_text())
    (spec,) = [d for d in shipped["deployments"] if d["name"] == "embed-shard"]
    embed_shard.deploy(name="embed-shard-test", work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH,
                       job_variables=spec["work_pool"]["job_variables"], build=False, push=False,
                       ignore_warnings=True, print_next_steps=False)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    for name in ("w1", "w2"):
        log = (logs / f"{name}.log").open("wb")
        workers[name] = (subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", name,
             "--limit", "1"], env={**_child_env(), "PYTHONPATH": str(CHILD_HOOKS), "MMINDEX_TEST_HOLD_DIR": str(hold)},
            stdout=log, stderr=subprocess.STDOUT, cwd=logs))

    def online() -> bool:
        with get_client(sync_client=True) as client:
            found = client.read_workers_for_work_pool(pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"])))
        return {worker.name for worker in found} >= {"w1", "w2"}

    try:
        _poll("both workers online", online)
        yield WorkerPool("embed-shard/embed-shard-test", logs, hold, workers)
    finally:
        (hold / "released").touch()  # a held process that is still alive goes on
        for worker in workers.values():
            _stop(worker)


def _index_on_pool(pool: WorkerPool, corpus: Path, root: Path, model_dir: Path, collection: str) -> dict[str, Any]:
    from mmindex.flows.ingest import ingest_flow
    from mmindex.pipeline.ingest.options import IndexOptions

    options = IndexOptions(source=str(corpus), collection=collection, root=str(root), model=f"local-dir:{model_dir}",
                           workers=0, batch_size=4, shard_size=2)
    return ingest_flow(options, embed_deployment=pool.deployment, poll_seconds=1.0)


def _child_runs(collection: str) -> list[Any]:
    return [run for run in _flow_runs("embed-shard-test") if run.parameters["collection"] == collection]


def _assert_exact(root: Path, collection: str, report: dict[str, Any]) -> list[Any]:
    """Four shards (8 items, 2 per shard), each written once, one outcome each, exact point count."""
    from mmindex.pipeline.ingest.units import run_outcomes

    settings = Settings(root=root)
    version = collection_state(settings, collection).current
    log = IndexPaths(root).shard_log(collection, version.physical_name)
    shards = log.shards()
    assert [ref.seq for ref in shards] == [1, 2, 3, 4]
    (run_dir,) = list((root / "runs" / collection).iterdir())
    outcomes = run_outcomes(root, collection, run_dir.name)
    assert [outcome.seq for outcome in outcomes] == [1, 2, 3, 4]
    assert sorted(outcome.shard for outcome in outcomes) == sorted(ref.path.name for ref in shards)
    summary = summarize(log)
    assert summary.ok == sum(pq.read_metadata(ref.path).num_rows for ref in shards) - summary.failed
    store = open_store(settings)
    try:
        assert store.count(version.physical_name) == summary.ok == report["images"] + report["text_chunks"] > 0
    finally:
        store.close()
    return outcomes


def _submitted(worker_log: Path) -> set[str]:
    """Flow runs a worker started (tried to submit, and was not told to abort)."""
    text = worker_log.read_text()
    tried = set(re.findall(r"submitting flow run '([0-9a-f-]+)'", text))
    return tried - set(re.findall(r"Aborted submission of flow run '([0-9a-f-]+)'", text))


def test_two_workers_split_the_shards_exactly_once(
    worker_pool: WorkerPool, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    report = _index_on_pool(worker_pool, photo_corpus, root, tiny_local_dir, "scale")
    assert report["shards"] == 4
    outcomes = _assert_exact(root, "scale", report)
    assert not any(outcome.reapplied for outcome in outcomes)

    runs = _child_runs("scale")
    assert len(runs) == 4 and all(run.state is not None and run.state.is_completed() for run in runs)
    assert sorted(run.parameters["seq"] for run in runs) == [1, 2, 3, 4]  # one child run per shard, none repeated
    # Both workers may try to submit a run; the server aborts the submission of the one that loses it.
    ids = {str(run.id) for run in runs}
    by_worker = {name: _submitted(worker_pool.logs / f"{name}.log") & ids for name in ("w1", "w2")}
    assert by_worker["w1"] and by_worker["w2"], by_worker  # both workers ran shards
    assert not by_worker["w1"] & by_worker["w2"]
    assert by_worker["w1"] | by_worker["w2"] == ids


@dataclass
class HeldRun:
    """An ingest running in a thread while one of its shard processes is held mid-shard."""

    thread: threading.Thread
    result: dict[str, Any]
    errors: list[BaseException]
    held_pid: int
    victim: Any

    def finish(self) -> dict[str, Any]:
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "the run did not finish after a shard's process was killed"
        if self.errors:
            raise self.errors[0]
        return self.result


@contextlib.contextmanager
def _held_ingest(pool: WorkerPool, corpus: Path, root: Path, model_dir: Path, collection: str, **params: Any) -> Iterator[HeldRun]:
    """Start an ingest on the pool and yield once its first embedding shard process is held mid-shard."""
    from mmindex.flows.ingest import ingest_flow
    from mmindex.pipeline.ingest.options import IndexOptions

    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            options = IndexOptions(source=str(corpus), collection=collection, root=str(root),
                                   model=f"local-dir:{model_dir}", workers=0, batch_size=4, shard_size=2)
            result.update(ingest_flow(options, embed_deployment=pool.deployment, poll_seconds=1.0, **params))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    (pool.hold / "armed").touch()  # the first shard process to embed stops there
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        def held() -> Path | None:
            if not thread.is_alive():
                raise AssertionError(f"the run ended before a shard was held: {errors or result}")
            found = [path for path in pool.hold.glob("held-*") if path.read_text(encoding="utf-8")]
            return found[0] if found else None

        held_file = _poll("a shard process held mid-shard", held, every_s=0.1)
        held_pid, victim_id = int(held_file.name.removeprefix("held-")), held_file.read_text(encoding="utf-8")
        held_file.rename(held_file.with_name(f"was-{held_file.name}"))  # the next test's hold starts afresh

        def victim_run() -> Any:
            runs = [r for r in _child_runs(collection) if str(r.id) == victim_id and r.infrastructure_pid
                    and r.labels.get("prefect.worker.name")]
            return runs[0] if runs else None

        victim = _poll("the held shard's flow run", victim_run, every_s=0.1)
        assert victim.state is not None and victim.state.is_running()  # it is mid-shard, not finishing
        yield HeldRun(thread, result, errors, held_pid, victim)
    finally:
        (pool.hold / "armed").unlink(missing_ok=True)


def _assert_redone_once(root: Path, collection: str, report: dict[str, Any], victim: Any, ended: str) -> None:
    outcomes = _assert_exact(root, collection, report)
    runs = _child_runs(collection)
    assert all(r.state is not None and r.state.is_final() for r in runs)  # no orphan run left behind
    given_up = [r for r in runs if r.state is not None and not r.state.is_completed()]
    assert [(r.id, r.state.type.value) for r in given_up] == [(victim.id, ended)]
    seq = victim.parameters["seq"]
    redone = [r for r in runs if r.parameters["seq"] == seq and r.state is not None and r.state.is_completed()]
    assert len(redone) == 1  # submitted again, and done once
    assert sorted(r.parameters["seq"] for r in runs if r.state is not None and r.state.is_completed()) == [1, 2, 3, 4]
    assert not any(outcome.reapplied for outcome in outcomes)  # killed before its shard was written: embedded again


def test_a_shard_whose_worker_process_dies_is_redone_elsewhere(
    worker_pool: WorkerPool, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    with _held_ingest(worker_pool, photo_corpus, root, tiny_local_dir, "crash") as held:
        infrastructure_pid = int(str(held.victim.infrastructure_pid).rsplit(":", 1)[-1])
        for pid in dict.fromkeys([infrastructure_pid, held.held_pid]):  # the worker's process, and the held one if another
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        report = held.finish()
    _assert_redone_once(root, "crash", report, held.victim, "CRASHED")


def test_a_failing_shard_s_error_reaches_the_ingest_and_its_artifact(
    worker_pool: WorkerPool, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path
) -> None:
    """A shard run that fails on its worker (it asks for CUDA on a CPU worker) fails the ingest with
    that run's own error, in the raised error and in the artifact, not only "did not complete"."""
    import shutil

    import numpy as np
    from PIL import Image
    from prefect.client.orchestration import get_client

    from mmindex.flows.ingest import ingest_flow
    from mmindex.pipeline.errors import ShardDispatchError
    from mmindex.pipeline.ingest.options import IndexOptions

    corpus, root = tmp_path / "corpus", tmp_path / "root"
    shutil.copytree(photo_corpus, corpus)
    common = IndexOptions(source=str(corpus), collection="failing", root=str(root), workers=0, batch_size=4,
                          shard_size=64, model=f"local-dir:{tiny_local_dir}")
    ingest_flow(options=common)  # in this process: the next run's plan needs no model
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(corpus / "new.png")
    with pytest.raises(ShardDispatchError, match="no CUDA GPU is available"):
        ingest_flow(options=common.model_copy(update={"device": "cuda"}), embed_deployment=worker_pool.deployment,
                    shard_attempts=1, poll_seconds=1.0)
    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_latest_artifacts() if a.key == "mmindex-ingest-failing"]
    assert artifacts and "no CUDA GPU is available" in str(artifacts[0].data)


def test_a_dead_worker_and_its_shard_process_with_default_settings(
    worker_pool: WorkerPool, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL of a worker and its shard process: nobody reports the run crashed; the dispatcher sees
    its heartbeat stamps stop, cancels that run and submits the shard again (default settings).
    Kills a worker of the module's pool: keep it the last test of the pool."""
    root = tmp_path / "root"
    with _held_ingest(worker_pool, photo_corpus, root, tiny_local_dir, "dead") as held:
        name = held.victim.labels["prefect.worker.name"]
        worker_pool.workers[name].kill()
        worker_pool.workers[name].wait(timeout=30)
        infrastructure_pid = int(str(held.victim.infrastructure_pid).rsplit(":", 1)[-1])
        for pid in dict.fromkeys([infrastructure_pid, held.held_pid]):  # the worker's children
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        report = held.finish()
    _assert_redone_once(root, "dead", report, held.victim, "CANCELLED")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_latest_artifacts() if a.key == "mmindex-ingest-dead"]
    survivor = ({"w1", "w2"} - {name}).pop()
    assert artifacts and f"| {survivor} (" in str(artifacts[0].data)  # the shard table names the Prefect worker


def test_prefect_yaml_deployed_from_a_folder_that_is_gone_runs_on_workers(
    prefect_api: str, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path, started: Callable[..., Any]
) -> None:
    """The guide's deploy: `prefect deploy --all` from a folder that then disappears; a limited worker
    on each pool runs the ingest and its shards; device settings stay the workers'; the schedule is paused."""
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment

    repo = Path(__file__).resolve().parents[1]
    checkout = tmp_path / "laptop-checkout"
    checkout.mkdir()
    shutil.copy(repo / "deploy" / "prefect.yaml", checkout / "prefect.yaml")
    with get_client(sync_client=True) as client:
        for pool in ("gpu", "default"):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(checkout / "prefect.yaml")],
        cwd=checkout, env=_child_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shutil.rmtree(checkout)

    with get_client(sync_client=True) as client:
        embed = client.read_deployment_by_name("embed-shard/embed-shard")
        ingest = client.read_deployment_by_name("mmindex-ingest/ingest-photos-hourly")
    assert embed.work_pool_name == "gpu" and embed.entrypoint == "mmindex.flows.ingest.embed_shard"
    assert "MMINDEX_DEVICE" not in (embed.job_variables or {}).get("env", {})  # the worker's environment decides
    assert embed.pull_steps == [{"mmindex.flows.steps.check_installed": {}}]
    # A shard run's worker starts the engine itself (no supervisor process importing it all first).
    assert (embed.job_variables or {}).get("command") == "python -m prefect.engine"
    assert ingest.work_pool_name == "default" and ingest.parameters["embed_deployment"] == "embed-shard/embed-shard"
    assert ingest.parameters["options"]["collection"] == "photos"  # the options of `mmindex index`, nested
    assert [(s.schedule.cron, s.active) for s in ingest.schedules] == [("0 * * * *", False)]  # shipped paused

    workers = tmp_path / "workers"
    workers.mkdir()
    for pool in ("gpu", "default"):
        started([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                 "--name", f"{pool}-worker", "--limit", "1"], f"worker-{pool}")
    root = tmp_path / "root"
    parent = run_deployment(
        "mmindex-ingest/ingest-photos-hourly", timeout=DEADLINE_S, poll_interval=1,
        parameters={"options": {"source": str(photo_corpus), "collection": "guide", "root": str(root),
                                "model": f"local-dir:{tiny_local_dir}", "workers": 0, "batch_size": 4, "shard_size": 4},
                    "poll_seconds": 1.0},
    )
    logs = "".join((tmp_path / f"worker-{pool}.log").read_text()[-2000:] for pool in ("gpu", "default"))
    assert parent.state is not None and parent.state.is_completed(), f"{parent.state}\n{logs}"  # type: ignore[union-attr]
    state = collection_state(Settings(root=root), "guide")
    assert state.last_run is not None and state.last_run.items_seen == 8 and state.last_run.failed == 0
    shards = [run for run in _flow_runs("embed-shard") if run.parameters["collection"] == "guide"]
    states = [(run.name, run.state.type.value if run.state else None, run.state.message if run.state else None)
              for run in shards]
    assert len(shards) == 2 and all(run.state is not None and run.state.is_completed() for run in shards), \
        f"{states}\n{logs}"
    assert {run.labels.get("prefect.worker.name") for run in shards} == {"gpu-worker"}
