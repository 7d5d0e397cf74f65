"""A full disk under the index root: a clear line before the embedded store's memory-mapped
writes can fault, ENOSPC from a write as the same line, nothing half-written, and the re-run
completes (issue 16, item 4). A real tmpfs when this machine lets the test mount one; an
injected ENOSPC always."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CliResult, assert_one_line_error, run_cli

from mmindex.pipeline.errors import DiskFullError
from mmindex.pipeline.io.space import EDGE_ALLOCATION_BYTES, RESERVE_BYTES, SpaceGuard

COLLECTION = "p"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 MiB tmpfs (the embedded store allocates ~108 MiB for its first points) mounted for this test (skipped when mounting is not permitted)."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, timeout=30, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"tmpfs mount not permitted here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30, check=False)


def _corpus(tmp_path: Path, photo_corpus: Path) -> Path:
    corpus = tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus, ignore=shutil.ignore_patterns("notes"))
    return corpus


def assert_error_line(result: CliResult, message: str) -> None:
    """Exit 5 with one error line (after the progress bar's frame: the unit had started), no traceback."""
    assert result.code == 5 and "Traceback" not in result.stdout + result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.stderr


def _leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def _points(root: Path) -> int:
    return int(json.loads(run_cli("info", "-c", COLLECTION, "--json", "--root", str(root)).stdout)["collections"][0]["points"])


def test_a_full_tmpfs_stops_the_unit_with_one_line_and_the_rerun_completes(
    small_tmpfs: Path, tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path
) -> None:
    corpus, root = _corpus(tmp_path, photo_corpus), small_tmpfs / "root"
    model = ["--model", f"local-dir:{tiny_local_dir}"]
    code, _, stderr = run_cli("index", str(corpus), "-c", COLLECTION, *model, "--workers", "0", "--root", str(root))
    assert code == 0, stderr
    before = _points(root)
    shutil.copy(corpus / "rocket.bmp", corpus / "rocket-copy-flipped.bmp")
    flipped = corpus / "rocket-copy-flipped.bmp"
    data = bytearray(flipped.read_bytes())
    data[-100:] = bytes(100)  # other pixels: a new item to embed, not a copy
    flipped.write_bytes(bytes(data))

    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    with filler.open("wb") as handle:  # leave less than the embedded store's reserve free
        for _ in range((free - EDGE_ALLOCATION_BYTES // 2) // (1 << 20)):
            handle.write(bytes(1 << 20))
    result = run_cli("index", str(corpus), "-c", COLLECTION, "--workers", "0", "--root", str(root))
    assert_error_line(result, f"free on the file system of {root}, this unit needs about")
    # A new collection on the full file system is refused the same way (its segments are memory-mapped).
    assert_one_line_error(run_cli("index", str(corpus), "-c", "other", *model, "--workers", "0", "--root", str(root)),
                          "a new embedded collection 'other--", code=5)
    assert not _leftovers(root)
    assert run_cli("verify", "-c", COLLECTION, "--root", str(root)).code == 0  # nothing committed was harmed
    assert _points(root) == before

    filler.unlink()
    code, stdout, stderr = run_cli("index", str(corpus), "-c", COLLECTION, "--json", "--workers", "0", "--root", str(root))
    assert code == 0, stderr
    assert json.loads(stdout)["embedded"] == 1 and _points(root) == before + 1
    assert run_cli("verify", "-c", COLLECTION, "--root", str(root)).code == 0


def test_enospc_from_a_shard_write_is_one_line_and_nothing_is_half_written(
    tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmindex.pipeline.io import root as root_module

    corpus, root = _corpus(tmp_path, photo_corpus), tmp_path / "root"
    real_replace = os.replace

    def full_on_shards(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if str(target).endswith(".parquet") and "/shards/" in str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(root_module.os, "replace", full_on_shards)
    result = run_cli("index", str(corpus), "-c", COLLECTION, "--model", f"local-dir:{tiny_local_dir}",
                     "--workers", "0", "--root", str(root))
    monkeypatch.undo()
    assert_error_line(result, f"on the file system of {root}")
    assert "a write failed for lack of space" in result.stderr
    assert not _leftovers(root) and not list(root.glob("shards/*/*/*.parquet"))

    code, stdout, stderr = run_cli("index", str(corpus), "-c", COLLECTION, "--json", "--workers", "0", "--root", str(root))
    assert code == 0, stderr
    assert json.loads(stdout)["embedded"] == 6 and _points(root) == 6
    assert run_cli("verify", "-c", COLLECTION, "--root", str(root)).code == 0


def test_the_space_needed_grows_to_what_units_measured(tmp_path: Path) -> None:
    guard = SpaceGuard(tmp_path, store_on_root=True)
    reserve = RESERVE_BYTES + EDGE_ALLOCATION_BYTES
    assert guard.needed(10, 1000) == 4000 + reserve  # the batch, and the store's growth estimated from it
    guard.growth_per_row = 1000.0  # what a committed unit measured
    assert guard.needed(10, 1000) == 10_000 + reserve
    assert SpaceGuard(tmp_path, store_on_root=False).needed(10, 1000) == 1000 + RESERVE_BYTES  # a server holds the points
    with pytest.raises(DiskFullError, match="this unit needs about"):
        SpaceGuard(tmp_path, store_on_root=False).require(1, shutil.disk_usage(tmp_path).free)
