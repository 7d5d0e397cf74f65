"""Index roots: a local directory (``pathlib.Path``) or an fsspec URL (``s3://bucket/prefix``,
``gs://...``, ``memory://...``, ``file://...``).

``RemotePath`` offers the small part of ``pathlib.Path`` the io layer uses, on an fsspec file
system, so code written against ``Path`` (joining, names, reads, listings) works on both. The
operations that differ are functions here that take either kind:

- ``publish``: make an object appear complete under its final name. Local: temporary file, fsync,
  rename, fsync of the folder. Object stores: one PUT of the whole object (never a visible partial
  object). fsspec's local file system (``file://``): temporary file, then a rename.
- ``remove_tree``, ``arrow_location`` (path and file system for pyarrow), ``is_remote``.

Listings bypass fsspec's directory cache: other processes and machines write the same root.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_TMP_PREFIX = ".tmp-"


def is_url(value: str) -> bool:
    """Whether a root given as text is an fsspec URL rather than a local path."""
    scheme, sep, _ = value.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("-", "").isalnum()


class RemotePath:
    """A path on an fsspec file system; immutable, hashable, ``str()`` gives its URL."""

    __slots__ = ("fs", "path")

    def __init__(self, fs: AbstractFileSystem, path: str) -> None:
        self.fs = fs
        self.path = path.rstrip("/") or "/"

    @classmethod
    def from_url(cls, url: str) -> RemotePath:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(url)
        return cls(fs, path)

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.path)

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.fs is self.fs and other.path == self.path

    def __hash__(self) -> int:
        return hash((id(self.fs), self.path))

    def __lt__(self, other: RemotePath) -> bool:
        return self.path < other.path

    def __truediv__(self, part: str) -> RemotePath:
        return RemotePath(self.fs, f"{self.path.rstrip('/')}/{part}")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        return RemotePath(self.fs, head or "/")

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def _fresh(self) -> None:
        self.fs.invalidate_cache(self.path)
        self.fs.invalidate_cache(self.parent.path)

    def exists(self) -> bool:
        self._fresh()
        return bool(self.fs.exists(self.path))

    def is_dir(self) -> bool:
        self._fresh()
        return bool(self.fs.isdir(self.path))

    def is_file(self) -> bool:
        self._fresh()
        return bool(self.fs.isfile(self.path))

    def iterdir(self) -> list[RemotePath]:
        """The entries directly under this path (an empty list when there are none)."""
        self._fresh()
        try:
            entries = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        prefix = self.fs._strip_protocol(self.path).rstrip("/")
        return [RemotePath(self.fs, str(entry)) for entry in entries if str(entry).rstrip("/") != prefix]

    def read_bytes(self) -> bytes:
        return bytes(self.fs.cat_file(self.path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Folders are implied by object names on object stores; create them where they exist."""
        self.fs.makedirs(self.path, exist_ok=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise


StoragePath = Path | RemotePath


def parse_root(value: Any) -> StoragePath:
    """A configured root: a URL becomes a ``RemotePath``, anything else an expanded local ``Path``."""
    if isinstance(value, RemotePath | Path):
        return value.expanduser() if isinstance(value, Path) else value
    text = str(value)
    if is_url(text):
        return RemotePath.from_url(text)
    return Path(text).expanduser()


def is_remote(path: StoragePath) -> bool:
    """Whether the path lives on an fsspec file system (so no file locks, no embedded store)."""
    return isinstance(path, RemotePath)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(name: str) -> str:
    return f"{_TMP_PREFIX}{name}.{os.getpid()}.{threading.get_ident()}"


def _has_rename(fs: AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool({"file", "local"} & set(protocols))


def publish(path: StoragePath, data: bytes, durable: bool = True) -> None:
    """Write ``data`` so that ``path`` is either absent/old or complete, never partial."""
    if isinstance(path, RemotePath):
        fs = path.fs
        if _has_rename(fs):
            fs.makedirs(path.parent.path, exist_ok=True)
            tmp = path.with_name(_tmp_name(path.name))
            try:
                fs.pipe_file(tmp.path, data)
                fs.mv(tmp.path, path.path)
            finally:
                if fs.exists(tmp.path):
                    fs.rm_file(tmp.path)
        else:
            fs.pipe_file(path.path, data)  # one PUT: the object appears whole or not at all
        path._fresh()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    local_tmp = path.with_name(_tmp_name(path.name))
    try:
        with local_tmp.open("wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(local_tmp, path)
    finally:
        local_tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)


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
