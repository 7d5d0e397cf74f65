"""Fetching from URL manifests, measured side by side in one run (#15 item 8).

    python benchmarks/fetch.py --images 400 --latency-ms 50 --plan-rows 1000000 \
        --img2dataset /tmp/i2d-venv/bin/img2dataset

(a) fetch + decode + preprocess items/s from a local HTTP server on 127.0.0.1 that waits
    ``--latency-ms`` per request (the internet, modelled), through mmindex's own path (the
    prefetcher at ``--concurrency``, decode threads, the model's resize/crop to uint8: what a
    manifest's work unit does before the encoder), against the same work one request at a time,
    and against img2dataset on the same manifest and server (``--img2dataset``: its executable in
    its own venv, ``python3 -m venv /tmp/i2d-venv && /tmp/i2d-venv/bin/pip install img2dataset``;
    the same concurrency as threads of one process, resized to the model's input with
    ``center_crop``, as the model's transform does). img2dataset's rate is taken from its own
    shard stats (download, resize, write; its start-up excluded), and its whole run's wall time
    is shown too. Without ``--img2dataset`` that row is skipped with a note;
(b) manifest -> index end to end against indexing the same images from a local folder (the
    goal is >= 0.9x: the fetch is overlapped with decoding and the encoder); ``--model`` picks
    the architecture (random weights; default the tiny benchmark model, ``ViT-B-32`` for the
    issue's figure);
(c) peak RSS of listing + planning a ``--plan-rows`` row Parquet manifest (a fresh process;
    ``plan_memory.py`` compares it with the crawl held whole).

The server runs in a process of its own, so its threads take no GIL from the fetcher measured
(mmindex measures in this process; with the server here too, mmindex's rate fell to ~0.76x of
img2dataset's in a run on the 2-core VM). Each pair of (a) and (b) is alternated ``--rounds``
times and each side keeps its best, since a shared box's load drifts between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _corpus import make_jpegs, random_checkpoint
from _tiny import tiny_local_dir
from plan_memory import plan_peak_gb, write_manifest
from rich.console import Console
from rich.table import Table

console = Console()


class _Handler(BaseHTTPRequestHandler):
    """Serves the JPEGs of ``server.folder``, each response after ``server.latency_s``."""

    protocol_version = "HTTP/1.1"
    server: _ImageServer

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        time.sleep(self.server.latency_s)
        path = self.server.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _ImageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.latency_s = folder, latency_s


def _serve_forever(folder: Path, latency_s: float, port: Connection) -> None:
    server = _ImageServer(folder, latency_s)
    port.send(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def serving(folder: Path, latency_s: float) -> Iterator[int]:
    """Serve ``folder``'s JPEGs on 127.0.0.1 from a process of its own (so the server's threads
    take no GIL from the fetcher being measured, mmindex in this process or img2dataset in
    another), each response after ``latency_s``; yields the port."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_serve_forever, args=(folder, latency_s, sender), daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise SystemExit("the benchmark's HTTP server did not start")
        yield int(receiver.recv())
    finally:
        process.terminate()
        process.join(10)


def model_image_size(model: str) -> int:
    """The model's input side: what both fetchers resize to."""
    if model == "tiny":
        from _tiny import TINY_CONFIG

        return int(TINY_CONFIG["vision_cfg"]["image_size"])
    import open_clip

    config = open_clip.get_model_config(model)
    if config is None:
        raise SystemExit(f"unknown open_clip architecture {model!r}")
    size = config["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


def fetch_decode_rate(urls: list[str], concurrency: int, image_size: int) -> tuple[float, int]:
    """Items/s of fetch + decode + preprocess as a manifest's work unit does it (the prefetcher,
    decode threads, the model's resize/crop to uint8), and how many items decoded."""
    import open_clip

    from mmindex.pipeline.embed.images import ImageDecodeDataset, _burst_batches, available_cores
    from mmindex.pipeline.embed.preprocess import plan_pixels
    from mmindex.pipeline.sources.base import UNKNOWN_SIZE, ItemRef
    from mmindex.pipeline.sources.fetch import HttpFetcher, Prefetcher
    from mmindex.schemas.config import ImageLimits
    from mmindex.schemas.state import FetchOptions

    transform = open_clip.image_transform(image_size, is_train=False)
    refs = [ItemRef(key=url, source_id="b", uri=url, path=url, ext="jpg", modality="image", size=UNKNOWN_SIZE,
                    mtime_ns=0) for url in urls]
    options = FetchOptions(concurrency=concurrency, per_host=concurrency, allow_networks=["127.0.0.1/32"])
    reader = Prefetcher(HttpFetcher(options), refs)
    dataset = ImageDecodeDataset(refs, transform, "bench", ImageLimits(100_000_000), plan_pixels(transform, image_size), reader=reader)
    started = time.perf_counter()
    decoded = 0
    try:
        for batch in _burst_batches(dataset, 64, available_cores()):
            decoded += len(batch.pixel_rows)
    finally:
        reader.close()
    return len(refs) / (time.perf_counter() - started), decoded


@dataclass(frozen=True, slots=True)
class Img2datasetRun:
    """img2dataset's run: its shard-stats rate (start-up excluded), its wall time, what it saved."""

    rate: float
    wall_s: float
    successes: int


def img2dataset_rate(executable: Path, manifest: Path, out: Path, count: int, concurrency: int,
                     image_size: int) -> Img2datasetRun:
    """Run img2dataset on ``manifest`` (one process, ``concurrency`` threads, resized to the model's input)."""
    command = [str(executable), "--url_list", str(manifest), "--input_format", "parquet", "--url_col", "url",
               "--output_format", "files", "--output_folder", str(out), "--processes_count", "1",
               "--thread_count", str(concurrency), "--image_size", str(image_size), "--resize_mode", "center_crop",
               "--number_sample_per_shard", str(count), "--timeout", "30", "--retries", "0",
               "--enable_wandb", "False", "--distributor", "multiprocessing"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, check=False)
    wall = time.perf_counter() - started
    stats = sorted(out.glob("*_stats.json"))
    if done.returncode != 0 or not stats:
        raise SystemExit(f"img2dataset failed ({done.returncode}): {done.stderr[-2000:]}")
    shards = [json.loads(path.read_text()) for path in stats]
    seconds = max(shard["end_time"] for shard in shards) - min(shard["start_time"] for shard in shards)
    successes = sum(int(shard["successes"]) for shard in shards)
    return Img2datasetRun(sum(int(shard["count"]) for shard in shards) / seconds, wall, successes)


def index_seconds(source: str, root: Path, model_flags: list[str], *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmindex.pipeline.cli", "index", source, "-c", "bench", "--root", str(root),
                    "--text-model", "none", *model_flags, *extra], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model", default="tiny", help="tiny, or an open_clip architecture with random weights")
    parser.add_argument("--plan-rows", type=int, default=1_000_000)
    parser.add_argument("--img2dataset", type=Path, default=None,
                        help="img2dataset's executable in its own venv (e.g. /tmp/i2d-venv/bin/img2dataset)")
    parser.add_argument("--skip-index", action="store_true", help="only (a) and (c)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate each pair this many times and keep each side's best (a loaded box drifts)")
    args = parser.parse_args()
    image_size = model_image_size(args.model)
    table = Table("measure", "value")
    with tempfile.TemporaryDirectory(prefix="mmindex-fetch-bench-") as tmp:
        work = Path(tmp)
        images = make_jpegs(work / "images", args.images)
        with serving(work / "images", args.latency_ms / 1000) as port:
            urls = [f"http://127.0.0.1:{port}/{path.name}" for path in images]
            manifest = work / "manifest.parquet"
            pq.write_table(pa.table({"url": urls, "caption": [path.stem for path in images]}), manifest)
            fetch_rows(table, work, urls, manifest, args, image_size)
            if not args.skip_index:
                index_rows(table, work, manifest, args.model, args.concurrency, args.rounds)
        planned, _, peak_gb = plan_peak_gb(write_manifest(work / "plan.parquet", args.plan_rows), work / "plan",
                                           "streamed")
        table.add_row(f"plan {planned:,} manifest rows, peak RSS GB (goal < 1.5 at 10M)", f"{peak_gb:.2f}")
    console.print(table)


def fetch_rows(table: Table, work: Path, urls: list[str], manifest: Path, args: argparse.Namespace,
               image_size: int) -> None:
    """(a): mmindex's fetch + decode + preprocess, one request at a time, and img2dataset, alternated."""
    rates: list[float] = []
    runs: list[Img2datasetRun] = []
    decoded = 0
    for round_ in range(args.rounds):
        rate, decoded = fetch_decode_rate(urls, args.concurrency, image_size)
        rates.append(rate)
        if args.img2dataset is not None:
            runs.append(img2dataset_rate(args.img2dataset, manifest, work / f"i2d-{round_}", len(urls),
                                         args.concurrency, image_size))
    serial, _ = fetch_decode_rate(urls[: max(10, len(urls) // 10)], 1, image_size)
    best = max(rates)
    table.add_row(f"mmindex fetch+decode+preprocess to {image_size}px, items/s (concurrency {args.concurrency}, "
                  f"{decoded}/{len(urls)} decoded; best of {' / '.join(f'{rate:.1f}' for rate in rates)})", f"{best:.1f}")
    table.add_row("  one request at a time", f"{serial:.1f}")
    table.add_row("  ratio", f"{best / serial:.2f}x")
    if not runs:
        table.add_row("img2dataset", "skipped: pass --img2dataset /path/to/venv/bin/img2dataset")
        return
    top = max(runs, key=lambda run: run.rate)
    table.add_row(f"img2dataset download+resize to {image_size}px, items/s (its shard stats, {args.concurrency} "
                  f"threads, {top.successes}/{len(urls)} saved; best of {' / '.join(f'{run.rate:.1f}' for run in runs)})",
                  f"{top.rate:.1f}")
    table.add_row("  img2dataset whole run incl. start-up, items/s", f"{len(urls) / min(run.wall_s for run in runs):.1f}")
    table.add_row("  mmindex vs img2dataset (goal >= 1.0x)", f"{best / top.rate:.2f}x")


def index_rows(table: Table, work: Path, manifest: Path, model: str, concurrency: int, rounds: int) -> None:
    """(b): index the manifest, then the same images from their folder, each in a fresh process, alternated."""
    if model == "tiny":
        model_flags = ["--model", f"local-dir:{tiny_local_dir(work / 'tiny')}"]
    else:
        (work / "ckpt").mkdir()
        model_flags = ["--model", model, "--pretrained", str(random_checkpoint(work / "ckpt", model))]
    from_manifest, from_folder = [], []
    for round_ in range(rounds):
        from_manifest.append(index_seconds(str(manifest), work / f"root-m{round_}", model_flags,
                                           "--allow-network", "127.0.0.1/32", "--fetch-concurrency", str(concurrency),
                                           "--fetch-per-host", str(concurrency)))
        from_folder.append(index_seconds(str(work / "images"), work / f"root-f{round_}", model_flags))
    table.add_row(f"index from manifest, s (best of {' / '.join(f'{s:.1f}' for s in from_manifest)})",
                  f"{min(from_manifest):.2f}")
    table.add_row(f"index from folder, s (best of {' / '.join(f'{s:.1f}' for s in from_folder)})",
                  f"{min(from_folder):.2f}")
    table.add_row("  manifest speed vs folder (goal >= 0.9x)", f"{min(from_folder) / min(from_manifest):.2f}x")


if __name__ == "__main__":
    main()
