"""Collection maintenance: rebuild Qdrant from Parquet, migrate to a new model, manage versions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.embed.chunking import DEFAULT_CONTEXT
from mmindex.pipeline.embed.model import ModelSpec
from mmindex.pipeline.errors import ConfigError, ModelUnavailableError
from mmindex.pipeline.ingest.apply import rebuild_version
from mmindex.pipeline.ingest.run import IndexReport, IndexRequest, ProgressReporter, holding_ingest_lock, index_source
from mmindex.pipeline.io.root import remove_tree
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.train.export import describe_provenance
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionVersion

VersionRole = Literal["current", "building", "previous"]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One physical version of a collection."""

    role: VersionRole
    physical_name: str
    embedder_id: str
    dim: int
    points: int
    shards: int
    provenance: str | None = None  # where a fine-tuned model came from (``mmindex finetune``)


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What ``rebuild_collection`` did. Labels live in the Qdrant payload only, so a rebuild
    labels the images again from their stored vectors with the remembered label settings
    (``labeled``); ``labels_not_reapplied`` says why it could not (the model cannot be loaded)."""

    points: int
    labeled: int | None = None
    labels_not_reapplied: str | None = None


def rebuild_collection(settings: Settings, collection: str) -> RebuildReport:
    """Rebuild the collection's current Qdrant collection from the Parquet shards (built aside and
    swapped in when complete: ``rebuild_version``), then re-apply its remembered labels (the model's
    text tower scores the stored image vectors)."""
    opened = Collection.open(settings, collection)
    with holding_ingest_lock(settings, collection), opened:
        points = rebuild_version(settings, opened.store(), collection, opened.version)
    labels = opened.entry.labels
    if labels is None:
        return RebuildReport(points)
    from mmindex.pipeline.search.labels import apply_labels

    try:
        labeled = apply_labels(settings, collection, labels.labels, labels.templates, labels.threshold,
                               scoring=labels.scoring)
    except ModelUnavailableError as exc:
        return RebuildReport(points, labels_not_reapplied=str(exc))
    return RebuildReport(points, labeled=labeled.images)


def migrate_collection(
    settings: Settings, collection: str, model: ModelSpec, progress: ProgressReporter | None = None,
    chunk_context: str | None = None,
) -> IndexReport:
    """Build a version with another model (or, for a text-model collection, another chunk context
    scheme: ``chunk_context``, default ``chunking.DEFAULT_CONTEXT``) from every source the
    collection has seen, then switch."""
    state = Collection.open(settings, collection).entry
    if not state.sources:
        raise ConfigError(f"collection {collection!r} has no recorded sources: run `mmindex index SOURCE -c {collection} --model ...`")
    source_id, source = next(iter(state.sources.items()))
    from mmindex.pipeline.sources.resolve import SourceOptions

    request = IndexRequest(
        source=source.path, collection=collection, model=model, include=tuple(source.include),
        exclude=tuple(source.exclude), include_hidden=source.include_hidden, source_id=source_id,
        source_options=SourceOptions(source.kind, source.columns, source.fetch, source.follow_links_outside),
        chunk_context=chunk_context or DEFAULT_CONTEXT,
    )
    return index_source(request, settings, progress)


def list_versions(settings: Settings, collection: str) -> list[VersionInfo]:
    """Current, building and previous versions with their point counts."""
    opened = Collection.open(settings, collection)
    state = opened.entry
    roles: list[tuple[VersionRole, CollectionVersion]] = [("current", state.current)]
    if state.building is not None:
        roles.append(("building", state.building))
    roles.extend(("previous", version) for version in state.previous)
    with opened:
        store = opened.store()
        return [
            VersionInfo(
                role=role,
                physical_name=version.physical_name,
                embedder_id=version.embedder_id,
                dim=version.dim,
                points=store.count(version.physical_name) if store.collection_exists(version.physical_name) else 0,
                shards=len(opened.paths.shard_log(collection, version.physical_name).shards()),
                provenance=describe_provenance(version.model),
            )
            for role, version in roles
        ]


def drop_version(settings: Settings, collection: str, physical_name: str) -> None:
    """Remove a previous (or abandoned building) version: its Qdrant collection and its shards."""
    opened = Collection.open(settings, collection)
    if physical_name == opened.entry.current.physical_name:
        raise ConfigError(f"{physical_name} is the current version of {collection!r}; it cannot be dropped")
    if opened.entry.version(physical_name) is None:
        raise ConfigError(f"collection {collection!r} has no version {physical_name!r} (see `mmindex versions -c {collection}`)")
    with holding_ingest_lock(settings, collection), opened:
        opened.store().drop_collection(physical_name)
        remove_tree(opened.paths.shards_dir(collection, physical_name))
        opened.paths.catalog_file(collection, physical_name).unlink(missing_ok=True)
        remove_tree(opened.paths.shard_records_dir(collection, physical_name))
        with edit_state(settings.root) as edited:
            entry = edited.collections[collection]
            entry.previous = [old for old in entry.previous if old.physical_name != physical_name]
            if entry.building is not None and entry.building.physical_name == physical_name:
                entry.building = None
