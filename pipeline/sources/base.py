"""What a source yields: references to items, never their bytes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from mmindex.schemas.state import SourceSpec

Modality = Literal["image", "text"]

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
TEXT_EXTENSIONS = frozenset({"txt", "md", "html", "htm", "pdf"})


@dataclass(frozen=True, slots=True)
class ItemRef:
    """One crawled item: where it is, what it is, and its cheap change signals (size, mtime).

    ``key`` is the stable item key (docs/ARCHITECTURE.md §2); ``uri`` is what a reader opens (a local path
    for local sources). ``caption_path``/``metadata_path`` point at sidecar files of an image
    (``photo.txt`` / ``photo.json`` beside ``photo.jpg``); ``sidecar_sig`` changes whenever either sidecar does.
    A source without sidecar files (a manifest row) carries the caption and the metadata (JSON)
    inline instead, and ``sidecar_sig`` is then the row's signature. ``size`` is
    ``UNKNOWN_SIZE`` when the listing does not know it (a URL): planning then goes by the
    signature alone.
    """

    key: str
    source_id: str
    uri: str
    path: str
    ext: str
    modality: Modality
    size: int
    mtime_ns: int
    caption_path: str | None = None
    metadata_path: str | None = None
    sidecar_sig: str | None = None
    caption: str | None = None
    metadata_json: str | None = None

    @property
    def is_local(self) -> bool:
        """Whether ``uri`` is an absolute path on this machine (else a URL its source reads)."""
        return self.uri.startswith("/")

    @property
    def known_size(self) -> int | None:
        """The listed size, or None where the listing does not know it (a manifest row)."""
        return None if self.size == UNKNOWN_SIZE else self.size


UNKNOWN_SIZE = -1


@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies the version of a body a server sent: its ``ETag`` and ``Last-Modified``
    (stored with the item; ``index --recheck`` sends them back in a conditional GET)."""

    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators | None:
        """A response's validators, or None when it has neither."""
        etag, modified = headers.get("ETag"), headers.get("Last-Modified")
        return cls(etag, modified) if etag or modified else None

    @property
    def known(self) -> bool:
        """Whether there is anything to revalidate with (else a conditional GET is a plain one)."""
        return bool(self.etag or self.last_modified)

    def request_headers(self) -> dict[str, str]:
        """The headers of a conditional GET for this version."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


def inline_metadata(data: bytes | None) -> str | None:
    """A metadata sidecar's bytes as the canonical JSON an ``ItemRef`` carries inline (objects only)."""
    import json

    if data is None:
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return json.dumps(parsed, sort_keys=True) if isinstance(parsed, dict) else None


class Source(Protocol):
    """Where items come from: it lists ``ItemRef``s and opens an item's bytes.

    Planning, the executor, incremental reindex, migration, the flows and the CLI see only this
    (docs/ARCHITECTURE.md §1). ``spec`` is what the collection remembers to list it again.
    """

    @property
    def source_id(self) -> str: ...

    @property
    def spec(self) -> SourceSpec: ...

    def items(self) -> Iterator[ItemRef]:
        """Every item, in a deterministic order (a one-line ``SourceError`` if it cannot be listed)."""
        ...

    def reader(self, refs: Sequence[ItemRef]) -> ItemReader:
        """A reader of these items' bytes, in about this order (a remote source fetches ahead)."""
        ...


class ItemReader(Protocol):
    """Reads items' bytes for the decoder; every failure is a ``DecodeError`` with the item's reason."""

    def read(self, ref: ItemRef, max_bytes: int) -> bytes: ...

    def validators(self, ref: ItemRef) -> Validators | None:
        """The HTTP validators of the body ``read`` gave for ``ref`` (None: not fetched over HTTP, or
        the server sent none); asked once, after ``read``."""
        ...

    def close(self) -> None: ...
