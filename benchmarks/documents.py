"""Peak memory and time of indexing one big plain-text document (docs/ARCHITECTURE.md, "Documents").

    python benchmarks/documents.py                          # a 60 MB document, this checkout
    python benchmarks/documents.py --mb 8 --python /other/venv/bin/python   # another install

A generated document of ``--mb`` megabytes (sentences of pseudo-words in paragraphs, seeded, so
every run reads the same text; kept under the system temp folder) is indexed from scratch by a
fresh ``mmindex index`` child of ``--python`` (an interpreter with mmindex installed: compare two
checkouts by running this once with each), with the tiny random model and ``--text-model none``
(by default: the constant cost of a text model would hide what chunking costs). Printed: the
child's peak RSS (``ru_maxrss``, imports included), its sampled peak of anonymous memory, wall
seconds, and the number of chunks indexed. Goal (issue 16): peak RSS <= 1 GiB for 60 MB, and no
slower than before.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _tiny import tiny_local_dir
from memory import peak_rss_mib_of
from rich.console import Console
from rich.table import Table

console = Console()
GOAL_MIB = 1024


def generated_document(megabytes: int) -> Path:
    """A seeded plain-text document of about ``megabytes`` MB under the temp folder (made once)."""
    path = Path(tempfile.gettempdir()) / f"mmindex-bench-document-{megabytes}mb" / "big.txt"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(megabytes)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vocabulary = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(5000)]
    target = megabytes * 1_000_000
    written = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        while written < target:
            sentences = []
            for _ in range(rng.randint(2, 8)):
                words = rng.choices(vocabulary, k=rng.randint(5, 25))
                sentences.append(" ".join(words).capitalize() + ".")
            paragraph = " ".join(sentences) + "\n\n"
            out.write(paragraph)
            written += len(paragraph)
    tmp.replace(path)
    return path


def chunk_count(python: str, root: Path) -> int:
    """Points in the benchmark collection (``mmindex info --json``)."""
    done = subprocess.run([python, "-m", "mmindex.pipeline.cli", "info", "-c", "bench", "--root", str(root), "--json"],
                          capture_output=True, text=True, check=True)
    (collection,) = json.loads(done.stdout)["collections"]
    return int(collection["points"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=60, help="size of the generated document in MB")
    parser.add_argument("--python", default=sys.executable, help="interpreter whose mmindex is measured")
    parser.add_argument("--text-model", default="none", help="text model of the collection (default none)")
    args = parser.parse_args()

    document = generated_document(args.mb)
    with tempfile.TemporaryDirectory(prefix="mmindex-doc-") as tmp:
        work = Path(tmp)
        model = tiny_local_dir(work / "model")
        command = [args.python, "-m", "mmindex.pipeline.cli", "index", str(document.parent), "-c", "bench",
                   "--root", str(work / "root"), "--model", f"local-dir:{model}", "--batch-size", "256",
                   "--text-model", args.text_model]
        peak, anon, seconds = peak_rss_mib_of(command)
        points = chunk_count(args.python, work / "root")

    table = Table(title=f"one {args.mb} MB text document, `mmindex index` ({args.python})")
    for column in ("peak RSS, MiB", "peak anonymous, MiB", "wall, s", "points"):
        table.add_column(column, justify="right")
    table.add_row(f"{peak:.0f}", f"{anon:.0f}", f"{seconds:.1f}", f"{points:,}")
    console.print(table)
    console.print(f"goal: peak RSS <= {GOAL_MIB} MiB: {'met' if peak <= GOAL_MIB else 'not met'}")


if __name__ == "__main__":
    main()
