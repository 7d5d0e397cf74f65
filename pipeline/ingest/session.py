"""Processing a planned run: ``RunSession`` prepares, commits and finalizes its work units.

A session is opened for one run plan, in the process that planned it or on any worker (it needs
only the root, the collection and the run id): it reads the run plan and the collection's
version once, and holds the collection handle (store and models, opened on first use) for every
unit it processes. Processing a unit is idempotent: a unit that is done is not redone, and a unit
whose shard was written before a crash is only applied again, so each shard is written exactly
once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from mmindex.pipeline.collection import Collection, EmbedderLoader, collection_state
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.errors import CollectionNotFoundError, IncompleteRunError
from mmindex.pipeline.ingest.apply import mark_applied
from mmindex.pipeline.ingest.execute import Committer, ProgressReporter, UnitExecutor
from mmindex.pipeline.ingest.units import IndexReport, RunDir, RunPlan, UnitOutcome, worker_name
from mmindex.pipeline.io.catalog import write_catalog
from mmindex.pipeline.io.root import RemotePath
from mmindex.pipeline.io.shards import ShardRef
from mmindex.pipeline.io.space import SpaceGuard
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.timing import stage
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionVersion, LabelConfig, RunSummary

log = logging.getLogger(__name__)


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
            committer.reapply(self.written, self.embedded_keys)
            if committer.progress is not None:
                committer.progress.advance(self.items)
        else:
            committer.flush()
        shard = self.written or committer.written
        tally = committer.tally
        outcome = UnitOutcome(seq=self.seq, shard=None if shard is None else shard.path.name, worker=worker_name(),
                              seconds=time.perf_counter() - self.started, reapplied=self.written is not None,
                              counts=tally.counts, embedded_keys=tally.embedded_keys,
                              written_image_keys=tally.written_image_keys, failures=tally.failures)
        self.run_dir.write_outcome(outcome)
        return outcome


class RunSession:
    """The units of one planned run, processed here: ``prepare``/``process`` each, then ``finalize``.

    The model is the version's own, loaded on first use (by ``loader`` when given, e.g. a
    per-process cache) unless ``embedder`` is given; it is checked to be the version's.
    """

    def __init__(
        self, settings: Settings, collection: str, run_id: str, *, embedder: Embedder | None = None,
        loader: EmbedderLoader | None = None,
    ) -> None:
        self.settings = settings
        self.run_dir = RunDir(settings.root, collection, run_id)
        self.plan: RunPlan = self.run_dir.read_plan()
        entry = collection_state(settings, collection)
        version = entry.version(self.plan.physical_name)
        if version is None:
            raise CollectionNotFoundError(
                f"collection {collection!r} has no version {self.plan.physical_name!r} (run {run_id})"
            )
        self.collection = Collection(settings, entry, version, embedder=embedder, loader=loader)
        root = settings.root
        self.space = None if isinstance(root, RemotePath) else SpaceGuard(root, store_on_root=not settings.qdrant_url)

    @property
    def version(self) -> CollectionVersion:
        return self.collection.version

    def close(self) -> None:
        self.collection.close()

    def __enter__(self) -> RunSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def prepare(self, seq: int, progress: ProgressReporter | None = None) -> PreparedUnit:
        """The first half of ``process``: decode and embed the unit's items (nothing is published:
        a large unit's row groups go to its shard's temporary file).
        A unit that is done is not redone; a unit whose shard exists is only re-applied by ``commit``."""
        started = time.perf_counter()
        done = self.run_dir.read_outcome(seq)
        if done is not None:
            log.info("unit %d of run %s was already done by %s", seq, self.plan.run_id, done.worker)
            return PreparedUnit(self.run_dir, seq, started, 0, [], done=done)
        unit = self.run_dir.read_unit(seq)
        collection = self.collection
        log_ = collection.shard_log
        committer = Committer(self.settings.root, collection.name, self.version, log_, collection.store, seq,
                              progress=progress, space=self.space)
        prepared = PreparedUnit(self.run_dir, seq, started, unit.items, [ref.key for ref in unit.embed], committer,
                                written=log_.find(seq))
        if prepared.written is None:
            executor = UnitExecutor(unit, committer, collection.embedder, self.settings.batch_size, self.settings.workers,
                                    self.settings.image_limits,
                                    collection.text_embedder if collection.has_text_model else None,
                                    self.settings.max_document_bytes,
                                    sources={**collection.entry.sources, self.plan.source_id: self.plan.source})
            try:
                executor.prepare()
            except BaseException:
                committer.abort()  # row groups written so far: a temporary file, removed
                raise
        return prepared

    def process(self, seq: int, progress: ProgressReporter | None = None) -> UnitOutcome:
        """One work unit: decode, embed, write its shard under its sequence number, apply it to the
        store (idempotent, see the module docstring)."""
        return self.prepare(seq, progress).commit()

    def finalize(self) -> IndexReport:
        """After every unit is done: move the applied marker past the run's shards, materialize
        the catalog, build the index, record the run (and switch a completed migration), label."""
        plan, version = self.plan, self.version
        outcomes = self.run_dir.read_outcomes(plan.seqs)
        missing = [seq for seq in plan.seqs if seq not in outcomes]
        if missing:
            raise IncompleteRunError(
                f"run {plan.run_id} of {plan.collection!r} cannot be finalized: unit(s) {missing} are not done"
            )
        report = IndexReport(collection=plan.collection, embedder_id=plan.embedder_id, counts=plan.counts,
                             replayed_shards=plan.replayed_shards)
        for seq in plan.seqs:
            report.add(outcomes[seq])
        if plan.seqs:
            mark_applied(self.settings.root, plan.collection, version.physical_name, max(plan.seqs))
            write_catalog(self.collection.shard_log)
        if report.counts.shards_written:
            with stage("index build"):
                self.collection.store().optimize(version.physical_name)
        report.seconds = (datetime.now(UTC) - plan.started_at).total_seconds()
        remembered = self._record(report)
        report.migrated_to = version.physical_name if plan.migrating else None
        self._label_written_images(plan.labels, remembered, report)
        report.seconds = (datetime.now(UTC) - plan.started_at).total_seconds()
        self.run_dir.finish()
        return report

    def _record(self, report: IndexReport) -> LabelConfig | None:
        """Record the run (its source, its counts as they are) and switch a completed migration;
        returns the labels the collection remembers."""
        plan = self.plan
        with edit_state(self.settings.root) as state:
            entry = state.collections[plan.collection]
            entry.sources[plan.source_id] = plan.source
            if plan.migrating and entry.building is not None:
                entry.previous = [old for old in entry.previous if old.physical_name != entry.building.physical_name]
                entry.previous.append(entry.current)
                entry.current, entry.building = entry.building, None
            entry.last_run = RunSummary.of(report.counts, plan.started_at, report.seconds)
            return entry.labels

    def _label_written_images(
        self, requested: LabelConfig | None, remembered: LabelConfig | None, report: IndexReport
    ) -> None:
        """Zero-shot label images with the requested or the remembered labels.

        Labels live in the Qdrant payload only, so the points this run wrote are labeled again.
        Labels asked for that differ from the remembered ones are applied to every image.
        """
        config = requested or remembered
        if config is None:
            return
        only_keys: list[str] | None = report.written_image_keys
        if requested is not None and requested != remembered:
            only_keys = None
        if only_keys == []:
            return
        from mmindex.pipeline.search.labels import LabelSpec, label_collection, remember_labels

        spec = LabelSpec(tuple(config.labels), tuple(config.templates), config.threshold, config.scoring)
        report.labeled = label_collection(self.collection, spec, only_keys).labeled
        remember_labels(self.settings, self.plan.collection, spec)
