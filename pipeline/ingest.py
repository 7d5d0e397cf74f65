"""``index_source``: make a collection reflect a source, re-embedding only what changed.

The CLI and the Prefect flows both call this. A run: replays shards an interrupted run wrote but
did not apply, crawls the source, plans against the catalog (new / changed / renamed / deleted /
unchanged), then executes the plan shard by shard. The model is loaded only when something needs
embedding. Asking for another model than the collection's builds a new collection version from
every source the collection has seen; the collection name switches to it only when it is complete.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from ..schemas.config import Settings
from ..schemas.state import CollectionState, CollectionVersion, LabelConfig, RunSummary, SourceSpec
from .apply import collection_spec, replay_unapplied, shard_log
from .embed.model import Embedder, ModelSpec
from .embed.stage_timer import stage
from .errors import IndexBusyError
from .execute import Committer, PlanExecutor, ProgressReporter, RunCounts
from .index.open_store import open_store, physical_collection_name, validate_collection_name
from .index.store import VectorStore
from .io.catalog import Catalog, load_catalog, write_catalog
from .io.state_file import edit_state, read_state
from .plan import ChangePlan, plan_changes
from .sources.local import crawl_local

if TYPE_CHECKING:
    from .text_model import TextEmbedder, TextModelInfo

log = logging.getLogger(__name__)

__all__ = ["IndexReport", "IndexRequest", "ProgressReporter", "index_source", "ingest_lock"]


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """What to index and how (flags of ``mmindex index``)."""

    source: Path
    collection: str
    model: ModelSpec | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    source_id: str | None = None
    dry_run: bool = False
    retry_failed: bool = False
    delete_missing: bool = True
    labels: LabelConfig | None = None

    def resolved_source_id(self) -> str:
        """The source id item keys start with (the crawler's default: the folder's real path)."""
        return self.source_id or self.source.expanduser().resolve().as_posix()


@dataclass(slots=True)
class IndexReport:
    """What a run did (or, with ``dry_run``, would do)."""

    collection: str
    embedder_id: str
    items_seen: int = 0
    plan: dict[str, int] = field(default_factory=dict)
    counts: RunCounts = field(default_factory=RunCounts)
    seconds: float = 0.0
    dry_run: bool = False
    migrated_to: str | None = None
    replayed_shards: int = 0
    labeled: int = 0

    @property
    def items_per_second(self) -> float:
        return self.items_seen / self.seconds if self.seconds > 0 else 0.0

    def add_plan(self, plan: ChangePlan) -> None:
        for name, value in plan.counts().items():
            self.plan[name] = self.plan.get(name, 0) + value


def ingest_lock(settings: Settings, collection: str) -> FileLock:
    """The lock that makes ingests into one collection mutually exclusive (across processes)."""
    locks = settings.root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{collection}.ingest.lock"))


def _explicit_model(request: IndexRequest, settings: Settings) -> ModelSpec | None:
    if request.model is not None:
        return request.model
    if {"model", "pretrained"} & settings.model_fields_set:
        return ModelSpec(settings.model, settings.pretrained)
    return None


class _Session:
    """Lazily opened store and lazily loaded models, shared by every source of a run."""

    def __init__(self, settings: Settings, spec: ModelSpec, embedder: Embedder | None,
                 text_model: str | None = None) -> None:
        self.settings = settings
        self.spec = spec
        self._embedder = embedder
        self._store: VectorStore | None = None
        self.text_model = text_model

    def text_embedder(self) -> TextEmbedder:
        from .text_model import load_text_embedder  # noqa: PLC0415

        return load_text_embedder(self.text_model or "", self.settings.device)

    def text_info(self) -> TextModelInfo | None:
        return None if self.text_model is None else self.text_embedder().info

    def store(self) -> VectorStore:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def embedder(self) -> Embedder:
        if self._embedder is None:
            from .embed.model import load_embedder  # noqa: PLC0415

            self._embedder = load_embedder(self.spec, self.settings.device, self.settings.precision)
        return self._embedder

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        self.close_store()


def _new_version(collection: str, embedder: Embedder, text: TextModelInfo | None = None) -> CollectionVersion:
    if text is None:
        return CollectionVersion(
            physical_name=physical_collection_name(collection, embedder.embedder_id),
            embedder_id=embedder.embedder_id,
            model=embedder.spec.name,
            pretrained=embedder.spec.pretrained,
            dim=embedder.dim,
            created_at=datetime.now(UTC),
        )
    from .sparse import SPARSE_ENCODER_ID  # noqa: PLC0415

    identity = f"{embedder.embedder_id}|{text.embedder_id}|{SPARSE_ENCODER_ID}"
    return CollectionVersion(
        physical_name=physical_collection_name(collection, identity),
        embedder_id=embedder.embedder_id,
        model=embedder.spec.name,
        pretrained=embedder.spec.pretrained,
        dim=embedder.dim,
        created_at=datetime.now(UTC),
        text_model=text.name,
        text_embedder_id=text.embedder_id,
        text_dim=text.dim,
        sparse_encoder_id=SPARSE_ENCODER_ID,
    )


def _same_tagged_model(spec: ModelSpec, version: CollectionVersion) -> bool:
    """Same architecture and weights tag as the version (a tag names fixed weights; files may change)."""
    from .embed.identity import LOCAL_DIR_PREFIX  # noqa: PLC0415

    is_file = spec.pretrained is not None and Path(spec.pretrained).expanduser().exists()
    return (
        not spec.name.startswith(LOCAL_DIR_PREFIX) and not is_file
        and (spec.name, spec.pretrained) == (version.model, version.pretrained)
    )


def _target_version(session: _Session, collection: str, explicit: ModelSpec | None) -> tuple[CollectionVersion, bool]:
    """The version this run writes to, and whether it is a migration (not yet the current one)."""
    from .embed.identity import expected_embedder_id  # noqa: PLC0415

    existing = read_state(session.settings.root).collections.get(collection)
    if existing is None:
        version = _new_version(collection, session.embedder(), session.text_info())
        with edit_state(session.settings.root) as state:
            state.collections.setdefault(collection, CollectionState(name=collection, current=version))
            version = state.collections[collection].current
        return version, False
    if explicit is None or _same_tagged_model(explicit, existing.current) \
            or expected_embedder_id(explicit.name, explicit.pretrained) == existing.current.embedder_id:
        return existing.current, False
    wanted = expected_embedder_id(explicit.name, explicit.pretrained)
    if existing.building is not None and existing.building.embedder_id == wanted:
        return existing.building, True
    version = _new_version(collection, session.embedder(), session.text_info())
    with edit_state(session.settings.root) as state:
        entry = state.collections[collection]
        entry.building = entry.version(version.physical_name) or version
        entry.previous = [old for old in entry.previous if old.physical_name != version.physical_name]
        version = entry.building
    return version, True


def _ensure_store_collection(session: _Session, version: CollectionVersion) -> None:
    store = session.store()
    if not store.collection_exists(version.physical_name):
        store.create_collection(version.physical_name, collection_spec(version))


def _needs_replay(settings: Settings, collection: str, version: CollectionVersion) -> bool:
    shards = shard_log(settings.root, collection, version).shards()
    return bool(shards) and shards[-1].seq > version.applied_through


def _crawl_and_plan(
    request: IndexRequest, source: Path, source_id: str, spec: SourceSpec, catalog_of: Callable[[], Catalog], report: IndexReport
) -> tuple[Catalog, ChangePlan]:
    """Crawl one source and plan it against the catalog (loaded after the crawl, timed as planning)."""
    with stage("crawl"):
        refs = list(crawl_local(source, source_id=source_id, include=spec.include, exclude=spec.exclude,
                                include_hidden=spec.include_hidden))
    report.items_seen += len(refs)
    with stage("plan"):
        catalog = catalog_of()
        plan = plan_changes(refs, catalog, source_id, retry_failed=request.retry_failed,
                            delete_missing=request.delete_missing)
    report.add_plan(plan)
    return catalog, plan


def _index_one_source(
    session: _Session,
    request: IndexRequest,
    source: Path,
    source_id: str,
    spec: SourceSpec,
    version: CollectionVersion,
    report: IndexReport,
    progress: ProgressReporter | None,
) -> None:
    settings = session.settings
    log_ = shard_log(settings.root, request.collection, version)
    catalog, plan = _crawl_and_plan(request, source, source_id, spec, lambda: load_catalog(log_), report)
    if request.dry_run or plan.is_noop:
        return
    if progress is not None:
        total = len(plan.to_embed) + len(plan.reuse) + len(plan.metadata_changed) + len(plan.restat) + len(plan.deleted)
        progress.start(total)
    committer = Committer(settings.root, request.collection, version, log_, session.store,
                          settings.shard_size, report.counts, progress)
    PlanExecutor(plan, catalog, committer, session.embedder, settings.batch_size, settings.workers,
                 settings.max_image_pixels, session.text_embedder if version.text_embedder_id else None).run()
    write_catalog(log_)


def index_source(
    request: IndexRequest,
    settings: Settings,
    progress: ProgressReporter | None = None,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Make the collection reflect the source; see the module docstring for the steps."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    collection = validate_collection_name(request.collection)
    source_id = request.resolved_source_id()
    this_source = SourceSpec(path=request.source.expanduser().resolve().as_posix(), include=list(request.include),
                             exclude=list(request.exclude), include_hidden=request.include_hidden)
    explicit = _explicit_model(request, settings)
    existing = read_state(settings.root).collections.get(collection)
    spec = explicit or (ModelSpec(existing.current.model, existing.current.pretrained) if existing else None) \
        or ModelSpec(settings.model, settings.pretrained)
    if embedder is not None:
        spec = embedder.spec
        explicit = explicit or spec
    lock = ingest_lock(settings, collection)
    if not request.dry_run:
        try:
            lock.acquire(timeout=0)
        except Timeout as exc:
            raise IndexBusyError(f"another ingest into collection {collection!r} is running (lock {lock.lock_file})") from exc
    session = _Session(settings, spec, embedder, _text_model(settings, existing, collection))
    try:
        if request.dry_run and existing is None:
            report = IndexReport(collection, "(new collection)", dry_run=True)
            _crawl_and_plan(request, Path(this_source.path), source_id, this_source, Catalog.empty, report)
            return report
        version, migrating = _target_version(session, collection, explicit)
        report = IndexReport(collection, version.embedder_id, dry_run=request.dry_run)
        if not request.dry_run:
            _ensure_store_collection(session, version)  # queryable even while (or if) empty
            if _needs_replay(settings, collection, version):
                report.replayed_shards = replay_unapplied(settings, session.store(), collection, version)
        sources = {source_id: this_source}
        if migrating:
            recorded = read_state(settings.root).collections[collection].sources
            sources = {**recorded, source_id: this_source}
        for sid, spec_ in sources.items():
            _index_one_source(session, request, Path(spec_.path), sid, spec_, version, report, progress)
        if not request.dry_run:
            if report.counts.shards_written:
                with stage("index build"):
                    session.store().optimize(version.physical_name)
            report.seconds = time.perf_counter() - started
            _record_run(settings, collection, source_id, this_source, report, started_at, version if migrating else None)
            report.migrated_to = version.physical_name if migrating else None
            _label_written_images(session, collection, request.labels, report)
        report.seconds = time.perf_counter() - started
        return report
    finally:
        session.close()
        if lock.is_locked:
            lock.release()


def _text_model(settings: Settings, existing: CollectionState | None, collection: str) -> str | None:
    """The text model of the run: the collection's own, or the configured one for a new collection.

    Asking an existing collection for another text model (or none) is refused: vectors of two
    text models must never be mixed in one collection (``text_model.ensure_text_model``).
    """
    from .text_model import ensure_text_model, wants_text_model  # noqa: PLC0415

    if existing is None:
        return settings.text_model if wants_text_model(settings.text_model) else None
    asked = settings.text_model if "text_model" in settings.model_fields_set else None
    current = existing.current
    ensure_text_model(current.text_model, current.text_embedder_id, asked, collection)
    return current.text_model if current.text_embedder_id else None


def _label_written_images(session: _Session, collection: str, requested: LabelConfig | None, report: IndexReport) -> None:
    """Zero-shot label images with the requested or the remembered labels.

    Labels live in the Qdrant payload only, so the points this run wrote are labeled again.
    Labels asked for that differ from the remembered ones are applied to every image.
    """
    remembered = read_state(session.settings.root).collections[collection].labels
    config = requested or remembered
    if config is None:
        return
    only_keys: list[str] | None = report.counts.written_image_keys
    if requested is not None and requested != remembered:
        only_keys = None
    if only_keys == []:
        return
    from .labels import apply_labels  # noqa: PLC0415

    session.close_store()  # labeling opens the store itself
    report.labeled = apply_labels(
        session.settings, collection, config.labels, config.templates, config.threshold, only_keys,
        scoring=config.scoring,  # type: ignore[arg-type]
        embedder=session.embedder(),
    ).labeled


def _record_run(
    settings: Settings,
    collection: str,
    source_id: str,
    source: SourceSpec,
    report: IndexReport,
    started_at: datetime,
    completed_migration: CollectionVersion | None,
) -> None:
    counts = report.counts
    with edit_state(settings.root) as state:
        entry = state.collections[collection]
        entry.sources[source_id] = source
        if completed_migration is not None and entry.building is not None:
            entry.previous = [old for old in entry.previous if old.physical_name != entry.building.physical_name]
            entry.previous.append(entry.current)
            entry.current, entry.building = entry.building, None
        entry.last_run = RunSummary(
            started_at=started_at,
            seconds=report.seconds,
            items_seen=report.items_seen,
            new=report.plan.get("new", 0),
            changed=report.plan.get("changed", 0),
            renamed=report.plan.get("renamed", 0),
            deleted=report.plan.get("deleted", 0),
            unchanged=report.plan.get("unchanged", 0),
            retried=report.plan.get("retried", 0),
            embedded=len(counts.embedded_keys),
            reused=counts.reused,
            images=counts.images,
            text_chunks=counts.text_chunks,
            failed=counts.failed,
            points_upserted=counts.points_upserted,
            points_deleted=counts.points_deleted,
            shards_written=counts.shards_written,
        )
