"""Where an index root lives: a local directory (``pathlib.Path``) or an fsspec URL (``RemotePath``).

The value type of ``Settings.root`` (``schemas/config.py``); the operations that write or remove
under a root (``publish``, ``remove_tree``) are in ``pipeline/io/root.py``. ``RemotePath`` offers
the small part of ``pathlib.Path`` the io layer uses, on an fsspec file system. Listings bypass
fsspec's directory cache: other processes and machines write the same root.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


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
