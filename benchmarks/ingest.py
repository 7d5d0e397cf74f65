"""Ingest throughput: the full pipeline vs the model alone vs a naive loop, side by side.

    python benchmarks/ingest.py --images 256

(a) model alone: ``encode_images`` on pre-decoded, preprocessed tensors, same batch/precision;
(b) the full ``mmindex index`` (crawl, decode workers, embed, Parquet, Qdrant upsert), in-process
    with the model already loaded, plus the CLI's wall time from a cold start;
(c) a naive loop: open, preprocess, encode one image, upsert one point.
Prints images/s for each and the ratios b/a (goal >= 0.9) and b/c (goal >= 3).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _corpus import make_jpegs, random_checkpoint
from rich.console import Console
from rich.table import Table

console = Console()


def model_only(embedder, paths: list[Path], batch_size: int) -> float:
    """Images/s of the forward pass alone on tensors decoded beforehand."""
    import torch
    from PIL import Image

    tensors = []
    for path in paths:
        with Image.open(path) as image:
            tensors.append(embedder.preprocess(image.convert("RGB")))
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    started = time.perf_counter()
    for batch in batches:
        embedder.encode_images(batch)
    return len(paths) / (time.perf_counter() - started)


def full_pipeline(embedder, corpus: Path, root: Path, batch_size: int, workers: int | None) -> float:
    """Images/s of index_source (what `mmindex index` runs) with the model already loaded."""
    from mmindex.pipeline.ingest import IndexRequest, index_source
    from mmindex.schemas.config import Settings

    settings = Settings(root=root, batch_size=batch_size, workers=workers)
    report = index_source(IndexRequest(corpus, "bench"), settings, embedder=embedder)
    if report.failed:
        raise RuntimeError(f"{report.failed} items failed in the benchmark corpus")
    return report.items_seen / report.seconds


def naive_loop(embedder, paths: list[Path], store_dir: Path) -> float:
    """Images/s of the obvious loop: one image, one forward pass, one upsert at a time."""
    from PIL import Image

    from mmindex.pipeline.ids import point_id
    from mmindex.pipeline.index.edge_store import EdgeStore
    from mmindex.pipeline.index.store import CollectionSpec, PointRecord

    store = EdgeStore(store_dir)
    store.create_collection("naive", CollectionSpec(dim=embedder.dim))
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            pixels = embedder.preprocess(image.convert("RGB")).unsqueeze(0)
        vector = embedder.encode_images(pixels)[0]
        store.upsert("naive", [PointRecord(point_id(str(path)), vector, {"path": str(path)})])
    elapsed = time.perf_counter() - started
    store.close()
    return len(paths) / elapsed


def cli_cold(corpus: Path, root: Path, checkpoint: Path, batch_size: int) -> float:
    """Wall seconds of `mmindex index` as a user runs it (imports and model load included)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "-c", "cold", "--root", str(root),
         "--model", "ViT-B-32", "--pretrained", str(checkpoint), "--batch-size", str(batch_size)],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--naive-images", type=int, default=64, help="the naive loop is slow: fewer images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--architecture", default="ViT-B-32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from mmindex.pipeline.embed.model import ModelSpec, load_embedder

    with tempfile.TemporaryDirectory(prefix="mmindex-bench-") as tmp:
        work = Path(tmp)
        console.print(f"generating {args.images} JPEGs 640x480 …")
        paths = make_jpegs(work / "corpus", args.images)
        checkpoint = random_checkpoint(work, args.architecture)
        embedder = load_embedder(ModelSpec(args.architecture, str(checkpoint)), "auto")
        console.print(f"device={embedder.device} threads={torch.get_num_threads()} batch={args.batch_size}")

        a = model_only(embedder, paths, args.batch_size)
        b = full_pipeline(embedder, work / "corpus", work / "root", args.batch_size, args.workers)
        c = naive_loop(embedder, paths[: args.naive_images], work / "naive")
        cold = cli_cold(work / "corpus", work / "cold-root", checkpoint, args.batch_size)

    table = Table(title=f"{args.architecture}, random weights, {args.images} JPEGs 640x480")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("(a) model only, images/s", f"{a:.2f}")
    table.add_row("(b) mmindex index (model loaded), images/s", f"{b:.2f}")
    table.add_row("(c) naive loop, images/s", f"{c:.2f}")
    table.add_row("b/a (goal >= 0.9)", f"{b / a:.3f}")
    table.add_row("b/c (goal >= 3)", f"{b / c:.2f}")
    table.add_row("mmindex index CLI cold, wall s", f"{cold:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
