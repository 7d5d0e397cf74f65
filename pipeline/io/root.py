"""Writing under an index root: a local directory (``pathlib.Path``) or an fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``, ``file://...``; a ``RemotePath``, defined
with the root's value type in ``schemas/root.py`` and re-exported here).

Code written against ``Path`` (joining, names, reads, listings) works on both kinds. The
operations that differ are functions here that take either kind:

- ``publish``: make an object appear complete under its final name. Local (and fsspec's local file
  system, ``file://``): a ``mkstemp`` temporary file (random name, never a planted link followed),
  fsync, rename, fsync of the folder (``io/atomic.py``). Object stores: one PUT of the whole object
  (never a visible partial object).
- ``remove_tree``, ``arrow_location`` (path and file system for pyarrow), ``is_remote``.

Which path holds what is named once, in ``pipeline/io/paths.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mmindex.pipeline.io.atomic import write_atomic
from mmindex.pipeline.io.space import disk_full
from mmindex.schemas.root import RemotePath, StoragePath, is_url, parse_root

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "RemotePath", "StoragePath", "arrow_location", "ensure_private_root", "is_remote", "is_url", "parse_root",
    "file_size", "has_rename", "open_read", "publish", "remove_tree",
]

# An index holds text from private folders: its root is the owner's only, and so is every file published.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_root(root: StoragePath) -> None:
    """Create a local index root readable by its owner only (an existing one is left as it is)."""
    if isinstance(root, RemotePath) or root.exists():
        return
    root.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(root, PRIVATE_DIR_MODE)


def is_remote(path: StoragePath) -> bool:
    """Whether the path lives on an fsspec file system (so no file locks, no embedded store)."""
    return isinstance(path, RemotePath)


def has_rename(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local file system behind a ``file://`` URL (files can be renamed there)."""
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"file", "local"} & set(protocols))


def publish(path: StoragePath, data: bytes, durable: bool = True) -> None:
    """Write ``data`` so that ``path`` is either absent/old or complete, never partial."""
    if isinstance(path, RemotePath):
        if has_rename(path.fs):  # a local folder behind a file:// URL: the same private, atomic write
            write_atomic(Path(path.path), data, durable=durable, mode=PRIVATE_FILE_MODE)
        else:
            path.fs.pipe_file(path.path, data)  # one PUT: the object appears whole or not at all
        path._fresh()
        return
    try:
        write_atomic(path, data, durable=durable, mode=PRIVATE_FILE_MODE)
    except OSError as exc:
        full = disk_full(exc, path)
        if full is not None:
            raise full from exc
        raise


def remove_tree(path: StoragePath) -> None:
    """Remove a folder and everything under it (nothing when it does not exist)."""
    if isinstance(path, RemotePath):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def arrow_location(path: StoragePath) -> tuple[str, AbstractFileSystem | None]:
    """``(path, filesystem)`` for pyarrow's readers (``filesystem=None`` for local paths)."""
    if isinstance(path, RemotePath):
        return path.path, path.fs
    return str(path), None


def file_size(path: StoragePath) -> int:
    """A file's size in bytes."""
    if isinstance(path, RemotePath):
        return int(path.fs.size(path.path))
    return path.stat().st_size


def open_read(path: StoragePath) -> IO[bytes]:
    """A file opened for reading bytes (local or fsspec)."""
    if isinstance(path, RemotePath):
        handle: IO[bytes] = path.fs.open(path.path, "rb")
        return handle
    return path.open("rb")
