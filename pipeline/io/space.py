"""Free space under a local index root (docs/ARCHITECTURE.md §3, "Disk space").

The embedded store writes through memory maps (its WAL segments are preallocated sparse files):
when the file system fills up, such a write is not an error but a SIGBUS that kills the process.
So before each work unit commits, ``SpaceGuard.require`` compares the free space with what the
unit will write (its shard, plus the store's growth: estimated from the batch at first, then
measured on the units before it) and a fixed reserve, and stops with one clear line first.
Every ``ENOSPC`` a write still meets becomes the same ``DiskFullError`` (``disk_full``).
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmindex.pipeline.errors import DiskFullError

MIB = 1 << 20
# Always left free: the state and catalog files, a Qdrant server's root.
RESERVE_BYTES = 8 * MIB
# What the embedded store may take at once, besides a unit's own need, when it is on the root:
# measured on tmpfs, a new collection's segments take 31 MiB when it is created and 77 MiB more
# with its first points (an appendable segment's storage, allocated in chunks).
EDGE_ALLOCATION_BYTES = 96 * MIB
EDGE_NEW_COLLECTION_BYTES = 112 * MIB
# The embedded store's growth per byte of a unit's Arrow batch, until one unit has been measured.
STORE_GROWTH_PER_BATCH_BYTE = 3.0
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_MESSAGES = ("no space left on device", "disk quota exceeded", "os error 28")


def _mb(size: float) -> str:
    return f"{size / MIB:.1f} MB"


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _used_bytes(path: Path) -> int:
    usage = shutil.disk_usage(path)
    return usage.total - usage.free


def disk_full(exc: BaseException, where: Path | str) -> DiskFullError | None:
    """The clear error for a write that failed because the file system is full (None otherwise)."""
    full = isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS
    if not full and not any(message in str(exc).lower() for message in _FULL_MESSAGES):
        return None
    local = Path(str(where))
    free = f"{_mb(free_bytes(local))} free" if local.is_absolute() else "no space left"
    return DiskFullError(f"{free} on the file system of {where}: a write failed for lack of space (nothing "
                         "half-written is kept); free some space and run the command again, it continues from there")


def require_free(path: Path, need: int, what: str) -> None:
    """``DiskFullError`` naming the free space and the need when ``path``'s file system has less
    than ``need`` bytes free (checked before ``what`` writes anything)."""
    free = free_bytes(path)
    if free < need:
        raise DiskFullError(
            f"{_mb(free)} free on the file system of {path}, {what} needs about {_mb(need)} (with the reserve "
            "kept free): nothing of it was written; free some space (or move the index root) and run the "
            "command again, it continues from there"
        )


@dataclass(slots=True)
class SpaceGuard:
    """The free-space check of one run's units on a local index root."""

    root: Path
    store_on_root: bool  # the embedded store lives under the root (not on a Qdrant server)
    growth_per_row: float = 0.0  # measured on the units committed so far

    def needed(self, rows: int, batch_bytes: int) -> int:
        """What a unit of ``rows`` rows (``batch_bytes`` in Arrow) will write, plus the reserve."""
        estimate = batch_bytes * (1.0 + STORE_GROWTH_PER_BATCH_BYTE if self.store_on_root else 1.0)
        reserve = RESERVE_BYTES + (EDGE_ALLOCATION_BYTES if self.store_on_root else 0)
        return int(max(estimate, self.growth_per_row * rows)) + reserve

    def require(self, rows: int, batch_bytes: int, already_written: int = 0) -> None:
        """``DiskFullError`` unless the unit fits: checked before anything of it is written, and
        again before each further row group of a large unit (``rows`` and ``batch_bytes``: the
        unit so far; ``already_written``: what its shard file already took)."""
        require_free(self.root, max(0, self.needed(rows, batch_bytes) - already_written), "this unit")

    def used(self) -> int:
        """Bytes used on the root's file system now (``record_growth`` compares with it)."""
        return _used_bytes(self.root)

    def record_growth(self, used_before: int, rows: int) -> None:
        """Remember what committing ``rows`` rows took since ``used_before`` (the largest per row so far)."""
        grown = _used_bytes(self.root) - used_before
        if rows and grown > 0:
            self.growth_per_row = max(self.growth_per_row, grown / rows)

    @contextmanager
    def measuring(self, rows: int) -> Iterator[None]:
        """Measure what committing ``rows`` rows took on the file system (the largest per row so far)."""
        before = self.used()
        yield
        self.record_growth(before, rows)
