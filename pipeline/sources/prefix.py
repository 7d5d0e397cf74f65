"""An object-storage prefix as a ``Source`` (``s3://bucket/photos/``, ``gs://``, ``az://``,
``memory://``, ``file://``): crawled like a folder through fsspec.

The listing's size and ETag (or modification time) are an object's change signal, as ``stat``
is a file's; sidecars follow the folder rules (``photo.txt``/``photo.json`` beside
``photo.jpg``) and are read at listing time, inline on the image's ``ItemRef``. Endpoints and
credentials come from fsspec's usual environment (``AWS_ENDPOINT_URL``, profiles, ...): the
private-network guard is for URLs from data, not for the store the user configured.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mmindex.pipeline.errors import DecodeError, SourceError
from mmindex.pipeline.ids import item_key
from mmindex.pipeline.sources.base import (
    IMAGE_EXTENSIONS,
    TEXT_EXTENSIONS,
    ItemReader,
    ItemRef,
    Modality,
    inline_metadata,
)
from mmindex.pipeline.sources.fetch import Fetched, Prefetcher
from mmindex.schemas.state import SourceSpec

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

MAX_SIDECAR_BYTES = 1 << 20
PREFIX_CONCURRENCY = 16


def _change_ns(info: dict[str, Any]) -> int:
    """An object's change signal as an integer: its mtime in ns, else a hash of its ETag."""
    for name in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, int | float):
            return int(value * 1e9)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return int.from_bytes(hashlib.sha256(str(etag).encode()).digest()[:7], "big") if etag else 0


def _signature(info: dict[str, Any]) -> str:
    """Size and ETag (or mtime) of a sidecar object."""
    return f"{info.get('size', 0)}:{info.get('ETag') or info.get('etag') or _change_ns(info)}"


@dataclass(frozen=True, slots=True)
class _Object:
    path: str
    rel: str
    stem: str
    ext: str
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PrefixSource:
    """The objects under an fsspec URL prefix."""

    source_id: str
    spec: SourceSpec

    def _fs(self) -> tuple[AbstractFileSystem, str]:
        from fsspec.core import url_to_fs

        try:
            return url_to_fs(self.spec.path)
        except (ImportError, ValueError) as exc:
            raise SourceError(f"cannot open {self.spec.path}: {exc}") from exc

    def items(self) -> Iterator[ItemRef]:
        fs, root = self._fs()
        root = root.rstrip("/")
        fs.invalidate_cache()  # a listing cached by an earlier run in this process would hide changes
        try:
            listing: dict[str, dict[str, Any]] = fs.find(root, detail=True)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot list {self.spec.path}: {exc}") from exc
        if not listing:
            raise SourceError(f"nothing under {self.spec.path}")
        by_dir: dict[str, list[_Object]] = {}
        for path in sorted(listing):
            info = listing[path]
            rel = path[len(root):].lstrip("/")
            name = posixpath.basename(rel)
            if not rel or info.get("type") == "directory" or (name.startswith(".") and not self.spec.include_hidden):
                continue
            stem, dot, ext = name.rpartition(".")
            if not dot:
                stem, ext = name, ""
            by_dir.setdefault(posixpath.dirname(rel), []).append(_Object(path, rel, stem, ext.lower(), info))
        for directory in sorted(by_dir):
            yield from self._directory(fs, by_dir[directory])

    def _directory(self, fs: AbstractFileSystem, objects: list[_Object]) -> Iterator[ItemRef]:
        from mmindex.pipeline.sources.local import _compile_all, _Filters

        filters = _Filters(include=_compile_all(self.spec.include), exclude=_compile_all(self.spec.exclude))
        image_stems = {obj.stem for obj in objects if obj.ext in IMAGE_EXTENSIONS}
        captions = {obj.stem: obj for obj in objects if obj.ext == "txt" and obj.stem in image_stems}
        metadata = {obj.stem: obj for obj in objects if obj.ext == "json" and obj.stem in image_stems}
        for obj in objects:
            modality: Modality | None = ("image" if obj.ext in IMAGE_EXTENSIONS else
                                         "text" if obj.ext in TEXT_EXTENSIONS else None)
            if modality is None or obj in captions.values() or not filters.wants_file(obj.rel):
                continue
            caption = captions.get(obj.stem) if modality == "image" else None
            meta = metadata.get(obj.stem) if modality == "image" else None
            sig = None if caption is None and meta is None else "|".join(
                "-" if side is None else f"{posixpath.basename(side.rel)}:{_signature(side.info)}" for side in (caption, meta))
            yield ItemRef(
                key=item_key(self.source_id, obj.rel), source_id=self.source_id, uri=fs.unstrip_protocol(obj.path),
                path=obj.rel, ext=obj.ext, modality=modality, size=int(obj.info.get("size") or 0),
                mtime_ns=_change_ns(obj.info), sidecar_sig=sig,
                caption=None if caption is None else _sidecar_text(fs, caption),
                metadata_json=None if meta is None else _sidecar_json(fs, meta),
            )

    def reader(self, refs: Sequence[ItemRef]) -> ItemReader:
        fs, _ = self._fs()
        return Prefetcher(ObjectFetcher(fs), refs)


def _sidecar_bytes(fs: AbstractFileSystem, obj: _Object) -> bytes | None:
    if int(obj.info.get("size") or 0) > MAX_SIDECAR_BYTES:
        return None
    try:
        return bytes(fs.cat_file(obj.path))
    except (OSError, ValueError):
        return None


def _sidecar_text(fs: AbstractFileSystem, obj: _Object) -> str | None:
    data = _sidecar_bytes(fs, obj)
    return None if data is None else data.decode("utf-8", errors="replace").strip() or None


def _sidecar_json(fs: AbstractFileSystem, obj: _Object) -> str | None:
    return inline_metadata(_sidecar_bytes(fs, obj))


@dataclass(frozen=True, slots=True)
class ObjectFetcher:
    """Reads whole objects from one fsspec file system."""

    fs: AbstractFileSystem
    concurrency: int = PREFIX_CONCURRENCY

    def fetch(self, uri: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(uri))
        except FileNotFoundError:
            raise DecodeError("file not found") from None
        except (OSError, ValueError) as exc:
            raise DecodeError(f"cannot read object: {exc}") from None

    def fetch_item(self, uri: str) -> Fetched:
        return Fetched(self.fetch(uri))

    def close(self) -> None:
        return None
