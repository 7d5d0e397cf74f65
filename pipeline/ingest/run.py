"""``index_source``: make a collection reflect a source, re-embedding only what changed.

The CLI, the API and the Prefect flows call these. A run has three steps: ``plan_run`` replays
shards an interrupted run wrote but did not apply, crawls the source, plans against the catalog
(new / changed / renamed / deleted / unchanged) and writes the run plan, one work unit per
shard; a ``RunSession`` processes the units (here, or one per Prefect task) and finalizes the run.
The model is loaded only when something needs embedding. Asking for another model than the
collection's builds a new collection version from every source the collection has seen
(``ingest/versions.py``); the collection name switches to it only when it is complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from mmindex.pipeline.collection import Collection, EmbedderLoader, load_model
from mmindex.pipeline.embed.chunking import CONTEXT_SCHEMES
from mmindex.pipeline.embed.model import Embedder, ModelSpec
from mmindex.pipeline.errors import ConfigError, IndexBusyError
from mmindex.pipeline.ingest.apply import collection_spec, discard_partial_shards, replay_unapplied
from mmindex.pipeline.ingest.commits import BackgroundCommits
from mmindex.pipeline.ingest.execute import ProgressReporter
from mmindex.pipeline.ingest.plan import PlannedItems, plan_changes
from mmindex.pipeline.ingest.session import RunSession
from mmindex.pipeline.ingest.units import IndexReport, RunDir, RunPlan, UnitWriter, prune_runs
from mmindex.pipeline.ingest.versions import is_current_model, requested_model, run_text_model, target_version
from mmindex.pipeline.io.catalog import Catalog, load_catalog
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import ensure_private_root, remove_tree
from mmindex.pipeline.io.state_file import read_state
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.local import resolve_source_root
from mmindex.pipeline.sources.resolve import SourceOptions, open_source, source_spec
from mmindex.pipeline.store.open_store import require_store_for_root, validate_collection_name
from mmindex.pipeline.timing import stage
from mmindex.schemas.config import Settings
from mmindex.schemas.state import LabelConfig, RunCounts, SourceSpec

log = logging.getLogger(__name__)

__all__ = [
    "IndexReport", "IndexRequest", "PlannedRun", "ProgressReporter", "RunSession", "holding_ingest_lock",
    "index_source", "ingest_lock", "label_config", "plan_run", "preflight",
]


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """What to index and how (flags of ``mmindex index``)."""

    source: str | os.PathLike[str]
    collection: str
    model: ModelSpec | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    source_id: str | None = None
    dry_run: bool = False
    retry_failed: bool = False
    recheck: bool = False  # revalidate unchanged manifest rows' URLs (``ingest/recheck.py``)
    delete_missing: bool = True
    labels: LabelConfig | None = None
    source_options: SourceOptions | None = None  # --format, a manifest's columns, --fetch-* (``source_options``)
    # The chunk context scheme (``chunking.CONTEXT_SCHEMES``); None: the collection's own, or the
    # default for a new one. Another scheme than an existing collection's own builds a new version.
    chunk_context: str | None = None

    def spec(self) -> SourceSpec:
        """What the collection remembers of this source (kind chosen from SOURCE unless forced)."""
        return source_spec(os.fspath(self.source), self.source_options, include=self.include, exclude=self.exclude,
                           include_hidden=self.include_hidden)

    def resolved_source_id(self) -> str:
        """The source id item keys start with (default: the folder's real path, the manifest's location)."""
        return self.source_id or self.spec().path


def label_config(labels: str | None, templates: list[str] | None, threshold: float | None) -> LabelConfig | None:
    """The ``--labels`` flags of ``index`` (and the ingest flow's parameters) as a label configuration."""
    if not labels:
        return None
    from mmindex.pipeline.search.labels import DEFAULT_TEMPLATES, LabelSpec, split_labels

    spec = LabelSpec(split_labels(labels), tuple(templates or DEFAULT_TEMPLATES), threshold)
    return LabelConfig(labels=list(spec.labels), templates=list(spec.templates), threshold=spec.threshold, scoring=spec.scoring)


def ingest_lock(settings: Settings, collection: str) -> FileLock:
    """The lock that makes ingests into one collection mutually exclusive (across processes;
    where it lives: ``IndexPaths.ingest_lock_file``)."""
    path = IndexPaths(settings.root).ingest_lock_file(collection)
    ensure_private_root(settings.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


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


def preflight(request: IndexRequest, settings: Settings, embedder: Embedder | None = None, embeds_here: bool = True) -> None:
    """Check everything a run can check before it touches the index root or loads a model: the
    collection name, the store for the root, the source (a folder must exist; a manifest, prefix or
    WebDataset source is checked when it is opened) and, when this process will need the model,
    that its weights and device can be had: planning needs it for a new collection or another model
    than the current one; embedding (``embeds_here``; false for a flow whose shards run on workers,
    whose own device settings decide) when a model was asked for. The CLI and the flow call it before
    the ingest lock: a run that fails here leaves the root as it was (no lock file, no state entry,
    no store collection)."""
    validate_collection_name(request.collection)
    if request.chunk_context is not None and request.chunk_context not in CONTEXT_SCHEMES:
        raise ConfigError(f"unknown --chunk-context {request.chunk_context!r}: use one of {', '.join(CONTEXT_SCHEMES)}")
    require_store_for_root(settings)
    source = request.spec()
    if source.kind == "folder":
        resolve_source_root(Path(source.path))
    if request.dry_run or embedder is not None:
        return
    existing = read_state(settings.root).collections.get(request.collection)
    model, explicit = requested_model(request.model, settings, existing, embedder)
    # Planning loads the model for a new collection or another model than the current one.
    if existing is None or (explicit is not None and (embeds_here or not is_current_model(explicit, existing.current))):
        from mmindex.pipeline.embed.model import check_device
        from mmindex.pipeline.embed.weights import resolve_weights

        resolve_weights(model.name, model.pretrained)
        check_device(settings.device)


def _crawl_and_plan(
    request: IndexRequest, source_id: str, spec: SourceSpec, catalog: Collection | None, report: IndexReport,
    units: UnitWriter | None,
) -> None:
    """Crawl one source and plan it against the version's catalog (an empty one for a collection
    that does not exist yet), streaming: each part of the plan goes into ``units`` (None for a
    dry run) as soon as it is made, and only its counts (and a dry run's paths) stay behind."""
    with stage("plan"):
        loaded = Catalog.empty() if catalog is None else load_catalog(catalog.shard_log)
    crawled = _Counted(open_source(spec, source_id).items())
    for part in plan_changes(crawled, loaded, source_id, retry_failed=request.retry_failed,
                             delete_missing=request.delete_missing, recheck=request.recheck and spec.kind == "manifest"):
        report.counts += part.counts()
        if report.dry_run:
            report.items = report.items or PlannedItems()
            report.items.extend(part.items())
        if units is not None:
            units.add(part)
    report.counts += RunCounts(items_seen=crawled.count)
    if units is not None:
        units.end_source()


class _Counted(Iterator[ItemRef]):
    """The crawl, counting the items it yields."""

    def __init__(self, items: Iterator[ItemRef]) -> None:
        self.items, self.count = items, 0

    def __next__(self) -> ItemRef:
        ref = next(self.items)
        self.count += 1
        return ref


def _new_run_id() -> str:
    """Sortable by time, unique across processes."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


@dataclass(slots=True)
class PlannedRun:
    """What ``plan_run`` returns: the report so far, the run plan (None for a dry run), and the
    model if planning had to load it (a new collection's version is named after the model), so
    that the units of an in-process run embed with it instead of loading it a second time."""

    report: IndexReport
    run: RunPlan | None
    embedder: Embedder | None = None


class _RunModel:
    """The model a run asks for, loaded only if planning needs it (to name a new version)."""

    def __init__(
        self, spec: ModelSpec, settings: Settings, embedder: Embedder | None, loader: EmbedderLoader | None
    ) -> None:
        self.spec, self.settings, self.loaded, self.loader = spec, settings, embedder, loader

    def __call__(self) -> Embedder:
        if self.loaded is None:
            self.loaded = load_model(self.spec, self.settings, self.loader)
        return self.loaded


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
    this_source = request.spec()
    existing = read_state(settings.root).collections.get(collection)
    spec, explicit = requested_model(request.model, settings, existing, embedder)
    model = _RunModel(spec, settings, embedder, loader)
    text_model = run_text_model(settings, existing, collection)
    if request.dry_run and existing is None:
        report = IndexReport(collection=collection, embedder_id="(new collection)", dry_run=True)
        _crawl_and_plan(request, source_id, this_source, None, report, None)
        return PlannedRun(report, None)
    entry, version, migrating = target_version(settings, collection, existing, explicit, model, text_model,
                                               request.chunk_context)
    report = IndexReport(collection=collection, embedder_id=version.embedder_id, dry_run=request.dry_run)
    with Collection(settings, entry, version) as target:
        if not request.dry_run:
            # Cheap (sizes and Parquet footers; `verify` hashes every byte), so a no-op re-run stays fast.
            target.shard_log.require_intact(full=False, outcome="nothing indexed")
            if discard_partial_shards(target.shard_log):  # a killed run's shard, begun and never published
                log.warning("removed the unpublished shard file(s) of an interrupted run")
            store = target.store()
            if not store.collection_exists(version.physical_name):  # queryable even while (or if) empty
                store.create_collection(version.physical_name, collection_spec(version))
            shards = target.shard_log.shards()
            if shards and shards[-1].seq > version.applied_through:
                report.replayed_shards = replay_unapplied(settings, store, collection, version)
        sources = {**entry.sources, source_id: this_source} if migrating else {source_id: this_source}
        run_id = _new_run_id()
        run_dir = RunDir(settings.root, collection, run_id)
        units = None
        if not request.dry_run:
            prune_runs(settings.root, collection)
            units = UnitWriter(run_dir, max(target.shard_log.last_seq(), version.applied_through) + 1,
                               settings.shard_size)
        try:
            for sid, source in sources.items():
                _crawl_and_plan(request, sid, source, target, report, units)
        except BaseException:
            if units is not None:  # units already published by a plan that did not finish
                remove_tree(run_dir.path)
            raise
    if units is None:
        return PlannedRun(report, None)
    run = RunPlan(
        run_id=run_id, collection=collection, physical_name=version.physical_name,
        embedder_id=version.embedder_id, started_at=started_at, source_id=source_id, source=this_source,
        migrating=migrating, counts=report.counts, seqs=units.seqs, unit_items=units.unit_items,
        replayed_shards=report.replayed_shards, labels=request.labels,
    )
    run_dir.write_plan(run)
    return PlannedRun(report, run, model.loaded)


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
    preflight(request, settings, embedder)  # before the lock: a run that cannot start leaves no lock file
    with holding_ingest_lock(settings, request.collection):
        planned = plan_run(request, settings, embedder)
        run = planned.run
        if run is None:
            return planned.report
        with RunSession(settings, run.collection, run.run_id, embedder=embedder or planned.embedder) as session:
            if progress is not None and run.seqs:
                progress.start(sum(run.unit_items))
            with BackgroundCommits() as commits:  # unit k is written and upserted while unit k+1 embeds
                for seq in run.seqs:
                    commits.submit(session.prepare(seq, progress).commit)
            return session.finalize()
