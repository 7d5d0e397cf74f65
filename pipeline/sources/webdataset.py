"""WebDataset tar shards as a ``Source``: one tar, a brace pattern (``shards/{000000..000099}.tar``)
or a folder of tars, local or at an fsspec URL.

Members are grouped by key (the member's name up to the first dot of its base name): ``k.jpg`` is
the image, ``k.txt`` its caption and ``k.json`` its metadata (read at listing time, inline on the
``ItemRef``). Listing reads only the tar headers (and the small caption/metadata members); an
item's ``uri`` names its tar, member and byte range (``<tar>#<member>@<offset>+<size>``), so its
bytes are one ranged read, local or remote. The member's size and mtime are its change signal:
an unchanged tar re-embeds nothing.
"""

from __future__ import annotations

import posixpath
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from mmindex.pipeline.errors import DecodeError, SourceError
from mmindex.pipeline.ids import item_key
from mmindex.pipeline.sources.base import IMAGE_EXTENSIONS, ItemReader, ItemRef, inline_metadata
from mmindex.pipeline.sources.fetch import Fetched, Prefetcher
from mmindex.schemas.state import SourceSpec

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

MAX_SIDECAR_BYTES = 1 << 20
TAR_CONCURRENCY = 8
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")
_URI = re.compile(r"^(?P<tar>.+)#(?P<member>.+)@(?P<offset>\d+)\+(?P<size>\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` -> ``a/000.tar a/001.tar a/002.tar`` (zero padding kept); ``{x,y}`` too."""
    found = [match for match in (_RANGE.search(pattern), _CHOICE.search(pattern)) if match is not None]
    if not found:
        return [pattern]
    match = min(found, key=lambda candidate: candidate.start())  # the leftmost brace varies slowest
    if match.re is _RANGE:
        first, last = match.group(1), match.group(2)
        width = len(first) if first.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + 1)]
    else:
        choices = match.group(1).split(",")
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def is_webdataset_name(source: str) -> bool:
    """A tar, or a brace pattern of tars."""
    return source.rstrip("/").lower().endswith(".tar") or bool(_RANGE.search(source) or _CHOICE.search(source))


@dataclass(slots=True)
class _Sample:
    image: tarfile.TarInfo | None = None
    caption: tarfile.TarInfo | None = None
    metadata: tarfile.TarInfo | None = None
    texts: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebDatasetSource:
    """The images of one or more WebDataset tars."""

    source_id: str
    spec: SourceSpec

    def tars(self) -> list[tuple[AbstractFileSystem, str]]:
        """The tars of the source, in order (their fsspec paths)."""
        from fsspec.core import url_to_fs

        location = self.spec.path
        if not is_webdataset_name(location):
            fs, folder = url_to_fs(location)
            try:
                found = sorted(path for path in fs.find(folder) if path.lower().endswith(".tar"))
            except (OSError, ValueError) as exc:
                raise SourceError(f"cannot list {location}: {exc}") from exc
            if not found:
                raise SourceError(f"no .tar files under {location}")
            return [(fs, path) for path in found]
        return [url_to_fs(name) for name in expand_braces(location)]

    def items(self) -> Iterator[ItemRef]:
        for fs, tar_path in self.tars():
            yield from self._tar_items(fs, tar_path)

    def _tar_items(self, fs: AbstractFileSystem, tar_path: str) -> Iterator[ItemRef]:
        samples: dict[str, _Sample] = {}
        try:
            with fs.open(tar_path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    directory, name = posixpath.split(member.name)
                    stem, dot, ext = name.partition(".")
                    if not dot:
                        continue
                    sample = samples.setdefault(posixpath.join(directory, stem), _Sample())
                    ext = ext.lower()
                    if ext in IMAGE_EXTENSIONS and sample.image is None:
                        sample.image = member
                    elif ext in ("txt", "json") and member.size <= MAX_SIDECAR_BYTES:
                        setattr(sample, "caption" if ext == "txt" else "metadata", member)
                        extracted = archive.extractfile(member)
                        sample.texts[ext] = extracted.read() if extracted is not None else b""
        except FileNotFoundError as exc:
            raise SourceError(f"tar not found: {fs.unstrip_protocol(tar_path)}") from exc
        except (OSError, tarfile.TarError) as exc:
            raise SourceError(f"cannot read tar {fs.unstrip_protocol(tar_path)}: {exc}") from exc
        tar_url = fs.unstrip_protocol(tar_path)
        tar_name = posixpath.basename(tar_path)
        for key, sample in samples.items():
            if sample.image is None:
                continue
            yield self._ref(tar_url, tar_name, key, sample.image, sample)

    def _ref(self, tar_url: str, tar_name: str, key: str, image: tarfile.TarInfo, sample: _Sample) -> ItemRef:
        ext = image.name.rsplit(".", 1)[-1].lower()
        caption = sample.texts.get("txt")
        metadata = inline_metadata(sample.texts.get("json"))
        sig = None if sample.caption is None and sample.metadata is None else "|".join(
            "-" if side is None else f"{side.name}:{side.size}:{side.mtime}" for side in (sample.caption, sample.metadata))
        return ItemRef(
            key=item_key(self.source_id, f"{tar_name}/{key}.{ext}"), source_id=self.source_id,
            uri=f"{tar_url}#{image.name}@{image.offset_data}+{image.size}", path=f"{tar_name}/{key}.{ext}", ext=ext,
            modality="image", size=image.size, mtime_ns=int(image.mtime) * 1_000_000_000, sidecar_sig=sig,
            caption=None if caption is None else caption.decode("utf-8", errors="replace").strip() or None,
            metadata_json=metadata,
        )

    def reader(self, refs: Sequence[ItemRef]) -> ItemReader:
        return Prefetcher(TarMemberFetcher(), refs)


@dataclass(frozen=True, slots=True)
class TarMemberFetcher:
    """Reads one member's byte range from its tar (one ranged read, local or remote)."""

    concurrency: int = TAR_CONCURRENCY

    def fetch(self, uri: str) -> bytes:
        from fsspec.core import url_to_fs

        match = _URI.match(uri)
        if match is None:
            raise DecodeError(f"not a tar member: {uri}")
        offset, size = int(match["offset"]), int(match["size"])
        try:
            fs, path = url_to_fs(match["tar"])
            with fs.open(path, "rb") as handle:
                return _read_range(handle, offset, size)
        except FileNotFoundError:
            raise DecodeError("file not found") from None
        except (OSError, ValueError) as exc:
            raise DecodeError(f"cannot read tar member: {exc}") from None

    def fetch_item(self, uri: str) -> Fetched:
        return Fetched(self.fetch(uri))

    def close(self) -> None:
        return None


def _read_range(handle: IO[bytes], offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise DecodeError(f"corrupt image: tar member truncated ({len(data)} of {size} bytes)")
    return data
