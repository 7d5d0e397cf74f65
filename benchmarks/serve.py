"""`mmindex serve` under concurrent clients: latency and queries/s of a real server process on the
embedded store, against `mmindex query` run once per process.

    python benchmarks/serve.py                               # 100,000 and 300,000 points
    python benchmarks/serve.py --points 20000 --seconds 5    # a quick look

A collection of random 512-d vectors (ViT-B-32's width, images and text chunks with realistic
payloads, ``benchmarks/rebuild.py``'s generator) is made once per size under the system temp
folder, recorded as built by ViT-B-32 with random weights (a checkpoint saved there), and loaded
with ``rebuild_collection``. Then ``mmindex serve`` starts (default precision) and ``--clients``
threads send requests for ``--seconds`` each, per workload:

* ``search``: the search itself, the query vector given (``vector``), filtered to images;
* ``encode``: the text encode alone (``/embed``);
* ``text query``: a filtered text query end to end (encode + search); the encode's share is
  encode p50 / text query p50;
* ``like``: more like a stored item (no encode: the store looks the vector up).

Latencies are measured by the clients (HTTP on 127.0.0.1 included). Goals on 2 cores: search p50
<= 20 ms and p99 <= 100 ms, like >= 50 queries/s; ``mmindex query`` per process is the baseline,
given as its wall time over the server's text query p50.

Measured on the shared 2-core development VM while six other sessions ran tests (load average
15-16, so every figure is several times what an idle machine gives; compare rows of one run),
20,000 points, 4 clients, 5 s each: search p50 337 ms / p99 651 ms, 8.6 q/s; encode p50 312 ms;
text query p50 756 ms (encode 41%); like p50 260 ms, 10.9 q/s; `mmindex query` per process
129 s, 171x the server's text query. None of the goals is met under that load; the same search
called in-process on the same machine at the same time (``SearchService.search``, vector given,
filtered, one thread) took 3.2 ms median, 2.8 ms best, of which qdrant-edge's query 6.5 ms of
8 ms in a profile: the server's own work per query is small, the HTTP figures above are queueing
behind the load. At 100,000 points (run later, as the load fell to about 2; 4 clients, 5 s each):
search p50 24.6 ms / p99 111.8 ms, 137 q/s (goals 20 / 100 ms: just missed); like p50 16.7 ms /
p99 66.1 ms, 170 q/s (goal 50: met); encode p50 121 ms; text query p50 161 ms (encode 75%);
`mmindex query` per process 19.7 s, 123x the server's text query. The 300,000 point run was not
made here (building the collection took most of 30 minutes under that load).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from rebuild import make_root  # the synthetic collection generator (run from benchmarks/ or its parent)
from rich.console import Console
from rich.table import Table

console = Console()
DIM = 512
TEXT = "a dog running on a beach at sunset"
GOALS = {"search_p50_ms": 20.0, "search_p99_ms": 100.0, "like_qps": 50.0}


def checkpoint() -> Path:
    """ViT-B-32 with random weights (seed 0), saved once."""
    path = Path(tempfile.gettempdir()) / "mmindex-bench-vit-b-32-random.bin"
    if not path.exists():
        import open_clip
        import torch

        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-32").state_dict(), path)
    return path


def bench_root(points: int) -> Path:
    from mmindex.pipeline.embed.model import ModelSpec, load_embedder
    from mmindex.pipeline.manage.maintenance import rebuild_collection
    from mmindex.schemas.config import Settings

    root = Path(tempfile.gettempdir()) / f"mmindex-bench-serve-{points}"
    if (root / "ready").exists():
        return root
    weights = checkpoint()
    embedder = load_embedder(ModelSpec("ViT-B-32", str(weights)), "cpu", "auto")
    console.print(f"generating and loading {points:,} points under {root} …")
    make_root(root, points, DIM, model="ViT-B-32", pretrained=str(weights), embedder=embedder.embedder_id)
    rebuild_collection(Settings(root=root), "bench")
    (root / "ready").touch()
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "mmindex.pipeline.cli", "serve", "--root", str(root), "-c", "bench",
                                "--port", str(port), "--device", "cpu"], env={**os.environ, "MMINDEX_TEXT_MODEL": "none"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start")


def load(url: str, path: str, body: dict, clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies (ms) of every request ``clients`` threads sent in ``seconds``, and requests/s."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as session:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = session.post(path, json=body)
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")
                with lock:
                    latencies.append(elapsed)

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, len(latencies) / (time.perf_counter() - began)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_process_query(root: Path, repeat: int) -> float:
    """Median wall seconds of ``mmindex query`` as its own process (the baseline)."""
    walls = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmindex.pipeline.cli", "query", TEXT, "-c", "bench", "--root", str(root),
                        "--where", "modality=image", "--mode", "clip", "--device", "cpu", "--json"],
                       check=True, capture_output=True, env={**os.environ, "MMINDEX_TEXT_MODEL": "none"})
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def run(points: int, clients: int, seconds: float, repeat: int) -> None:
    root = bench_root(points)
    process, url = start_server(root)
    try:
        with httpx.Client(base_url=url, timeout=120) as session:
            vector = session.post("/embed", json={"text": TEXT}).json()["vectors"][0]
            like_key = session.post("/search", json={"vector": vector, "limit": 1}).json()[0]["key"]  # loads the shard
        workloads = {
            "search (vector given, where modality=image)": ("/search", {"vector": vector, "where": ["modality=image"]}),
            "encode (/embed, one text)": ("/embed", {"text": TEXT}),
            "text query end to end (where modality=image)": ("/search", {"text": TEXT, "where": ["modality=image"],
                                                                         "mode": "clip"}),
            "like (stored item, no encode)": ("/search", {"like": like_key}),
        }
        results = {name: load(url, path, body, clients, seconds) for name, (path, body) in workloads.items()}
    finally:
        process.terminate()
        process.wait(timeout=60)
    baseline_s = per_process_query(root, repeat)

    table = Table(title=f"mmindex serve, {points:,} points x {DIM}-d, embedded qdrant-edge, {clients} clients, {seconds:g}s each")
    for column in ("workload", "requests", "p50 ms", "p99 ms", "queries/s"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    p50 = {}
    for name, (latencies, qps) in results.items():
        p50[name] = percentile(latencies, 0.5)
        table.add_row(name, str(len(latencies)), f"{p50[name]:.1f}", f"{percentile(latencies, 0.99):.1f}", f"{qps:.1f}")
    console.print(table)
    search, encode, text, like = results.values()
    text_p50 = percentile(text[0], 0.5)
    checks = [
        (f"search p50 <= {GOALS['search_p50_ms']:g} ms", percentile(search[0], 0.5) <= GOALS["search_p50_ms"]),
        (f"search p99 <= {GOALS['search_p99_ms']:g} ms", percentile(search[0], 0.99) <= GOALS["search_p99_ms"]),
        (f"like >= {GOALS['like_qps']:g} queries/s", like[1] >= GOALS["like_qps"]),
    ]
    for goal, met in checks:
        console.print(f"goal {goal}: {'met' if met else 'NOT met'}")
    console.print(f"encode share of a text query (p50): {percentile(encode[0], 0.5) / text_p50:.0%}")
    console.print(f"mmindex query per process: {baseline_s:.2f} s median of {repeat}; "
                  f"server text query p50 {text_p50:.1f} ms: {baseline_s * 1000 / text_p50:,.0f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="100000,300000", help="comma-separated collection sizes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of mmindex query per process")
    args = parser.parse_args()
    for points in (int(p) for p in args.points.split(",")):
        run(points, args.clients, args.seconds, args.repeat)


if __name__ == "__main__":
    main()
