"""Peak memory of planning a large URL manifest: the crawl held whole vs streamed (#15).

    python benchmarks/plan_memory.py                 # 1,000,000 rows
    python benchmarks/plan_memory.py --rows 10000000 # the issue's goal: < 1.5 GB peak RSS

A LAION-style Parquet manifest (url, caption, license) of ``--rows`` rows is listed and planned
against an empty catalog (a first ingest: every row is new), and its work units are written as
``plan_run`` writes them, by a fresh process per mode, side by side:

- ``whole``: the crawl listed into one list of ``ItemRef``s and planned as one batch (what
  ``plan_run`` did before planning streamed);
- ``streamed``: ``plan_run``'s path (``plan_changes`` over the source's iterator, a batch at a
  time, each full unit published by ``UnitWriter`` at once).

The peak resident set of each child (``VmHWM``, imports included; not ``ru_maxrss``, which after
fork + exec also counts the parent's pages: ``fetch.py`` calls this with a model loaded) is
printed, and their ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

console = Console()
GOAL_GB_AT_10M = 1.5

_CHILD = """
import sys
from mmindex.pipeline.ingest.plan import plan_changes
from mmindex.pipeline.ingest.units import RunDir, UnitWriter
from mmindex.pipeline.io.catalog import Catalog
from mmindex.pipeline.sources.resolve import open_source, source_spec
manifest, root, mode = sys.argv[1:4]
items = open_source(source_spec(manifest), "m").items()
refs = list(items) if mode == "whole" else items
writer = UnitWriter(RunDir(__import__("pathlib").Path(root), "bench", "20260101T000000000000Z-0123abcd"), 1, 8192)
new = 0
for part in plan_changes(refs, Catalog.empty(), "m", batch_items=len(refs) if mode == "whole" else None):
    new += part.counts().new
    writer.add(part)
writer.end_source()
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
print(new, len(writer.seqs), peak)
"""


def write_manifest(path: Path, rows: int) -> Path:
    """A Parquet manifest of ``rows`` rows: url, caption and one metadata column (written in parts)."""
    schema = pa.schema([("url", pa.string()), ("caption", pa.string()), ("license", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 1_000_000):
            numbers = range(start, min(rows, start + 1_000_000))
            writer.write_table(pa.table({
                "url": [f"https://img{n % 97}.example.org/photos/{n:09d}.jpg" for n in numbers],
                "caption": [f"a photo, number {n}" for n in numbers],
                "license": ["cc-by"] * len(numbers),
            }, schema=schema))
    return path


def plan_peak_gb(manifest: Path, root: Path, mode: str) -> tuple[int, int, float]:
    """(rows planned as new, units written, peak RSS in GB) of one planning child."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(manifest), str(root), mode], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1]), int(out[2]) / 1024 / 1024  # KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--streamed-only", action="store_true", help="skip `whole` (about 1 GB per million rows)")
    args = parser.parse_args()
    table = Table(title=f"listing + planning a {args.rows:,}-row Parquet manifest (fresh process each)")
    for column in ("mode", "rows planned", "units", "peak RSS, GB"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    with tempfile.TemporaryDirectory(prefix="mmindex-plan-mem-") as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "manifest.parquet", args.rows)
        peaks = {}
        for mode in ("streamed",) if args.streamed_only else ("whole", "streamed"):
            planned, units, peaks[mode] = plan_peak_gb(manifest, work / mode, mode)
            table.add_row(mode, f"{planned:,}", f"{units:,}", f"{peaks[mode]:.2f}")
    if "whole" in peaks:
        table.add_row("streamed / whole", "", "", f"{peaks['streamed'] / peaks['whole']:.2f}x")
    console.print(table)
    console.print(f"goal: < {GOAL_GB_AT_10M} GB at 10,000,000 rows (run with --rows 10000000)")


if __name__ == "__main__":
    main()
