"""The reader of a work unit's items: each item read by its own source (a unit of a migration
holds items of several sources)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import TracebackType

from mmindex.pipeline.sources.base import ItemReader, ItemRef, Validators
from mmindex.pipeline.sources.resolve import open_source
from mmindex.schemas.state import SourceSpec


class UnitReader:
    """Reads items of folders from their files and items of every other source through their
    source's reader (opened for the unit's items, fetching ahead): a manifest row naming a local
    path is fetched (and refused), never opened. ``remote`` says whether any item is not a file."""

    def __init__(self, sources: Mapping[str, SourceSpec], refs: Sequence[ItemRef]) -> None:
        by_source: dict[str, list[ItemRef]] = defaultdict(list)
        for ref in refs:
            spec = sources.get(ref.source_id)
            if (spec is not None and spec.kind != "folder") or not ref.is_local:
                by_source[ref.source_id].append(ref)
        self._readers: dict[str, ItemReader] = {}
        self._unknown: set[str] = set()
        for source_id, items in by_source.items():
            spec = sources.get(source_id)
            if spec is None:
                self._unknown.add(source_id)
            else:
                self._readers[source_id] = open_source(spec, source_id).reader(items)

    @property
    def remote(self) -> bool:
        return bool(self._readers)

    def read(self, ref: ItemRef, max_bytes: int) -> bytes:
        from mmindex.pipeline.embed.decode import read_item_bytes
        from mmindex.pipeline.errors import DecodeError

        reader = self._readers.get(ref.source_id)
        if reader is not None:
            return reader.read(ref, max_bytes)
        if ref.source_id in self._unknown:  # never read a remote item (or a manifest's path) as a file
            raise DecodeError(f"source {ref.source_id} is not known to this collection")
        return read_item_bytes(ref, max_bytes)

    def validators(self, ref: ItemRef) -> Validators | None:
        reader = self._readers.get(ref.source_id)
        return None if reader is None else reader.validators(ref)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()

    def __enter__(self) -> UnitReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
