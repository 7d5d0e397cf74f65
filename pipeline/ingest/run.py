"""``index_source``: make a collection reflect a source, re-embedding only what changed.

The CLI and the Prefect flows both call this. A run: replays shards an interrupted run wrote but
did not apply, crawls the source, plans against the catalog (new / changed / renamed / deleted /
unchanged), then executes the plan shard by shard. The model is loaded only when something needs
embedding. Asking for another model than the collection's builds a new collection version from
every source the collection has seen; the collection name switches to it only when it is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from mmindex.pipeline.embed.model import Embedder, ModelSpec
from mmindex.pipeline.errors import CollectionNotFoundError, IncompleteRunError, IndexBusyError, SchemaMismatchError
from mmindex.pipeline.ingest.apply import collection_spec, mark_applied, replay_unapplied, shard_log
from mmindex.pipeline.ingest.commits import BackgroundCommits
from mmindex.pipeline.ingest.execute import Committer, PlanExecutor, ProgressReporter, RunCounts
from mmindex.pipeline.ingest.plan import ChangePlan, plan_changes
from mmindex.pipeline.ingest.units import ReuseJob, RunDir, RunPlan, UnitOutcome, WorkUnit, prune_runs, worker_name
from mmindex.pipeline.io.catalog import Catalog, CatalogItem, load_catalog, write_catalog
from mmindex.pipeline.io.root import is_remote
from mmindex.pipeline.io.shards import ShardRef
from mmindex.pipeline.io.state_file import edit_state, read_state
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.local import crawl_local
from mmindex.pipeline.store.open_store import open_store, physical_collection_name, require_store_for_root, validate_collection_name
from mmindex.pipeline.store.store import VectorStore
from mmindex.pipeline.timing import stage
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionState, CollectionVersion, LabelConfig, RunSummary, SourceSpec

if TYPE_CHECKING:
    from mmindex.pipeline.embed.text_model import TextEmbedder, TextModelInfo

log = logging.getLogger(__name__)

__all__ = [
    "IndexReport", "IndexRequest", "PlannedRun", "ProgressReporter", "finalize_run", "holding_ingest_lock",
    "index_source", "ingest_lock", "open_unit_session", "plan_run", "process_unit",
]


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


def label_config(labels: str | None, templates: list[str] | None, threshold: float | None) -> LabelConfig | None:
    """The ``--labels`` flags of ``index`` (and the ingest flow's parameters) as a label configuration."""
    if not labels:
        return None
    from mmindex.pipeline.search.labels import DEFAULT_TEMPLATES, LabelSpec, split_labels

    spec = LabelSpec(split_labels(labels), tuple(templates or DEFAULT_TEMPLATES), threshold)
    return LabelConfig(labels=list(spec.labels), templates=list(spec.templates), threshold=spec.threshold, scoring=spec.scoring)


def ingest_lock(settings: Settings, collection: str) -> FileLock:
    """The lock that makes ingests into one collection mutually exclusive (across processes).

    A local root holds it in ``<root>/locks``. An object store cannot hold a file lock: for such
    a root it is a lock in this machine's cache folder (named after the root's URL), which keeps
    ingests from this machine apart; across machines the deployments' concurrency limit of 1
    does (README, "Deploying with Prefect")."""
    if is_remote(settings.root):
        from platformdirs import user_cache_path

        digest = hashlib.sha256(str(settings.root).encode("utf-8")).hexdigest()[:16]
        locks = user_cache_path("mmindex", appauthor=False) / "locks" / digest
    else:
        locks = settings.root / "locks"  # type: ignore[assignment]
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{collection}.ingest.lock"))


def _explicit_model(request: IndexRequest, settings: Settings) -> ModelSpec | None:
    if request.model is not None:
        return request.model
    if {"model", "pretrained"} & settings.model_fields_set:
        return ModelSpec(settings.model, settings.pretrained)
    return None


EmbedderLoader = Callable[[ModelSpec, Settings], Embedder]


class _Session:
    """Lazily opened store and lazily loaded models, shared by every source of a run."""

    def __init__(
        self, settings: Settings, spec: ModelSpec, embedder: Embedder | None, loader: EmbedderLoader | None = None,
        text_model: str | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self._embedder = embedder
        self._loader = loader
        self._store: VectorStore | None = None
        self.text_model = text_model

    def text_embedder(self) -> TextEmbedder:
        from mmindex.pipeline.embed.text_model import load_text_embedder

        return load_text_embedder(self.text_model or "", self.settings.device)

    def text_info(self) -> TextModelInfo | None:
        from mmindex.pipeline.embed.text_model import text_model_info

        return None if self.text_model is None else text_model_info(self.text_model)

    def store(self) -> VectorStore:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def embedder(self) -> Embedder:
        if self._embedder is None and self._loader is not None:
            self._embedder = self._loader(self.spec, self.settings)
        if self._embedder is None:
            from mmindex.pipeline.embed.model import load_embedder

            self._embedder = load_embedder(self.spec, self.settings.device, self.settings.precision)
        return self._embedder

    @property
    def loaded_embedder(self) -> Embedder | None:
        """The model, if this session has loaded (or was given) it; never loads it."""
        return self._embedder

    def check_embedder(self, version: CollectionVersion) -> None:
        """Refuse to embed into a version with another model than the one it was built with."""
        embedder_id = self.embedder().embedder_id
        if embedder_id != version.embedder_id:
            raise SchemaMismatchError(
                f"model {self.spec.name} ({embedder_id}) is not the model of {version.physical_name} ({version.embedder_id})"
            )

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
    from mmindex.pipeline.embed.sparse import SPARSE_ENCODER_ID

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
    from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX

    is_file = spec.pretrained is not None and Path(spec.pretrained).expanduser().exists()
    return (
        not spec.name.startswith(LOCAL_DIR_PREFIX) and not is_file
        and (spec.name, spec.pretrained) == (version.model, version.pretrained)
    )


def _target_version(session: _Session, collection: str, explicit: ModelSpec | None) -> tuple[CollectionVersion, bool]:
    """The version this run writes to, and whether it is a migration (not yet the current one)."""
    from mmindex.pipeline.embed.identity import expected_embedder_id

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


def split_into_units(plan: ChangePlan, catalog: Catalog, first_seq: int, items_per_unit: int) -> list[WorkUnit]:
    """Cut a plan into work units of at most ``items_per_unit`` items, numbered from ``first_seq``.

    Deletes and stored-vector rewrites come first, then items to embed (the executor's order), so a
    run that only deletes or renames never needs the model in most units.
    """
    jobs: list[tuple[str, object]] = [
        *(("deleted", item) for item in plan.deleted),
        *(("reuse", ReuseJob(ref, item)) for ref, item in [*plan.restat, *plan.metadata_changed]),
        *(("reuse", ReuseJob(reuse.ref, reuse.source)) for reuse in plan.reuse),
        *(("embed", ref) for ref in plan.to_embed),
    ]
    units: list[WorkUnit] = []
    for start in range(0, len(jobs), items_per_unit):
        unit = WorkUnit(seq=first_seq + len(units))
        for kind, job in jobs[start : start + items_per_unit]:
            if kind == "deleted":
                unit.deleted.append(job)  # type: ignore[arg-type]
            elif kind == "reuse":
                unit.reuse.append(job)  # type: ignore[arg-type]
            else:
                ref: ItemRef = job  # type: ignore[assignment]
                unit.embed.append(ref)
                known = catalog.get(ref.key)
                if known is not None:
                    unit.previous.append(known)
        units.append(unit)
    return units


def _new_run_id() -> str:
    """Sortable by time, unique across processes."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def _spec_for(request: IndexRequest, settings: Settings, embedder: Embedder | None) -> tuple[ModelSpec, ModelSpec | None]:
    """The model this run uses, and the one the user asked for explicitly (None: the collection's own)."""
    explicit = _explicit_model(request, settings)
    existing = read_state(settings.root).collections.get(request.collection)
    spec = explicit or (ModelSpec(existing.current.model, existing.current.pretrained) if existing else None) \
        or ModelSpec(settings.model, settings.pretrained)
    if embedder is not None:
        spec = embedder.spec
        explicit = explicit or spec
    return spec, explicit


@contextlib.contextmanager
def holding_ingest_lock(settings: Settings, collection: str) -> Iterator[None]:
    """Hold the collection's ingest lock for a whole run (plan, units, finalize), or refuse at once."""
    lock = ingest_lock(settings, validate_collection_name(collection))
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise IndexBusyError(f"another ingest into collection {collection!r} is running (lock {lock.lock_file})") from exc
    try:
        yield
    finally:
        lock.release()


@dataclass(slots=True)
class PlannedRun:
    """What ``plan_run`` returns: the report so far, the run plan (None for a dry run), and the
    model if planning had to load it (a new collection's version is named after the model), so
    that the units of an in-process run embed with it instead of loading it a second time."""

    report: IndexReport
    run: RunPlan | None
    embedder: Embedder | None = None


def plan_run(
    request: IndexRequest, settings: Settings, embedder: Embedder | None = None, loader: EmbedderLoader | None = None
) -> PlannedRun:
    """Step 1 of a run (the caller holds the ingest lock unless it is a dry run).

    Picks the collection version, re-applies shards an interrupted run wrote but did not apply,
    crawls and plans every source of the run, and writes the run plan: one work unit per shard,
    each with its sequence number assigned here.
    """
    started_at = datetime.now(UTC)
    collection = validate_collection_name(request.collection)
    require_store_for_root(settings)
    source_id = request.resolved_source_id()
    this_source = SourceSpec(path=request.source.expanduser().resolve().as_posix(), include=list(request.include),
                             exclude=list(request.exclude), include_hidden=request.include_hidden)
    spec, explicit = _spec_for(request, settings, embedder)
    existing = read_state(settings.root).collections.get(collection)
    session = _Session(settings, spec, embedder, loader, _text_model(settings, existing, collection))
    try:
        if request.dry_run and existing is None:
            report = IndexReport(collection, "(new collection)", dry_run=True)
            _crawl_and_plan(request, Path(this_source.path), source_id, this_source, Catalog.empty, report)
            return PlannedRun(report, None)
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
        log_ = shard_log(settings.root, collection, version)
        units: list[WorkUnit] = []
        next_seq = max(log_.last_seq(), version.applied_through) + 1
        for sid, spec_ in sources.items():
            catalog, plan = _crawl_and_plan(request, Path(spec_.path), sid, spec_, lambda: load_catalog(log_), report)
            if not request.dry_run and not plan.is_noop:
                units += split_into_units(plan, catalog, next_seq + len(units), settings.shard_size)
        if request.dry_run:
            return PlannedRun(report, None)
        run = RunPlan(
            run_id=_new_run_id(), collection=collection, physical_name=version.physical_name,
            embedder_id=version.embedder_id, started_at=started_at, source_id=source_id, source=this_source,
            migrating=migrating, items_seen=report.items_seen, plan=dict(report.plan),
            seqs=[unit.seq for unit in units], unit_items=[unit.items for unit in units],
            replayed_shards=report.replayed_shards, labels=request.labels,
        )
        prune_runs(settings.root, collection)
        RunDir(settings.root, collection, run.run_id).write_plan(run, units)
        return PlannedRun(report, run, session.loaded_embedder)
    finally:
        session.close()


def _run_version(settings: Settings, run: RunPlan) -> CollectionVersion:
    entry = read_state(settings.root).collections.get(run.collection)
    version = entry.version(run.physical_name) if entry is not None else None
    if version is None:
        raise CollectionNotFoundError(f"collection {run.collection!r} has no version {run.physical_name!r} (run {run.run_id})")
    return version


def _unit_plan(unit: WorkUnit) -> ChangePlan:
    """A work unit as the executor's plan (stored-vector rewrites all take the reuse path)."""
    return ChangePlan(embed_new=list(unit.embed), restat=[(job.ref, job.stored) for job in unit.reuse],
                      deleted=list(unit.deleted))


class _Known:
    """The catalog state of a unit's embedded items (what the executor looks up)."""

    def __init__(self, items: list[CatalogItem]) -> None:
        self._items = {item.item_key: item for item in items}

    def get(self, item_key: str) -> CatalogItem | None:
        return self._items.get(item_key)


def open_unit_session(
    settings: Settings, collection: str, run_id: str, embedder: Embedder | None = None, loader: EmbedderLoader | None = None
) -> _Session:
    """A store/model session for processing units of a run (the model is the version's own; it is
    loaded on first use, by ``loader`` when given, e.g. a per-process cache)."""
    run = RunDir(settings.root, collection, run_id).read_plan()
    version = _run_version(settings, run)
    spec = embedder.spec if embedder is not None else ModelSpec(version.model, version.pretrained)
    return _Session(settings, spec, embedder, loader, version.text_model if version.text_embedder_id else None)


@dataclass(slots=True)
class PreparedUnit:
    """A work unit whose rows are ready (embedded, or found in a shard an earlier attempt wrote):
    ``commit`` writes the shard, applies it to the store and records the unit's outcome."""

    run_dir: RunDir
    seq: int
    started: float
    items: int
    embedded_keys: list[str]
    committer: Committer | None = None  # None: the unit was done before
    written: ShardRef | None = None  # the shard an earlier attempt wrote (then only re-applied)
    done: UnitOutcome | None = None

    def commit(self) -> UnitOutcome:
        """Write and apply the unit's shard, then record its outcome (the unit is done)."""
        if self.done is not None:
            return self.done
        committer = self.committer
        assert committer is not None  # noqa: S101 - set whenever done is None
        if self.written is not None:
            committer.reapply(self.written)
            committer.counts.embedded_keys = list(self.embedded_keys)
            if committer.progress is not None:
                committer.progress.advance(self.items)
        else:
            committer.flush()
        shard = self.written or committer.written
        outcome = UnitOutcome(seq=self.seq, shard=None if shard is None else shard.path.name,
                              counts=committer.counts, worker=worker_name(),
                              seconds=time.perf_counter() - self.started, reapplied=self.written is not None)
        self.run_dir.write_outcome(outcome)
        return outcome


def prepare_unit(
    session: _Session, collection: str, run_id: str, seq: int, progress: ProgressReporter | None = None
) -> PreparedUnit:
    """The first half of ``process_unit``: decode and embed the unit's items (nothing is written).
    A unit that is done is not redone; a unit whose shard exists is only re-applied by ``commit``."""
    settings = session.settings
    started = time.perf_counter()
    run_dir = RunDir(settings.root, collection, run_id)
    done = run_dir.read_outcome(seq)
    if done is not None:
        log.info("unit %d of run %s was already done by %s", seq, run_id, done.worker)
        return PreparedUnit(run_dir, seq, started, 0, [], done=done)
    run = run_dir.read_plan()
    version = _run_version(settings, run)
    unit = run_dir.read_unit(seq)
    log_ = shard_log(settings.root, collection, version)
    committer = Committer(settings.root, collection, version, log_, session.store, seq, RunCounts(), progress)
    prepared = PreparedUnit(run_dir, seq, started, unit.items, [ref.key for ref in unit.embed], committer,
                            written=log_.find(seq))
    if prepared.written is None:
        if unit.embed:
            session.check_embedder(version)
        PlanExecutor(_unit_plan(unit), _Known(unit.previous), committer, session.embedder, settings.batch_size,
                     settings.workers, settings.max_image_pixels,
                     session.text_embedder if version.text_embedder_id else None,
                     settings.max_document_bytes).prepare()
    return prepared


def process_unit(
    session: _Session, collection: str, run_id: str, seq: int, progress: ProgressReporter | None = None
) -> UnitOutcome:
    """Step 2, once per work unit: decode, embed, write the unit's shard under its sequence number,
    apply it to the store. Idempotent: a unit that is done is not redone, and a unit whose shard was
    written before a crash is only applied again, so each shard is written exactly once."""
    return prepare_unit(session, collection, run_id, seq, progress).commit()


def finalize_run(session: _Session, collection: str, run_id: str) -> IndexReport:
    """Step 3, after every unit is done: move the applied marker past the run's shards, materialize
    the catalog, build the index, record the run (and switch a completed migration), label."""
    settings = session.settings
    run_dir = RunDir(settings.root, collection, run_id)
    run = run_dir.read_plan()
    version = _run_version(settings, run)
    report = IndexReport(collection, run.embedder_id, items_seen=run.items_seen, plan=dict(run.plan),
                         replayed_shards=run.replayed_shards)
    missing = []
    for seq in run.seqs:
        outcome = run_dir.read_outcome(seq)
        if outcome is None:
            missing.append(seq)
        else:
            report.counts.merge(outcome.counts)
    if missing:
        raise IncompleteRunError(f"run {run_id} of {collection!r} cannot be finalized: unit(s) {missing} are not done")
    log_ = shard_log(settings.root, collection, version)
    if run.seqs:
        mark_applied(settings.root, collection, version.physical_name, max(run.seqs))
        write_catalog(log_)
    if report.counts.shards_written:
        with stage("index build"):
            session.store().optimize(version.physical_name)
    report.seconds = (datetime.now(UTC) - run.started_at).total_seconds()
    _record_run(settings, collection, run.source_id, run.source, report, run.started_at, version if run.migrating else None)
    report.migrated_to = version.physical_name if run.migrating else None
    _label_written_images(session, collection, run.labels, report)
    report.seconds = (datetime.now(UTC) - run.started_at).total_seconds()
    run_dir.finish()
    return report


def index_source(
    request: IndexRequest,
    settings: Settings,
    progress: ProgressReporter | None = None,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Make the collection reflect the source, in this process: plan, every unit in order, finalize.
    Each unit's commit (Parquet shard, upsert, outcome) runs on a background thread while the next
    unit is decoded and embedded; commits stay in order, one at a time (``ingest/commits.py``).
    (The Prefect ingest flow runs the same three steps as tasks; see ``flows/ingest.py``.)"""
    if request.dry_run:
        return plan_run(request, settings, embedder).report
    with holding_ingest_lock(settings, request.collection):
        planned = plan_run(request, settings, embedder)
        run = planned.run
        if run is None:
            return planned.report
        session = open_unit_session(settings, run.collection, run.run_id, embedder or planned.embedder)
        try:
            if progress is not None and run.seqs:
                progress.start(sum(run.unit_items))
            with BackgroundCommits() as commits:  # unit k is written and upserted while unit k+1 embeds
                for seq in run.seqs:
                    commits.submit(prepare_unit(session, run.collection, run.run_id, seq, progress).commit)
            return finalize_run(session, run.collection, run.run_id)
        finally:
            session.close()


def _text_model(settings: Settings, existing: CollectionState | None, collection: str) -> str | None:
    """The text model of the run: the collection's own, or the configured one for a new collection.

    Asking an existing collection for another text model (or none) is refused: vectors of two
    text models must never be mixed in one collection (``text_model.ensure_text_model``).
    """
    from mmindex.pipeline.embed.text_model import ensure_text_model, wants_text_model

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
    from mmindex.pipeline.search.labels import apply_labels

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
