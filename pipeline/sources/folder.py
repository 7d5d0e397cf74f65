"""A local folder as a ``Source``: the crawler of ``local.py`` and plain file reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmindex.pipeline.sources.base import ItemReader, ItemRef, Validators
from mmindex.pipeline.sources.local import crawl_local
from mmindex.schemas.state import SourceSpec


@dataclass(frozen=True, slots=True)
class FileReader:
    """Reads local files (regular files only, never blocking; ``embed.decode.read_regular_file``)."""

    def read(self, ref: ItemRef, max_bytes: int) -> bytes:
        from mmindex.pipeline.embed.decode import read_item_bytes

        return read_item_bytes(ref, max_bytes)

    def validators(self, ref: ItemRef) -> Validators | None:
        return None

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class FolderSource:
    """A directory tree on this machine (``crawl_local``'s rules: globs, hidden names, sidecars)."""

    source_id: str
    spec: SourceSpec

    def items(self) -> Iterator[ItemRef]:
        return crawl_local(Path(self.spec.path), source_id=self.source_id, include=self.spec.include,
                           exclude=self.spec.exclude, include_hidden=self.spec.include_hidden,
                           links_outside_root=self.spec.follow_links_outside)

    def reader(self, refs: Sequence[ItemRef]) -> ItemReader:
        return FileReader()
