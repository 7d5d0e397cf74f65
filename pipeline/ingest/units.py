"""Work units and run plans: a planned ingest cut into units of one shard each, kept on disk under
``<root>/runs/<collection>/<run_id>/`` (``IndexPaths.run_dir``).

A run plan is written once, by the planning step (which holds the collection's ingest lock):
``run.json`` (what the finalize step needs) and one ``units/<seq>.json`` per work unit (the items
of one shard). Whoever processes a unit, in this process or on a worker elsewhere, needs only
(root, collection, run id, seq). A unit that is done leaves ``done/<seq>.json`` (its counts and
which worker did it). Every file is published whole (``io.root.publish``: a temporary name and a
rename on a local root, one PUT on an object store).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import TypeAdapter

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.ingest.plan import ChangePlan, PlannedItems
from mmindex.pipeline.io.catalog import CatalogItem
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import StoragePath, publish, remove_tree
from mmindex.pipeline.sources.base import ItemRef
from mmindex.schemas.state import LabelConfig, RunCounts, SourceSpec

KEEP_FINISHED_RUNS = 20


@dataclass(frozen=True, slots=True)
class ReuseJob:
    """An item whose stored vectors are reused (renamed, copied, sidecar edited, only touched)."""

    ref: ItemRef
    stored: CatalogItem


@dataclass(slots=True)
class WorkUnit:
    """The items of one shard: what to delete, what to rewrite from stored vectors, what to embed.

    ``previous`` holds the catalog state of the embedded items that had one (their vanished
    chunks get tombstones; unchanged chunk texts reuse their vectors). ``recheck`` holds unchanged
    fetched items to revalidate (``index --recheck``): re-embedded only if their content changed.
    """

    seq: int
    deleted: list[CatalogItem] = field(default_factory=list)
    reuse: list[ReuseJob] = field(default_factory=list)
    embed: list[ItemRef] = field(default_factory=list)
    previous: list[CatalogItem] = field(default_factory=list)
    recheck: list[ReuseJob] = field(default_factory=list)

    @property
    def items(self) -> int:
        return len(self.deleted) + len(self.reuse) + len(self.embed) + len(self.recheck)


class UnitWriter:
    """Cuts a streamed plan (``plan_changes``' parts) into work units of at most ``items_per_unit``
    items, numbered from ``first_seq``, and publishes each unit as soon as it is full, so a plan
    of millions of items never holds its units at once (docs/ARCHITECTURE.md §1).

    Within a part, deletes and stored-vector rewrites come before items to embed (the executor's
    order); the last part of a source holds its deletions and renames, so a run that only deletes
    or renames never needs the model in most units. ``end_source`` closes the open unit: a unit
    holds the items of one source.
    """

    def __init__(self, run_dir: RunDir, first_seq: int, items_per_unit: int) -> None:
        self.run_dir, self.first_seq, self.items_per_unit = run_dir, first_seq, items_per_unit
        self.seqs: list[int] = []
        self.unit_items: list[int] = []
        self._open: WorkUnit | None = None

    def add(self, plan: ChangePlan) -> None:
        """Put one part's items into units."""
        for item in plan.deleted:
            self._unit().deleted.append(item)
            self._publish_if_full()
        for ref, stored in plan.stored_rewrites():
            self._unit().reuse.append(ReuseJob(ref, stored))
            self._publish_if_full()
        for ref, stored in plan.recheck:
            self._unit().recheck.append(ReuseJob(ref, stored))
            self._publish_if_full()
        previous = {item.item_key: item for item in plan.previous}
        for ref in plan.to_embed:
            unit = self._unit()
            unit.embed.append(ref)
            if (known := previous.get(ref.key)) is not None:
                unit.previous.append(known)
            self._publish_if_full()

    def end_source(self) -> None:
        """Publish the open unit (the next source's items start a new one)."""
        if self._open is not None:
            self._publish(self._open)

    def _unit(self) -> WorkUnit:
        if self._open is None:
            self._open = WorkUnit(seq=self.first_seq + len(self.seqs))
        return self._open

    def _publish_if_full(self) -> None:
        if self._open is not None and self._open.items >= self.items_per_unit:
            self._publish(self._open)

    def _publish(self, unit: WorkUnit) -> None:
        self._open = None
        self.run_dir.write_unit(unit)
        self.seqs.append(unit.seq)
        self.unit_items.append(unit.items)


@dataclass(slots=True, kw_only=True)
class Tally:
    """What commits did: the run's counts, and the item keys behind three of them."""

    counts: RunCounts = field(default_factory=RunCounts)
    embedded_keys: list[str] = field(default_factory=list)
    written_image_keys: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        """Add another part of the run (a work unit) to this one."""
        self.counts += other.counts
        self.embedded_keys.extend(other.embedded_keys)
        self.written_image_keys.extend(other.written_image_keys)
        self.failures.extend(other.failures)


@dataclass(slots=True, kw_only=True)
class IndexReport(Tally):
    """What a run did (or, with ``dry_run``, would do): its counts from planning on, and more."""

    collection: str
    embedder_id: str
    seconds: float = 0.0
    dry_run: bool = False
    migrated_to: str | None = None
    replayed_shards: int = 0
    labeled: int = 0
    items: PlannedItems | None = None  # a dry run's planned items, by kind

    @property
    def items_seen(self) -> int:
        return self.counts.items_seen

    @property
    def plan(self) -> dict[str, int]:
        """The plan's counts by name."""
        return self.counts.plan()

    @property
    def items_per_second(self) -> float:
        return self.items_seen / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class RunPlan:
    """One planned ingest into one collection version; its units are ``seqs``."""

    run_id: str
    collection: str
    physical_name: str
    embedder_id: str
    started_at: datetime
    source_id: str
    source: SourceSpec
    migrating: bool
    counts: RunCounts  # what planning found (items seen, the plan's counts)
    seqs: list[int]
    unit_items: list[int]
    replayed_shards: int = 0
    labels: LabelConfig | None = None


@dataclass(slots=True, kw_only=True)
class UnitOutcome(Tally):
    """A finished unit: its shard file, what it did, who processed it, and how long it took."""

    seq: int
    shard: str | None
    worker: str
    seconds: float
    reapplied: bool = False


_RUN = TypeAdapter(RunPlan)
_UNIT = TypeAdapter(WorkUnit)
_OUTCOME = TypeAdapter(UnitOutcome)


def worker_name() -> str:
    """``host:pid`` of this process: recorded in each unit outcome."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _write_atomically(path: StoragePath, data: bytes) -> None:
    publish(path, data, durable=False)


# What ``run._new_run_id`` makes (UTC time + 8 hex digits); a run id is part of a path, so one that
# arrives as a parameter (a flow run of ``embed_shard``) must be exactly that shape.
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}")


@dataclass(frozen=True, slots=True)
class RunDir:
    """The folder of one run plan (its run id is checked: it becomes a path)."""

    root: StoragePath
    collection: str
    run_id: str

    def __post_init__(self) -> None:
        if not RUN_ID.fullmatch(self.run_id):
            raise ConfigError(f"invalid run id {self.run_id!r}: expected the form 20260101T000000000000Z-0123abcd")

    @property
    def path(self) -> StoragePath:
        return IndexPaths(self.root).run_dir(self.collection, self.run_id)

    def read_outcomes(self, seqs: list[int]) -> dict[int, UnitOutcome]:
        """The outcomes of those of ``seqs`` that are done."""
        found = ((seq, self.read_outcome(seq)) for seq in seqs)
        return {seq: outcome for seq, outcome in found if outcome is not None}

    def unit_path(self, seq: int) -> StoragePath:
        return self.path / "units" / f"{seq:08d}.json"

    def outcome_path(self, seq: int) -> StoragePath:
        return self.path / "done" / f"{seq:08d}.json"

    def write_unit(self, unit: WorkUnit) -> None:
        _write_atomically(self.unit_path(unit.seq), _UNIT.dump_json(unit))

    def write_plan(self, plan: RunPlan) -> None:
        """Written after its units (``write_unit``): a run plan whose ``run.json`` exists is complete."""
        _write_atomically(self.path / "run.json", _RUN.dump_json(plan, indent=2))

    def read_plan(self) -> RunPlan:
        return _RUN.validate_json((self.path / "run.json").read_bytes())

    def read_unit(self, seq: int) -> WorkUnit:
        return _UNIT.validate_json(self.unit_path(seq).read_bytes())

    def write_outcome(self, outcome: UnitOutcome) -> None:
        _write_atomically(self.outcome_path(outcome.seq), _OUTCOME.dump_json(outcome, indent=2))

    def read_outcome(self, seq: int) -> UnitOutcome | None:
        """The outcome of a finished unit, or None while it is not done."""
        try:
            return _OUTCOME.validate_json(self.outcome_path(seq).read_bytes())
        except FileNotFoundError:
            return None

    def finish(self) -> None:
        """Drop the unit manifests of a finalized run (its plan and outcomes stay as its record)."""
        remove_tree(self.path / "units")


def prune_runs(root: StoragePath, collection: str, keep: int = KEEP_FINISHED_RUNS) -> int:
    """Remove all but the newest ``keep`` run folders of a collection (the caller holds the ingest
    lock, so none of them is in progress). Run ids sort by time."""
    folder = IndexPaths(root).runs_dir(collection)
    if not folder.is_dir():
        return 0
    runs = sorted(path for path in folder.iterdir() if path.is_dir())
    stale = runs[: max(0, len(runs) - keep)]
    for path in stale:
        remove_tree(path)
    return len(stale)


def run_outcomes(root: StoragePath, collection: str, run_id: str) -> list[UnitOutcome]:
    """The outcomes of a run's finished units, in shard order."""
    run_dir = RunDir(root, collection, run_id)
    return list(run_dir.read_outcomes(run_dir.read_plan().seqs).values())
