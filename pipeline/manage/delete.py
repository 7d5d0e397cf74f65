"""``mmindex delete``: remove a whole collection, or one source's items from a collection.

A collection goes with every version (its Qdrant collection, Parquet shards and catalog), its
run records and its entry in ``state.json``; the state entry goes last, so an interrupted delete
leaves a collection that is still listed and can be deleted again. A source's items go the way a
normal ingest removes the items of a source whose files are all gone: an ingest of that source
that finds nothing writes their tombstones (a shard, like any other run) and deletes their points;
then the collection forgets the source, so a migration no longer re-crawls it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from mmindex.pipeline.collection import Collection, collection_state
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.ingest.run import IndexReport, IndexRequest, holding_ingest_lock, index_source
from mmindex.pipeline.io.root import remove_tree
from mmindex.pipeline.io.state_file import edit_state
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionState, CollectionVersion


@dataclass(frozen=True, slots=True)
class DeletedCollection:
    """What ``delete_collection`` removed."""

    collection: str
    versions: tuple[str, ...]
    points: int


def delete_collection(settings: Settings, collection: str) -> DeletedCollection:
    """Remove ``collection`` entirely: every version's points, shards and catalog, its runs, its state."""
    opened = Collection.open(settings, collection)
    with holding_ingest_lock(settings, collection), opened:
        names = tuple(version.physical_name for version in _versions(opened.entry))
        store = opened.store()
        points = sum(store.count(name) for name in names if store.collection_exists(name))
        for name in names:
            store.drop_collection(name)
        opened.close_store()
        remove_tree(opened.paths.collection_shards(collection))
        remove_tree(opened.paths.collection_catalogs(collection))
        remove_tree(opened.paths.runs_dir(collection))
        with edit_state(settings.root) as edited:
            edited.collections.pop(collection, None)
    return DeletedCollection(collection, names, points)


def _versions(state: CollectionState) -> list[CollectionVersion]:
    return [state.current, *([state.building] if state.building is not None else []), *state.previous]


def source_id_of(state: CollectionState, source: str) -> str:
    """The recorded source id that ``source`` names: the id itself, or the folder it was indexed from."""
    if source in state.sources:
        return source
    wanted = Path(source).expanduser().resolve().as_posix()
    for source_id, spec in state.sources.items():
        if spec.path == wanted:
            return source_id
    known = ", ".join(f"{sid} ({spec.path})" if sid != spec.path else sid for sid, spec in state.sources.items()) or "none"
    raise ConfigError(f"collection {state.name!r} has no source {source!r} (sources: {known})")


def delete_source(settings: Settings, collection: str, source: str) -> IndexReport:
    """Remove every item of one source from ``collection`` (tombstones, points) and forget the source."""
    state = collection_state(settings, collection)
    source_id = source_id_of(state, source)
    with tempfile.TemporaryDirectory(prefix="mmindex-delete-") as nothing:
        request = IndexRequest(source=Path(nothing), collection=collection, source_id=source_id, delete_missing=True)
        report = index_source(request, settings)
    with edit_state(settings.root) as edited:
        entry = edited.collections.get(collection)
        if entry is not None:
            entry.sources.pop(source_id, None)
    return report
