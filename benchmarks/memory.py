"""Peak memory of `mmindex index` on a small and a large tree: is ingest streaming end to end?

    python benchmarks/memory.py                        # 1,000 vs 100,000 files (corpus cached in /tmp)
    python benchmarks/memory.py --small 1000 --large 20000

Each size is a tree of tiny files (16x16 JPEGs and one-line notes, as ``incremental.py`` makes
them) indexed from scratch with the tiny random model by a fresh ``mmindex index`` process with
CLIP vectors only (``--text-model none``, so the constant cost of a text model does not flatter
the ratio). The peak resident set of that process (``ru_maxrss`` of the child, imports
included) is compared, and its sampled peak of anonymous memory (RSS minus the touched pages of
memory-mapped files, such as the embedded Qdrant shard's segments and WAL). Goal: peak RSS at
the large size <= 1.3x that at the small size. The corpora are generated once and kept under
the system temp folder (``--regenerate`` makes them again); index roots are fresh per run.
A second table re-runs the large index unchanged (a no-op: crawl + plan only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _tiny import tiny_local_dir
from incremental import make_tree
from rich.console import Console
from rich.table import Table

console = Console()
GOAL_RATIO = 1.3


def cached_tree(files: int, regenerate: bool) -> Path:
    """A generated tree of ``files`` files under the temp folder (made once)."""
    tree = Path(tempfile.gettempdir()) / f"mmindex-bench-memory-{files}"
    done = tree / ".complete"
    if regenerate and tree.exists():
        shutil.rmtree(tree)
    if not done.exists():
        shutil.rmtree(tree, ignore_errors=True)
        console.print(f"generating {files:,} files under {tree} …")
        make_tree(tree / "corpus", files)
        done.touch()
    return tree / "corpus"


def _anon_kib(pid: int) -> int:
    """The process's anonymous resident memory (RssAnon) in KiB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(corpus: Path, root: Path, model: Path) -> tuple[float, float, float]:
    """(peak RSS, sampled peak anonymous RSS, both MiB; wall seconds) of one `mmindex index` child."""
    return peak_rss_mib_of(
        [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "-c", "bench", "--root", str(root),
         "--model", f"local-dir:{model}", "--batch-size", "256", "--text-model", "none"]
    )


def peak_rss_mib_of(command: list[str]) -> tuple[float, float, float]:
    """(peak RSS, sampled peak anonymous RSS, both MiB; wall seconds) of one child running ``command``.

    RSS (``ru_maxrss``) also counts the pages of memory-mapped files the process touched (the
    embedded Qdrant shard maps its segments and WAL); anonymous memory is what the process
    allocated itself, sampled every 20 ms from /proc.
    """
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    anon = [0]
    reaped = threading.Event()

    def sample() -> None:  # never reaps the child (``poll`` would, racing ``wait4`` below)
        while not reaped.is_set():
            anon[0] = max(anon[0], _anon_kib(child.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    reaped.set()
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed ({child.returncode}): {errors.decode(errors='replace')[-2000:]}")
    return usage.ru_maxrss / 1024, anon[0] / 1024, time.perf_counter() - started  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--regenerate", action="store_true", help="generate the cached corpora again")
    args = parser.parse_args()

    small_tree, large_tree = cached_tree(args.small, args.regenerate), cached_tree(args.large, args.regenerate)
    with tempfile.TemporaryDirectory(prefix="mmindex-mem-") as tmp:
        work = Path(tmp)
        model = tiny_local_dir(work / "model")
        small, small_anon, small_s = peak_rss_mib(small_tree, work / "small", model)
        large, large_anon, large_s = peak_rss_mib(large_tree, work / "large", model)
        noop, noop_anon, noop_s = peak_rss_mib(large_tree, work / "large", model)

    table = Table(title="peak memory of `mmindex index` (fresh process, tiny model, imports included)")
    table.add_column("run")
    table.add_column("peak RSS, MiB", justify="right")
    table.add_column("peak anonymous, MiB", justify="right")
    table.add_column("wall, s", justify="right")
    table.add_row(f"{args.small:,} files, first ingest", f"{small:.0f}", f"{small_anon:.0f}", f"{small_s:.1f}")
    table.add_row(f"{args.large:,} files, first ingest", f"{large:.0f}", f"{large_anon:.0f}", f"{large_s:.1f}")
    table.add_row(f"{args.large:,} files, unchanged re-run", f"{noop:.0f}", f"{noop_anon:.0f}", f"{noop_s:.1f}")
    ratio, anon_ratio = large / small, large_anon / small_anon
    table.add_row(f"ratio large/small (goal <= {GOAL_RATIO})", f"{ratio:.2f}", f"{anon_ratio:.2f}",
                  "met" if ratio <= GOAL_RATIO else "not met")
    console.print(table)


if __name__ == "__main__":
    main()
