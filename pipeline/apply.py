"""Bring Qdrant in line with the shard log: apply a shard, replay unapplied ones, rebuild.

Qdrant is derived from Parquet (DESIGN §1): applying a shard upserts its ok rows and deletes the
point ids of its failed and tombstone rows. Applying is idempotent, so a shard written just
before a crash is simply applied again by the next run (its ``seq`` is above the version's
``applied_through`` marker).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..schemas.config import Settings
from ..schemas.items import STATUS_OK, ItemRecord, batch_embeddings, batch_to_records
from ..schemas.payload import PointPayload
from ..schemas.state import CollectionVersion
from .index.store import CollectionSpec, PointRecord, VectorStore
from .io.catalog import latest_rows
from .io.shards import TMP_PREFIX, ShardLog
from .io.state_file import edit_state

log = logging.getLogger(__name__)

REBUILD_BATCH = 4096


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Points written and removed by applying rows."""

    upserted: int
    deleted: int


def shard_log(root: Path, collection: str, version: CollectionVersion) -> ShardLog:
    """The Parquet shard log of a collection version."""
    return ShardLog(root / "shards" / collection / version.physical_name)


def collection_spec(version: CollectionVersion) -> CollectionSpec:
    """What a version's Qdrant collection is created with (RAG vectors when it has a text model)."""
    return CollectionSpec(dim=version.dim, text_dim=version.text_dim)


def points_of(records: Sequence[ItemRecord], embeddings: np.ndarray) -> list[PointRecord]:
    """Qdrant points for the records that hold a vector.

    A text chunk with a text-model vector also gets its BM25 vector, recomputed from its text
    (a pure function, so a rebuild from Parquet gives the same point).
    """
    from .sparse import document_vector  # noqa: PLC0415

    return [
        PointRecord(
            record.point_id,
            embeddings[row],
            PointPayload.from_record(record).to_qdrant(),
            text_vector=record.text_vector,
            sparse=None if record.text_vector is None else document_vector(record.text or ""),
        )
        for row, record in enumerate(records)
        if record.status == STATUS_OK
    ]


def apply_records(store: VectorStore, physical_name: str, records: Sequence[ItemRecord], embeddings: np.ndarray) -> ApplyResult:
    """Upsert ok rows; delete the points of failed and tombstone rows."""
    gone = [record.point_id for record in records if record.status != STATUS_OK]
    if gone:
        store.delete(physical_name, gone)
    points = points_of(records, embeddings)
    if points:
        store.upsert(physical_name, points)
    return ApplyResult(len(points), len(gone))


def mark_applied(root: Path, collection: str, physical_name: str, seq: int) -> None:
    """Record that every shard up to ``seq`` of this version is in Qdrant."""
    with edit_state(root) as state:
        version = state.collections[collection].version(physical_name)
        if version is not None and seq > version.applied_through:
            version.applied_through = seq


def mark_applied_next(root: Path, collection: str, physical_name: str, seq: int) -> None:
    """Move the marker to ``seq`` only if every shard before it is applied (shards of a run plan
    may be applied out of order; the run's finalize step moves the marker past all of them)."""
    with edit_state(root) as state:
        version = state.collections[collection].version(physical_name)
        if version is not None and version.applied_through == seq - 1:
            version.applied_through = seq


def discard_partial_shards(log: ShardLog) -> int:
    """Remove temporary shard files left by a crashed writer (the caller holds the ingest lock)."""
    if not log.directory.is_dir():
        return 0
    leftovers = [path for path in log.directory.iterdir() if path.name.startswith(TMP_PREFIX)]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def replay_unapplied(settings: Settings, store: VectorStore, collection: str, version: CollectionVersion) -> int:
    """Apply shards written after the version's marker (a crash came between write and apply)."""
    log_ = shard_log(settings.root, collection, version)
    discarded = discard_partial_shards(log_)
    if discarded:
        log.warning("removed %d partial shard file(s) of an interrupted run", discarded)
    replayed = 0
    for ref in log_.shards():
        if ref.seq <= version.applied_through:
            continue
        table = log_.read(ref)
        apply_records(store, version.physical_name, batch_to_records(table), batch_embeddings(table))
        mark_applied(settings.root, collection, version.physical_name, ref.seq)
        version.applied_through = ref.seq
        replayed += 1
    if replayed:
        log.warning("re-applied %d shard(s) that an interrupted run had written but not indexed", replayed)
    return replayed


def _live_batches(table: pa.Table, size: int) -> Iterator[pa.Table]:
    live = table.filter(pc.equal(table.column("status"), STATUS_OK))
    for start in range(0, live.num_rows, size):
        yield live.slice(start, size)


def rebuild_version(settings: Settings, store: VectorStore, collection: str, version: CollectionVersion) -> int:
    """Drop the version's Qdrant collection and refill it from Parquet alone (no model)."""
    log_ = shard_log(settings.root, collection, version)
    discard_partial_shards(log_)
    shards = log_.shards()
    columns = pq.read_schema(shards[0].path).names if shards else []
    store.drop_collection(version.physical_name)
    store.create_collection(version.physical_name, collection_spec(version))
    written = 0
    if columns:
        current = latest_rows(log_, columns)
        for batch in _live_batches(current, REBUILD_BATCH):
            written += apply_records(store, version.physical_name, batch_to_records(batch), batch_embeddings(batch)).upserted
        mark_applied(settings.root, collection, version.physical_name, shards[-1].seq)
    store.optimize(version.physical_name)
    return written
