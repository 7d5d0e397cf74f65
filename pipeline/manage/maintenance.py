"""Collection maintenance: rebuild Qdrant from Parquet, migrate to a new model, manage versions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout

from mmindex.pipeline.embed.model import ModelSpec
from mmindex.pipeline.errors import ConfigError, IndexBusyError
from mmindex.pipeline.ingest.apply import rebuild_version, shard_log
from mmindex.pipeline.ingest.run import IndexReport, IndexRequest, ProgressReporter, index_source, ingest_lock
from mmindex.pipeline.io.root import remove_tree
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.search.query import collection_state
from mmindex.pipeline.store.open_store import open_store
from mmindex.pipeline.train.export import describe_provenance
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionVersion


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One physical version of a collection."""

    role: str
    physical_name: str
    embedder_id: str
    dim: int
    points: int
    shards: int
    provenance: str | None = None  # where a fine-tuned model came from (``mmindex finetune``)


def _locked(settings: Settings, collection: str):  # noqa: ANN202 - returns the acquired FileLock
    lock = ingest_lock(settings, collection)
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise IndexBusyError(f"an ingest into collection {collection!r} is running; try again when it ends") from exc
    return lock


def rebuild_collection(settings: Settings, collection: str) -> int:
    """Drop the collection's current Qdrant collection and refill it from the Parquet shards."""
    state = collection_state(settings, collection)
    lock = _locked(settings, collection)
    store = open_store(settings)
    try:
        return rebuild_version(settings, store, collection, state.current)
    finally:
        store.close()
        lock.release()


def migrate_collection(
    settings: Settings, collection: str, model: ModelSpec, progress: ProgressReporter | None = None
) -> IndexReport:
    """Build a version with another model from every source the collection has seen, then switch."""
    state = collection_state(settings, collection)
    if not state.sources:
        raise ConfigError(f"collection {collection!r} has no recorded sources: run `mmindex index SOURCE -c {collection} --model ...`")
    source_id, source = next(iter(state.sources.items()))
    request = IndexRequest(
        source=Path(source.path), collection=collection, model=model, include=tuple(source.include),
        exclude=tuple(source.exclude), include_hidden=source.include_hidden, source_id=source_id,
    )
    return index_source(request, settings, progress)


def list_versions(settings: Settings, collection: str) -> list[VersionInfo]:
    """Current, building and previous versions with their point counts."""
    state = collection_state(settings, collection)
    roles: list[tuple[str, CollectionVersion]] = [("current", state.current)]
    if state.building is not None:
        roles.append(("building", state.building))
    roles.extend(("previous", version) for version in state.previous)
    store = open_store(settings)
    try:
        return [
            VersionInfo(
                role=role,
                physical_name=version.physical_name,
                embedder_id=version.embedder_id,
                dim=version.dim,
                points=store.count(version.physical_name) if store.collection_exists(version.physical_name) else 0,
                shards=len(shard_log(settings.root, collection, version).shards()),
                provenance=describe_provenance(version.model),
            )
            for role, version in roles
        ]
    finally:
        store.close()


def drop_version(settings: Settings, collection: str, physical_name: str) -> None:
    """Remove a previous (or abandoned building) version: its Qdrant collection and its shards."""
    state = collection_state(settings, collection)
    if physical_name == state.current.physical_name:
        raise ConfigError(f"{physical_name} is the current version of {collection!r}; it cannot be dropped")
    version = state.version(physical_name)
    if version is None:
        raise ConfigError(f"collection {collection!r} has no version {physical_name!r} (see `mmindex versions -c {collection}`)")
    lock = _locked(settings, collection)
    store = open_store(settings)
    try:
        store.drop_collection(physical_name)
        removed = shard_log(settings.root, collection, version)
        remove_tree(removed.directory)
        removed.catalog_path.unlink(missing_ok=True)
        with edit_state(settings.root) as edited:
            entry = edited.collections[collection]
            entry.previous = [old for old in entry.previous if old.physical_name != physical_name]
            if entry.building is not None and entry.building.physical_name == physical_name:
                entry.building = None
    finally:
        store.close()
        lock.release()
