"""Fetching from URL manifests, measured side by side in one run (#15 item 8).

    python benchmarks/fetch.py --images 400 --latency-ms 50 --plan-rows 1000000

(a) fetch + decode + preprocess items/s from a local HTTP server on 127.0.0.1 that waits
    ``--latency-ms`` per request (the internet, modelled), through mmindex's prefetcher at
    ``--concurrency``, against the same work done one request at a time (the ratio is the gain
    from overlapping requests);
(b) manifest -> index end to end against indexing the same images from a local folder (the
    goal is >= 0.9x: the fetch is overlapped with decoding and the encoder); ``--model`` picks
    the architecture (random weights; default the tiny benchmark model, ``ViT-B-32`` for the
    issue's figure);
(c) peak RSS of listing + planning a ``--plan-rows`` row Parquet manifest (a fresh process;
    ``plan_memory.py`` compares it with the crawl held whole).

Not measured here: img2dataset on the same manifest (run it in its own venv against this
server to compare; see the closing note of issue #15).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _corpus import make_jpegs, random_checkpoint
from _tiny import tiny_local_dir
from plan_memory import plan_peak_gb, write_manifest
from rich.console import Console
from rich.table import Table

console = Console()


def serve(folder: Path, latency_s: float) -> ThreadingHTTPServer:
    """Serve ``folder``'s JPEGs on 127.0.0.1, each response after ``latency_s``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            time.sleep(latency_s)
            path = folder / self.path.lstrip("/")
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def fetch_decode_rate(urls: list[str], concurrency: int, model: str) -> float:
    """Items/s of fetch + decode + preprocess through the prefetcher."""
    import open_clip

    from mmindex.pipeline.embed.decode import decode_image
    from mmindex.pipeline.sources.base import UNKNOWN_SIZE, ItemRef
    from mmindex.pipeline.sources.fetch import HttpFetcher, Prefetcher
    from mmindex.schemas.state import FetchOptions

    _, _, preprocess = open_clip.create_model_and_transforms(model) if model != "tiny" else (None, None, None)
    refs = [ItemRef(key=url, source_id="b", uri=url, path=url, ext="jpg", modality="image", size=UNKNOWN_SIZE,
                    mtime_ns=0) for url in urls]
    options = FetchOptions(concurrency=concurrency, per_host=concurrency, allow_networks=["127.0.0.1/32"])
    reader = Prefetcher(HttpFetcher(options), refs)
    started = time.perf_counter()
    try:
        for ref in refs:
            image = decode_image(reader.read(ref, options.max_bytes), 100_000_000).image
            if preprocess is not None:
                preprocess(image)
            else:
                image.resize((224, 224))
    finally:
        reader.close()
    return len(refs) / (time.perf_counter() - started)


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
    args = parser.parse_args()
    table = Table("measure", "value")
    with tempfile.TemporaryDirectory(prefix="mmindex-fetch-bench-") as tmp:
        work = Path(tmp)
        images = make_jpegs(work / "images", args.images)
        server = serve(work / "images", args.latency_ms / 1000)
        urls = [f"http://127.0.0.1:{server.server_address[1]}/{path.name}" for path in images]
        try:
            overlapped = fetch_decode_rate(urls, args.concurrency, args.model)
            serial = fetch_decode_rate(urls[: max(10, args.images // 10)], 1, args.model)
            table.add_row(f"fetch+decode+preprocess items/s (concurrency {args.concurrency})", f"{overlapped:.1f}")
            table.add_row("  one request at a time", f"{serial:.1f}")
            table.add_row("  ratio", f"{overlapped / serial:.2f}x")
            if args.model == "tiny":
                model_flags = ["--model", f"local-dir:{tiny_local_dir(work / 'tiny')}"]
            else:
                (work / "ckpt").mkdir()
                model_flags = ["--model", args.model, "--pretrained", str(random_checkpoint(work / "ckpt", args.model))]
            manifest = work / "manifest.parquet"
            pq.write_table(pa.table({"url": urls, "caption": [path.stem for path in images]}), manifest)
            from_manifest = index_seconds(str(manifest), work / "root-m", model_flags,
                                          "--allow-network", "127.0.0.1/32",
                                          "--fetch-concurrency", str(args.concurrency),
                                          "--fetch-per-host", str(args.concurrency))
            from_folder = index_seconds(str(work / "images"), work / "root-f", model_flags)
            table.add_row("index from manifest, s", f"{from_manifest:.2f}")
            table.add_row("index from folder, s", f"{from_folder:.2f}")
            table.add_row("  manifest speed vs folder (goal >= 0.9x)", f"{from_folder / from_manifest:.2f}x")
        finally:
            server.shutdown()
        planned, _, peak_gb = plan_peak_gb(write_manifest(work / "plan.parquet", args.plan_rows), work / "plan",
                                           "streamed")
        table.add_row(f"plan {planned:,} manifest rows, peak RSS GB (goal < 1.5 at 10M)", f"{peak_gb:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
