"""Writing a local file atomically: a temporary file beside it, made by ``tempfile.mkstemp``
(a random name, created exclusively, so a link planted in the folder is never followed), written,
fsync'ed, then renamed over the target. Readers see the old file or the whole new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["TMP_PREFIX", "atomic_file", "fsync_dir", "write_atomic"]

# Temporary files start with this (listings skip them, a crash's leftovers are recognised by it).
TMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, durable: bool = True, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary handle on a fresh temporary file in ``path``'s folder; when the block ends without
    an error the file gets ``mode`` and replaces ``path`` (fsync'ed first when ``durable``); else it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` through ``atomic_file``."""
    with atomic_file(path, durable=durable, mode=mode) as handle:
        handle.write(data)
