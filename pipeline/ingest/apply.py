"""Bring Qdrant in line with the shard log: apply a shard, replay unapplied ones, rebuild.

Qdrant is derived from Parquet (docs/ARCHITECTURE.md §1): applying a shard upserts its ok rows and deletes the
point ids of its failed and tombstone rows. Applying is idempotent, so a shard written just
before a crash is simply applied again by the next run (its ``seq`` is above the version's
``applied_through`` marker).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex.pipeline.errors import MmindexError
from mmindex.pipeline.io.atomic import TMP_PREFIX
from mmindex.pipeline.io.catalog import latest_rows
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import StoragePath, is_remote
from mmindex.pipeline.io.shards import ShardLog, ShardRef
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.store.store import CollectionSpec, PointBatch, SparseVector, VectorStore
from mmindex.pipeline.timing import stage
from mmindex.schemas.config import Settings
from mmindex.schemas.items import STATUS_OK, batch_embeddings, batch_text_vectors
from mmindex.schemas.payload import payloads_from_table
from mmindex.schemas.state import CollectionVersion

log = logging.getLogger(__name__)

REBUILD_BATCH = 4096
# Points built and upserted at a time when a shard is applied (its payload dicts are the bulk).
APPLY_BATCH = 4096


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Points written and removed by applying rows."""

    upserted: int
    deleted: int


def collection_spec(version: CollectionVersion) -> CollectionSpec:
    """What a version's Qdrant collection is created with (RAG vectors when it has a text model)."""
    return CollectionSpec(dim=version.dim, text_dim=version.text_dim)


def bm25_vectors(text_vectors: Sequence[np.ndarray | None], rows: pa.Table, context: str | None = None) -> list[SparseVector | None]:
    """The BM25 vector of every chunk that has a text-model vector (None elsewhere), recomputed
    from its stored text with the context of the version's scheme (``context``: its title and
    heading path ahead of it, ``chunking.chunk_label``; None: the bare text), all stored in
    Parquet: a pure function, so a rebuild from Parquet gives the same points."""
    if all(vector is None for vector in text_vectors):
        return [None] * len(text_vectors)
    from mmindex.pipeline.embed.chunking import chunk_label, with_context
    from mmindex.pipeline.embed.sparse import document_vector

    def column(name: str) -> list:
        return rows.column(name).to_pylist() if name in rows.schema.names else [None] * rows.num_rows

    rows_of = zip(text_vectors, column("text"), column("title"), column("heading_path"), strict=True)
    return [None if vector is None else document_vector(with_context(chunk_label(context, title, path or (), text or ""), text or ""))
            for vector, text, title, path in rows_of]


def apply_rows(store: VectorStore, physical_name: str, rows: pa.Table, context: str | None = None) -> ApplyResult:
    """Apply shard rows: delete the points of failed and tombstone rows, upsert the ok rows (one
    column-wise ``PointBatch``, the same mapping as a rebuild's; ``context``: the version's chunk
    context scheme, which BM25 reads the chunks with)."""
    gone = rows.filter(pc.not_equal(rows.column("status"), STATUS_OK)).column("point_id").to_pylist()
    if gone:
        store.delete(physical_name, gone)
    upserted = 0
    for batch in point_batches(rows, size=APPLY_BATCH, context=context):  # a document's chunks never all at once
        store.upsert(physical_name, batch)
        upserted += len(batch)
    return ApplyResult(upserted, len(gone))


def mark_applied(root: StoragePath, collection: str, physical_name: str, seq: int) -> None:
    """Record that every shard up to ``seq`` of this version is in Qdrant."""
    with edit_state(root) as state:
        version = state.collections[collection].version(physical_name)
        if version is not None and seq > version.applied_through:
            version.applied_through = seq


def mark_applied_next(root: StoragePath, collection: str, physical_name: str, seq: int) -> None:
    """Move the marker to ``seq`` only if every shard before it is applied (shards of a run plan
    may be applied out of order; the run's finalize step moves the marker past all of them).

    On an object-store root this does nothing: ``state.json`` there has no lock, so workers never
    write it (only the ingest's own steps do); a crash before finalize then means the next run
    re-applies those shards, which is idempotent."""
    if is_remote(root):
        return
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
    log_ = IndexPaths(settings.root).shard_log(collection, version.physical_name)
    discarded = discard_partial_shards(log_)
    if discarded:
        log.warning("removed %d partial shard file(s) of an interrupted run", discarded)
    replayed = 0
    for ref in log_.shards():
        if ref.seq <= version.applied_through:
            continue
        for rows in log_.iter_batches(ref, APPLY_BATCH):  # a row group at a time
            apply_rows(store, version.physical_name, rows, version.chunk_context)
        mark_applied(settings.root, collection, version.physical_name, ref.seq)
        version.applied_through = ref.seq
        replayed += 1
    if replayed:
        log.warning("re-applied %d shard(s) that an interrupted run had written but not indexed", replayed)
    return replayed


def point_batches(rows: pa.Table, size: int = REBUILD_BATCH, context: str | None = None) -> Iterator[PointBatch]:
    """The ok rows of shard rows as column-wise point batches of at most ``size`` points
    (``context``: the version's chunk context scheme, for their BM25 vectors)."""
    live = rows.filter(pc.equal(rows.column("status"), STATUS_OK))
    for start in range(0, live.num_rows, size):
        part = live.slice(start, size)
        text_vectors = batch_text_vectors(part)
        sparse = None if text_vectors is None else bm25_vectors(text_vectors, part, context)
        yield PointBatch(part.column("point_id").to_pylist(), batch_embeddings(part), payloads_from_table(part),
                         text_vectors, sparse)


def current_point_batches(log_: ShardLog, size: int = REBUILD_BATCH, context: str | None = None) -> Iterator[PointBatch]:
    """Point batches of every item's current ok rows, streamed shard by shard (oldest first).

    Which shard holds an item's current rows is decided from the key columns alone; then each
    shard is read once, a row group at a time, and only its current rows are kept, so memory
    holds two row groups (the one being written and the next, read ahead) and the keys, never
    every embedding of the collection nor a whole shard. The read-ahead runs in a thread: Parquet
    decoding releases the GIL, so it overlaps the store's work on the previous row group.
    """
    current = latest_rows(log_, ["status"])
    current = current.filter(pc.equal(current.column("status"), STATUS_OK))
    wanted = []
    for ref in log_.shards():
        keys = current.filter(pc.equal(current.column("seq"), ref.seq)).column("key")
        if len(keys) > 0:
            wanted.append((ref, keys.combine_chunks()))
    tables = (table for ref, keys in wanted for table in _current_rows(log_, ref, keys, size))
    for table in _read_ahead(tables):
        yield from point_batches(table, size, context)


def _read_ahead(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """``tables``, each next one read in a thread while the caller works on the one before."""
    done: pa.Table = pa.table({})  # the end (compared by identity)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmindex-read") as reader:
        pending = reader.submit(next, tables, done)
        while True:
            with stage("read"):  # waiting for the read-ahead
                table = pending.result()
            if table is done:
                return
            pending = reader.submit(next, tables, done)
            yield table


def _current_rows(log_: ShardLog, ref: ShardRef, keys: pa.Array, size: int) -> Iterator[pa.Table]:
    """The rows of one shard whose key is in ``keys``, a row group at a time."""
    for table in log_.iter_batches(ref, size):
        yield table.filter(pc.is_in(table.column("key"), value_set=keys))


def rebuild_version(
    settings: Settings, store: VectorStore, collection: str, version: CollectionVersion, checked: bool = False
) -> int:
    """Refill the version's Qdrant collection from Parquet alone (no model), never leaving it worse.

    Every shard is hashed against its record first (``ShardLog.require_intact``; skipped when the
    caller just did, ``checked``). The points go into a fresh staging collection through the store's bulk path
    (``upsert_batches``, which creates it; the vector index is built once at the end, on the
    embedded backend only for collections large enough to need one), and only a complete one
    replaces the live collection (``replace_collection``): until then queries answer from the old
    one, and a rebuild that fails midway drops its staging collection and leaves the old one serving.
    """
    log_ = IndexPaths(settings.root).shard_log(collection, version.physical_name)
    discard_partial_shards(log_)
    if not checked:
        log_.require_intact(full=True, outcome="nothing rebuilt, the index is as it was")
    shards = log_.shards()
    staging = f"{version.physical_name}-rebuild-{uuid.uuid4().hex[:8]}"
    try:
        if shards:
            with stage("upsert"):  # the vector index is built at the end of the load (optimize=True)
                written = store.upsert_batches(staging, current_point_batches(log_, context=version.chunk_context), optimize=True,
                                               create=collection_spec(version))
        else:
            store.create_collection(staging, collection_spec(version))
            written = 0
        store.replace_collection(version.physical_name, staging)
    except BaseException:
        with contextlib.suppress(MmindexError):
            store.drop_collection(staging)
        raise
    if shards:
        mark_applied(settings.root, collection, version.physical_name, shards[-1].seq)
    return written
