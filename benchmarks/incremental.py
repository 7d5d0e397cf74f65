"""No-op re-run vs a bare walk+stat vs a full ingest, on many small generated files.

    python benchmarks/incremental.py --files 100000

(a) wall time of `mmindex index` re-run on an unchanged tree (the CLI, imports included);
(b) wall time of a bare Python walk + stat of the same tree;
(c) wall time of the full first ingest of the tree with a tiny model.
CLIP vectors only (``--text-model none``): the tiny CLIP model is the whole embedding cost.
Prints a/b (goal <= 3) and a/c (goal <= 0.02), plus a small edit and its re-run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _tiny import tiny_local_dir
from rich.console import Console
from rich.table import Table

console = Console()
FILES_PER_DIR = 1000


def make_tree(root: Path, files: int, text_share: float = 0.1, seed: int = 0) -> None:
    """``files`` small distinct files: 16x16 JPEGs of noise and one-line notes, 1000 per folder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    texts = int(files * text_share)
    for index in range(files):
        folder = root / f"d{index // FILES_PER_DIR:04d}"
        if index % FILES_PER_DIR == 0:
            folder.mkdir(parents=True, exist_ok=True)
        if index < texts:
            (folder / f"n{index:07d}.txt").write_text(f"note number {index}: {rng.integers(1 << 30)}\n")
        else:
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"i{index:07d}.jpg", quality=80)


def walk_and_stat(root: Path) -> int:
    """The floor: visit every file and stat it, nothing else."""
    count = 0
    for directory, _, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(directory, name))
            count += 1
    return count


def cli_index(corpus: Path, root: Path, model: Path, *extra: str) -> float:
    """Wall seconds of one `mmindex index` run."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "-c", "bench", "--root", str(root),
         "--model", f"local-dir:{model}", "--batch-size", "256",
         "--text-model", "none", *extra],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return time.perf_counter() - started


def library_noop(corpus: Path, root: Path) -> float:
    """Wall seconds of the same no-op re-run as a library call (no interpreter start, no imports)."""
    from mmindex.pipeline.ingest.run import IndexRequest, index_source
    from mmindex.schemas.config import Settings

    started = time.perf_counter()
    report = index_source(IndexRequest(corpus, "bench"), Settings(root=root))
    elapsed = time.perf_counter() - started
    if report.embedded_keys or report.counts.shards_written:
        raise RuntimeError("the no-op re-run did work")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="no-op and walk timings: median of this many")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mmindex-incr-") as tmp:
        work = Path(tmp)
        console.print(f"generating {args.files:,} files …")
        make_tree(work / "corpus", args.files)
        model = tiny_local_dir(work / "model")
        full = cli_index(work / "corpus", work / "root", model)
        console.print(f"full ingest: {full:.1f}s")
        noop = sorted(cli_index(work / "corpus", work / "root", model) for _ in range(args.repeats))[args.repeats // 2]
        library = sorted(library_noop(work / "corpus", work / "root") for _ in range(args.repeats))[args.repeats // 2]
        walks = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            walk_and_stat(work / "corpus")
            walks.append(time.perf_counter() - started)
        walk = sorted(walks)[args.repeats // 2]
        (work / "corpus" / "d0000" / "n0000000.txt").write_text("an edited note\n")
        min((work / "corpus").glob("d*/i*.jpg")).unlink()
        small_edit = cli_index(work / "corpus", work / "root", model)

    table = Table(title=f"incremental reindex, {args.files:,} small files (tiny model)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("(c) full first ingest, s", f"{full:.2f}")
    table.add_row("(a) no-op re-run (CLI, median), s", f"{noop:.2f}")
    table.add_row("(a') no-op re-run as a library call (median), s", f"{library:.2f}")
    table.add_row("(b) bare walk + stat (median), s", f"{walk:.2f}")
    table.add_row("re-run after 1 edit + 1 delete, s", f"{small_edit:.2f}")
    table.add_row("a/b (goal <= 3)", f"{noop / walk:.2f}")
    table.add_row("a'/b (library only)", f"{library / walk:.2f}")
    table.add_row("a/c (goal <= 0.02)", f"{noop / full:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
