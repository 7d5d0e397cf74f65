"""Per-shard overhead of the Prefect flow path against ``mmindex index``, side by side in one run (#23).

    python benchmarks/flow_overhead.py                          # 64 images, shards of 8, 2 workers
    python benchmarks/flow_overhead.py --images 256 --shard-size 32 --workers 4 --model ViT-B-32

On the same generated JPEGs and the same model (the tiny benchmark model, or an open_clip
architecture with random weights), each into a fresh index root, every run a fresh process:

- ``cli``: ``mmindex index CORPUS --shard-size S`` (one process, shards in order);
- ``flow, in process``: the ``mmindex-ingest`` flow with no ``embed_deployment`` (each shard a
  task of the flow's own process, the model loaded once);
- ``flow, N workers``: the flow with ``embed_deployment`` set, each shard a run of the
  ``embed-shard`` deployment on a process work pool served by N ``prefect worker start --limit 1``
  (each shard run is a new process that imports mmindex and loads the model).

A Prefect server is started on 127.0.0.1 (its own PREFECT_HOME under the temp folder, analytics
off) and stopped at the end. The table shows each run's wall seconds and the overhead per shard
over the CLI, ``(wall - cli wall) / shards``: what the flow path costs beyond the work itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from _corpus import make_jpegs, random_checkpoint
from _tiny import tiny_local_dir
from rich.console import Console
from rich.table import Table

console = Console()
START_DEADLINE_S = 180.0
POOL = "bench-cpu"
DEPLOYMENT = "embed-shard/embed-shard-bench"

_FLOW_CHILD = """
import sys, time
from mmindex.flows.ingest import ingest_flow
from mmindex.pipeline.ingest.options import IndexOptions
source, root, model, pretrained, shard_size, deployment = sys.argv[1:7]
options = IndexOptions(source=source, collection="bench", root=root, model=model, pretrained=pretrained or None,
                       text_model="none", shard_size=int(shard_size))
started = time.perf_counter()
report = ingest_flow(options, embed_deployment=deployment or None, poll_seconds=0.5)
print(time.perf_counter() - started, report["embedded"])
"""

_DEPLOY_CHILD = f"""
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import EntrypointType
from mmindex.flows.ingest import embed_shard
with get_client(sync_client=True) as client:
    client.create_work_pool(WorkPoolCreate(name="{POOL}", type="process"), overwrite=True)
embed_shard.deploy(name="{DEPLOYMENT.split("/")[1]}", work_pool_name="{POOL}",
                   entrypoint_type=EntrypointType.MODULE_PATH, build=False, push=False, ignore_warnings=True,
                   print_next_steps=False)
"""


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
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
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


@contextlib.contextmanager
def process_workers(env: dict[str, str], count: int, logs: Path) -> Iterator[None]:
    """``count`` process workers (``--limit 1`` each) on the benchmark's pool, with the deployment."""
    subprocess.run([sys.executable, "-c", _DEPLOY_CHILD], env=env, check=True, capture_output=True)
    workers = []
    try:
        for n in range(count):
            log = (logs / f"worker-{n}.log").open("wb")
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process",
                 "--name", f"bench-{n}", "--limit", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=logs))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="tiny", help="tiny, or an open_clip architecture with random weights")
    args = parser.parse_args()
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
        with prefect_server(work / "prefect") as env:
            walls = {"cli": cli_seconds(env, corpus, work / "cli", model, args.shard_size)}
            console.print(f"cli: {walls['cli']:.1f} s")
            walls["flow, in process"] = flow_seconds(env, corpus, work / "flow", model, args.shard_size, "")
            console.print(f"flow, in process: {walls['flow, in process']:.1f} s")
            with process_workers(env, args.workers, work):
                walls[f"flow, {args.workers} workers"] = flow_seconds(env, corpus, work / "pool", model,
                                                                      args.shard_size, DEPLOYMENT)
    table = Table(title=f"{args.images} images in {shards} shards of {args.shard_size}, model {args.model} "
                        "(fresh process per run)")
    for column in ("path", "wall, s", "vs cli", "overhead per shard, s"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, wall in walls.items():
        table.add_row(name, f"{wall:.1f}", f"{wall / walls['cli']:.2f}x", f"{(wall - walls['cli']) / shards:+.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
