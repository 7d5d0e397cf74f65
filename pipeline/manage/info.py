"""What an index root holds: collections, their embedders, counts and failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.io.catalog import FailedItem, failed_items, summarize
from mmindex.pipeline.io.root import StoragePath
from mmindex.pipeline.io.state_file import read_state
from mmindex.pipeline.store.open_store import open_store
from mmindex.pipeline.store.store import VectorStore
from mmindex.schemas.config import Settings
from mmindex.schemas.state import RunSummary


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """A collection's identity and counts (``points`` is what the store holds right now)."""

    name: str
    physical_name: str
    embedder_id: str
    model: str
    pretrained: str | None
    dim: int
    points: int
    indexed: int
    failed: int
    images: int
    text_chunks: int
    shards: int
    root: StoragePath
    backend: str
    last_run: RunSummary | None
    # RAG: the text model of the ``text`` vector (None: CLIP vectors only).
    text_embedder_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["root"] = str(self.root)
        data["last_run"] = None if self.last_run is None else self.last_run.model_dump(mode="json")
        return data


def _describe(collection: Collection, points: int) -> CollectionInfo:
    settings, state = collection.settings, collection.entry
    summary = summarize(collection.shard_log)
    return CollectionInfo(
        name=state.name,
        physical_name=state.current.physical_name,
        embedder_id=state.current.embedder_id,
        model=state.current.model,
        pretrained=state.current.pretrained,
        dim=state.current.dim,
        points=points,
        indexed=summary.ok,
        failed=summary.failed,
        images=summary.images,
        text_chunks=summary.text_chunks,
        shards=summary.shards,
        root=settings.root,
        backend=f"qdrant server {settings.qdrant_url}" if settings.qdrant_url else "embedded qdrant-edge",
        last_run=state.last_run,
        text_embedder_id=state.current.text_embedder_id,
    )


def collection_infos(
    settings: Settings, collection: str | None = None, store: VectorStore | None = None
) -> list[CollectionInfo]:
    """Info on one collection (error if unknown) or on all of them (counted in ``store`` when given,
    which stays open, else in a store opened for this)."""
    if collection:
        opened = [Collection.open(settings, collection)]
    else:
        known = read_state(settings.root).collections
        opened = [Collection(settings, known[name]) for name in sorted(known)]
    if not opened:
        return []
    counting = store or open_store(settings)
    try:
        counts = [counting.count(each.physical_name) if counting.collection_exists(each.physical_name) else 0
                  for each in opened]
    finally:
        if store is None:
            counting.close()
    return [_describe(each, points) for each, points in zip(opened, counts, strict=True)]


def collection_failures(settings: Settings, collection: str) -> list[FailedItem]:
    """Items of the collection that could not be indexed, with reasons."""
    return failed_items(Collection.open(settings, collection).shard_log)
