"""Per-shard overhead of the Prefect flow path against ``mmindex index``, side by side in one run (#23).

    python benchmarks/flow_overhead.py                          # 64 images, shards of 8, 2 workers, 2 rounds
    python benchmarks/flow_overhead.py --images 32 --workers 1 --logs /tmp/flow-logs
    python benchmarks/flow_overhead.py --images 256 --shard-size 32 --workers 4 --model ViT-B-32

On the same generated JPEGs and the same model (the tiny benchmark model, or an open_clip
architecture with random weights), each into a fresh index root, every run a fresh process:

- ``cli``: ``mmindex index CORPUS --shard-size S`` (one process, shards in order);
- ``flow, in process``: the ``mmindex-ingest`` flow with no ``embed_deployment`` (each shard a
  task of the flow's own process, the model loaded once);
- ``flow on workers, Prefect defaults``: the flow with ``embed_deployment`` set, each shard a run
  of an ``embed-shard`` deployment made with ``embed_shard.deploy`` (no job variables) on a process
  work pool served by N ``prefect worker start --limit 1`` with Prefect's settings (a worker asks
  for runs every 10 s; each run starts a workspace supervisor process, which starts the engine);
- ``flow on workers, deploy/ settings``: the same with ``deploy/prefect.yaml`` deployed as the
  README says (``prefect deploy --all``; its ``embed-shard`` starts the engine directly, its pull
  step only finds the package) on the ``gpu`` pool, workers with the compose file's
  ``PREFECT_WORKER_QUERY_SECONDS=2``.

Every shard run on a worker is a new process that imports Prefect, mmindex, torch and open_clip and
loads the model: that part is not cut here (see README, "Deploying with Prefect").

A Prefect server is started on 127.0.0.1 (its own PREFECT_HOME under the temp folder, analytics
off) and stopped at the end. Each round runs every path once (load from other processes on the
machine hits all of them alike); the table shows each path's median wall seconds and the overhead
per shard over the CLI, ``(wall - cli wall) / shards``: what the flow path costs beyond the work
itself. Then, for the last round, each shard run's seconds in each Prefect state (read back from the
API): where a shard run's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _corpus import make_jpegs, random_checkpoint
from _tiny import tiny_local_dir
from rich.console import Console
from rich.table import Table

console = Console()
START_DEADLINE_S = 180.0
DEFAULTS_POOL = "bench-cpu"
DEFAULTS_DEPLOYMENT = "embed-shard/embed-shard-bench"
REPO = Path(__file__).resolve().parents[1]
# The worker settings deploy/compose.yaml and the image give workers (tests/test_deploy_files.py checks them there).
SHIPPED_WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "2"}

_FLOW_CHILD = """
import sys, time
from mmindex.flows.ingest import ingest_flow
from mmindex.pipeline.ingest.options import IndexOptions
source, root, model, pretrained, shard_size, deployment = sys.argv[1:7]
options = IndexOptions(source=source, collection="bench", root=root, model=model, pretrained=pretrained or None,
                       text_model="none", shard_size=int(shard_size))
started = time.perf_counter()
report = ingest_flow(options, embed_deployment=deployment or None)  # the flow's default polling
print(time.perf_counter() - started, report["embedded"])
"""

_DEFAULTS_DEPLOY_CHILD = f"""
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import EntrypointType
from mmindex.flows.ingest import embed_shard
with get_client(sync_client=True) as client:
    client.create_work_pool(WorkPoolCreate(name="{DEFAULTS_POOL}", type="process"), overwrite=True)
embed_shard.deploy(name="{DEFAULTS_DEPLOYMENT.split("/")[1]}", work_pool_name="{DEFAULTS_POOL}",
                   entrypoint_type=EntrypointType.MODULE_PATH, build=False, push=False, ignore_warnings=True,
                   print_next_steps=False)
"""

_POOLS_CHILD = """
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
with get_client(sync_client=True) as client:
    for pool in ("gpu", "default"):
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
"""


@dataclass(frozen=True)
class WorkerSetup:
    """How the shard runs' workers and deployment are set up for one row of the table."""

    label: str
    pool: str
    deployment: str
    worker_env: dict[str, str]


# Prefect's own defaults: a deployment made with ``embed_shard.deploy`` (no job variables, so each
# run starts a workspace supervisor process that then starts the engine), workers polling every 10 s.
DEFAULTS = WorkerSetup("Prefect defaults", DEFAULTS_POOL, DEFAULTS_DEPLOYMENT, {})
# What deploy/ ships: deploy/prefect.yaml's embed-shard (its job variables and pull step) on the gpu
# pool, workers with the compose file's worker settings.
SHIPPED = WorkerSetup("deploy/ settings", "gpu", "embed-shard/embed-shard", dict(SHIPPED_WORKER_ENV))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """A Prefect server on 127.0.0.1; yields the environment its clients and workers need."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
           "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "PREFECT_API_REQUEST_TIMEOUT": "120",
           "PREFECT_SERVER_DATABASE_TIMEOUT": "60", "PREFECT_CLIENT_MAX_RETRIES": "10",  # SQLite on a busy host
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_DEADLINE_S
            while not _healthy(env["PREFECT_API_URL"]):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prefect server not healthy: see {home / 'server.log'}")
                time.sleep(0.5)  # polling /health
            yield env
        finally:
            _stop(server)


def deploy(env: dict[str, str], setup: WorkerSetup, work: Path) -> None:
    """Create the row's deployment: ``embed_shard.deploy`` for Prefect's defaults, else
    ``prefect deploy --all --prefect-file deploy/prefect.yaml`` as the README runs it."""
    if setup is DEFAULTS:
        subprocess.run([sys.executable, "-c", _DEFAULTS_DEPLOY_CHILD], env=env, check=True, capture_output=True)
        return
    subprocess.run([sys.executable, "-c", _POOLS_CHILD], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                    str(REPO / "deploy" / "prefect.yaml")], env=env, check=True, capture_output=True, cwd=work)


@contextlib.contextmanager
def process_workers(env: dict[str, str], setup: WorkerSetup, count: int, logs: Path) -> Iterator[None]:
    """``count`` process workers (``--limit 1`` each) on the row's pool; their logs (INFO) in ``logs``."""
    workers = []
    try:
        for n in range(count):
            log = (logs / f"worker-{setup.pool}-{n}.log").open("ab")
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", setup.pool, "--type", "process",
                 "--name", f"bench-{setup.pool}-{n}", "--limit", "1"],
                env={**env, "PREFECT_LOGGING_LEVEL": "INFO", **setup.worker_env}, stdout=log,
                stderr=subprocess.STDOUT, cwd=logs))
        yield
    finally:
        for worker in workers:
            _stop(worker)


def cli_seconds(env: dict[str, str], corpus: Path, root: Path, model: list[str], shard_size: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "-c", "bench", "--root",
                    str(root), "--text-model", "none", "--shard-size", str(shard_size), *model],
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def flow_seconds(env: dict[str, str], corpus: Path, root: Path, model: list[str], shard_size: int,
                 deployment: str) -> float:
    """Wall seconds of a fresh process running the ingest flow (imports and flow set-up included)."""
    name, pretrained = model[1], model[3] if len(model) > 3 else ""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _FLOW_CHILD, str(corpus), str(root), name, pretrained,
                           str(shard_size), deployment], env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"flow run failed: {done.stderr[-3000:]}")
    return time.perf_counter() - started


_TIMELINE_CHILD = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
with get_client(sync_client=True) as client:
    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[sys.argv[1]])))
    rows = []
    for run in runs:
        states = sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
        rows.append({"seq": run.parameters["seq"], "root": run.parameters["root"], "created": run.created.timestamp(),
                     "states": [(s.name, s.timestamp.timestamp()) for s in states]})
print(json.dumps(rows))
"""


def shard_timeline(env: dict[str, str], deployment: str) -> list[dict[str, Any]]:
    """Each shard run's states with their times, read back from the Prefect API, in the order the
    runs were taken by a worker."""
    done = subprocess.run([sys.executable, "-c", _TIMELINE_CHILD, deployment.split("/")[1]], env=env, check=True,
                          capture_output=True, text=True)
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return sorted(rows, key=lambda row: dict(row["states"]).get("Pending", row["states"][-1][1]))


def timeline_table(label: str, rows: list[dict[str, Any]]) -> Table:
    """Seconds each shard run spent in each state, in the order workers took them: queued (created
    to taken by a worker: Pending), taken to running (process start, imports, flow set-up), running
    to final (the shard: model import and load, decode, embed, write), and the gap from the previous
    run's final state to this one being taken (with one worker: the previous process exiting and the
    worker's next poll)."""
    table = Table(title=f"shard runs, {label}: seconds in each state")
    for column in ("seq", "created→pending", "pending→running", "running→final", "final", "prev final→pending"):
        table.add_column(column, justify="right")
    previous_final: float | None = None
    for row in rows:
        times = dict(row["states"])
        pending = times.get("Pending")
        running = times.get("Running")
        final_name, final_at = row["states"][-1]
        gap = f"{(pending or final_at) - previous_final:.1f}" if previous_final is not None else "-"
        table.add_row(str(row["seq"]), f"{(pending or final_at) - row['created']:.1f}",
                      f"{running - pending:.1f}" if running and pending else "-",
                      f"{final_at - running:.1f}" if running else "-", final_name, gap)
        previous_final = final_at
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="tiny", help="tiny, or an open_clip architecture with random weights")
    parser.add_argument("--logs", type=Path, help="keep the workers' logs (INFO) in this folder")
    parser.add_argument("--rounds", type=int, default=2, help="every path once a round; the table shows medians")
    args = parser.parse_args()
    timelines: dict[str, list[dict[str, Any]]] = {}
    walls: dict[str, list[float]] = {}
    shards = -(-args.images // args.shard_size)
    with tempfile.TemporaryDirectory(prefix="mmindex-flow-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "images"
        make_jpegs(corpus, args.images)
        if args.model == "tiny":
            model = ["--model", f"local-dir:{tiny_local_dir(work / 'tiny')}"]
        else:
            (work / "ckpt").mkdir()
            model = ["--model", args.model, "--pretrained", str(random_checkpoint(work / "ckpt", args.model))]
        (work / "prefect").mkdir()
        logs = args.logs or work
        logs.mkdir(parents=True, exist_ok=True)
        with prefect_server(work / "prefect") as env:
            for setup in (DEFAULTS, SHIPPED):
                deploy(env, setup, work)
            for round_ in range(1, args.rounds + 1):  # every path once a round: load from others hits them alike
                for label, seconds in one_round(env, corpus, work / f"round-{round_}", model, args, logs):
                    walls.setdefault(label, []).append(seconds)
                    console.print(f"round {round_}, {label}: {seconds:.1f} s")
            for setup in (DEFAULTS, SHIPPED):
                timelines[setup.label] = [row for row in shard_timeline(env, setup.deployment)
                                          if row["root"] == str(work / f"round-{args.rounds}" / setup.pool)]
    table = Table(title=f"{args.images} images in {shards} shards of {args.shard_size}, model {args.model}, "
                        f"{args.workers} worker(s); median of {args.rounds} round(s) (fresh process per run)")
    for column in ("path", "wall, s", "vs cli", "overhead per shard, s", "each round, s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    cli = statistics.median(walls["cli"])
    for name, seconds in walls.items():
        wall = statistics.median(seconds)
        table.add_row(name, f"{wall:.1f}", f"{wall / cli:.2f}x", f"{(wall - cli) / shards:+.2f}",
                      " ".join(f"{value:.1f}" for value in seconds))
    console.print(table)
    for label, rows in timelines.items():
        console.print(timeline_table(label, rows))


def one_round(env: dict[str, str], corpus: Path, work: Path, model: list[str], args: argparse.Namespace,
              logs: Path) -> Iterator[tuple[str, float]]:
    """Each path once, each into its own fresh root under ``work``."""
    yield "cli", cli_seconds(env, corpus, work / "cli", model, args.shard_size)
    yield "flow, in process", flow_seconds(env, corpus, work / "flow", model, args.shard_size, "")
    for setup in (DEFAULTS, SHIPPED):
        with process_workers(env, setup, args.workers, logs):
            seconds = flow_seconds(env, corpus, work / setup.pool, model, args.shard_size, setup.deployment)
        yield f"flow on workers, {setup.label}", seconds

if __name__ == "__main__":
    main()
