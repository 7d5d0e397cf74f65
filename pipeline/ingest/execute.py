"""Execute a work unit: build the rows of each of its items, commit them as the unit's shard.

A commit writes the shard (the durable record) and then applies it to Qdrant, and finally moves
the version's ``applied_through`` marker. Items never straddle shards, and every shard holds the
complete new state of the items it mentions: their ok rows, failed rows, and tombstones for the
keys they no longer have. A unit's rows go into its shard a row group at a time as they are made
(a long document's chunks arrive in pieces), so memory holds about a row group, not the unit.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa

from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.ids import chunk_key, point_id
from mmindex.pipeline.ingest.apply import apply_rows, mark_applied_next
from mmindex.pipeline.ingest.units import Tally, WorkUnit
from mmindex.pipeline.io.catalog import CatalogItem, read_item_rows
from mmindex.pipeline.io.root import StoragePath
from mmindex.pipeline.io.shards import ShardLog, ShardRef, ShardWriter
from mmindex.pipeline.io.space import SpaceGuard
from mmindex.pipeline.redact import redact_secrets
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.readers import UnitReader
from mmindex.pipeline.store.store import VectorStore
from mmindex.pipeline.timing import stage
from mmindex.schemas.config import DEFAULT_MAX_DOCUMENT_BYTES, ImageLimits
from mmindex.schemas.items import STATUS_DELETED, STATUS_OK, ItemRecord, records_to_batch
from mmindex.schemas.state import CollectionVersion, SourceSpec

if TYPE_CHECKING:
    from mmindex.pipeline.embed.text_model import TextEmbedder
    from mmindex.pipeline.ingest.recheck import Rechecked

log = logging.getLogger(__name__)

ItemRows = tuple[list[ItemRecord], np.ndarray]


class ProgressReporter(Protocol):
    """Receives progress of a run (the CLI draws it with Rich)."""

    def start(self, total_items: int) -> None: ...

    def advance(self, items: int) -> None: ...


# A unit's rows are written to its shard as a row group whenever this many are queued, so a unit
# (one huge document's chunks, say) never holds more than about this many rows; a unit with fewer
# rows is one row group, written at its commit, as before.
ROW_GROUP_ROWS = 4096
# Rows of a shard read back and applied to the store at a time.
APPLY_ROWS = 4096


@dataclass(slots=True)
class Committer:
    """Writes the one shard of a work unit (whole items) and applies it to the store.

    Rows are queued by ``add``; once ``ROW_GROUP_ROWS`` are queued they go into the unit's shard
    as a row group (a temporary file until ``flush`` publishes it: ``ShardWriter``), so memory holds
    at most a row group's rows whatever the unit holds. ``flush`` writes the rest, publishes the
    shard of the unit's sequence number and applies it to the store a row group at a time; the
    version's ``applied_through`` marker then only moves when the shard is the next one (units
    may finish out of order; the run's finalize step moves it past all of them). ``abort`` drops
    a shard that was begun (nothing of it is visible).
    """

    root: StoragePath
    collection: str
    version: CollectionVersion
    log: ShardLog
    store_factory: Callable[[], VectorStore]
    seq: int
    tally: Tally = field(default_factory=Tally)
    progress: ProgressReporter | None = None
    written: ShardRef | None = None
    space: SpaceGuard | None = None  # the free-space check of a local root (``io/space.py``)
    _pending: list[ItemRows] = field(default_factory=list)
    _settled: int = 0
    _pending_rows: int = 0
    _items: int = 0
    _writer: ShardWriter | None = None
    _rows_written: int = 0
    _batch_bytes: int = 0
    _used_before: int | None = None

    def add(self, rows: ItemRows, items: int = 1) -> None:
        """Queue rows for the unit's shard: ``items`` whole items, or (``items=0``) more rows of
        the item added last (a document's chunks come in pieces)."""
        self._pending.append(rows)
        self._pending_rows += len(rows[0])
        self._items += items
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._write_pending()

    def settle(self, items: int) -> None:
        """Count items of the unit that need no row (a recheck found them unchanged) as done."""
        self._settled += items

    def _write_pending(self) -> None:
        """Write the queued rows as one row group of the unit's shard (opened on the first)."""
        if not self._pending:
            return
        records = [record for rows, _ in self._pending for record in rows]
        embeddings = np.concatenate([vectors for _, vectors in self._pending])
        self._pending, self._pending_rows = [], 0
        with stage("write"):
            batch = records_to_batch(records, embeddings, self.version.dim, self.version.text_dim)
            del records, embeddings
            self._batch_bytes += batch.nbytes
            if self.space is not None:  # before each row group (before anything, for the first)
                written = 0 if self._writer is None else self._writer.bytes_written
                self.space.require(self._rows_written + batch.num_rows, self._batch_bytes, already_written=written)
                if self._used_before is None:
                    self._used_before = self.space.used()
            if self._writer is None:
                self._writer = self.log.open_writer(batch.schema, self.seq)
            try:
                self._writer.write(batch)
            except BaseException:
                self.abort()
                raise
            self._rows_written += batch.num_rows

    def flush(self) -> None:
        """Commit everything queued as the unit's shard: publish it, then apply it (no shard: a
        unit whose every item settled)."""
        settled, self._settled = self._settled, 0
        try:
            self._write_pending()
            writer, self._writer = self._writer, None
            if writer is None:
                if settled:  # nothing to write: the unit's seq stays unused, so the marker may pass it
                    mark_applied_next(self.root, self.collection, self.version.physical_name, self.seq)
                    if self.progress is not None:
                        self.progress.advance(settled)
                return
            with stage("write"):
                ref = writer.close()
        except BaseException:
            self.abort()
            raise
        self.written = ref
        self._apply(ref)
        if self.space is not None and self._used_before is not None:
            self.space.record_growth(self._used_before, self._rows_written)
        if self.progress is not None:
            self.progress.advance(self._items + settled)

    def abort(self) -> None:
        """Drop the unit's shard if one was begun (its temporary file is removed)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abort()
        self._pending, self._pending_rows = [], 0

    def reapply(self, ref: ShardRef, embedded_keys: list[str]) -> None:
        """Apply the unit's shard that an earlier attempt wrote but may not have applied (idempotent)."""
        self._apply(ref)
        self.tally.embedded_keys = list(embedded_keys)
        self.tally.counts.embedded = len(embedded_keys)

    def _apply(self, ref: ShardRef) -> None:
        """Apply the shard to the store a row group at a time, then move the applied marker."""
        counts = self.tally.counts
        for rows in self.log.iter_batches(ref, APPLY_ROWS):
            with stage("upsert"):
                result = apply_rows(self.store_factory(), self.version.physical_name, rows, self.version.chunk_context)
            counts.points_upserted += result.upserted
            counts.points_deleted += result.deleted
            self._count(rows)
        with stage("write"):
            mark_applied_next(self.root, self.collection, self.version.physical_name, ref.seq)
        counts.shards_written += 1

    def _count(self, rows: pa.Table) -> None:
        counts = self.tally.counts
        columns = rows.select(["status", "modality", "key", "path", "error"]).to_pylist()
        for row in columns:
            if row["status"] == STATUS_OK:
                if row["modality"] == "image":
                    counts.images += 1
                    self.tally.written_image_keys.append(row["key"])
                else:
                    counts.text_chunks += 1
            elif row["status"] != STATUS_DELETED:
                counts.failed += 1
                self.tally.failures.append((redact_secrets(row["path"]), row["error"] or ""))


def tombstone(item: CatalogItem, key: str, embedder_id: str) -> ItemRecord:
    """A row saying the point of ``key`` (an item or one of its chunks) must not exist."""
    return ItemRecord(
        key=key,
        point_id=point_id(key),
        source_id=item.source_id,
        modality=item.modality,  # type: ignore[arg-type]
        uri=item.uri,
        path=item.path,
        ext=item.ext,
        embedder_id=embedder_id,
        status=STATUS_DELETED,
        doc_key=item.item_key if item.modality == "text" else None,
    )


def tombstone_rows(item: CatalogItem, keys: Iterable[str], embedder_id: str, dim: int) -> ItemRows:
    records = [tombstone(item, key, embedder_id) for key in keys]
    return records, np.zeros((len(records), dim), dtype=np.float32)


def refreshed(records: list[ItemRecord], ref: ItemRef) -> list[ItemRecord]:
    """Stored rows of an item, moved to ``ref``'s key and location, with its stat and sidecars."""
    from mmindex.pipeline.embed.images import sidecars

    caption, metadata_json = sidecars(ref) if ref.modality == "image" else (None, None)
    updated = []
    for record in records:
        key = chunk_key(ref.key, record.chunk_index) if ref.modality == "text" else ref.key  # type: ignore[arg-type]
        updated.append(
            dataclasses.replace(
                record,
                key=key,
                point_id=point_id(key),
                source_id=ref.source_id,
                uri=ref.uri,
                path=ref.path,
                ext=ref.ext,
                mtime_ns=ref.mtime_ns,
                bytes=record.bytes if ref.known_size is None else ref.size,
                doc_key=ref.key if ref.modality == "text" else None,
                caption=caption if ref.modality == "image" else record.caption,
                metadata_json=metadata_json if ref.modality == "image" else record.metadata_json,
                sidecar_sig=ref.sidecar_sig,
            )
        )
    return updated


def _by_item(records: list[ItemRecord], embeddings: np.ndarray) -> Iterator[tuple[str, ItemRows]]:
    """Split rows into items (consecutive rows of one document stay together)."""
    start = 0
    for end in range(1, len(records) + 1):
        if end == len(records) or (records[end].doc_key or records[end].key) != (records[start].doc_key or records[start].key):
            item_key = records[start].doc_key or records[start].key
            yield item_key, (records[start:end], embeddings[start:end])
            start = end


@dataclass(slots=True)
class UnitExecutor:
    """Builds the rows of one work unit against one collection version and queues them on the
    unit's committer: tombstones, rows rewritten from stored vectors, then new embeddings."""

    unit: WorkUnit
    committer: Committer
    embedder: Callable[[], Embedder]
    batch_size: int
    workers: int | None
    image_limits: ImageLimits
    # The collection's text model (RAG), loaded on first use; None: CLIP vectors only.
    text_embedder: Callable[[], TextEmbedder] | None = None
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    # The collection's sources by id: items of remote ones are read through their source.
    sources: Mapping[str, SourceSpec] = field(default_factory=dict)
    _previous: dict[str, CatalogItem] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._previous = {item.item_key: item for item in self.unit.previous}

    @property
    def _embedder_id(self) -> str:
        return self.committer.version.embedder_id

    @property
    def _dim(self) -> int:
        return self.committer.version.dim

    def prepare(self) -> None:
        """Queue every row of the unit on the committer; nothing is written until its ``flush``."""
        self._delete()
        missing = self._reuse_stored()
        self._embed([*self.unit.embed, *missing])
        self._recheck()

    def _delete(self) -> None:
        for item in self.unit.deleted:
            keys = item.live_keys or (item.item_key,)
            self.committer.add(tombstone_rows(item, keys, self._embedder_id, self._dim))

    def _reuse_stored(self) -> list[ItemRef]:
        """Renamed/copied, sidecar-changed and touched items: stored vectors, fresh rows. Returns
        the items whose stored rows are missing (they are embedded again)."""
        jobs = self.unit.reuse
        if not jobs:
            return []
        stored = read_item_rows(self.committer.log, {job.stored.item_key: job.stored for job in jobs}.values())
        missing = []
        for job in jobs:
            if job.stored.item_key not in stored:
                log.warning("stored rows of %s are missing; embedding it again", job.stored.item_key)
                missing.append(job.ref)
                continue
            records, vectors = stored[job.stored.item_key]
            self.committer.add((refreshed(records, job.ref), vectors))
            self.committer.tally.counts.reused += 1
        return missing

    def _recheck(self) -> None:
        """Revalidate the unit's recheck items (``ingest/recheck.py``): embed those whose content
        changed (a batch at a time, from the bodies fetched), store new validators of the others."""
        from mmindex.pipeline.ingest.recheck import revalidate

        if not self.unit.recheck:
            return
        counts = self.committer.tally.counts
        changed: list[Rechecked] = []
        refresh: list[Rechecked] = []
        for found in revalidate(self.unit.recheck, self.sources):
            if found.error is not None:
                counts.recheck_failed += 1
                log.warning("recheck of %s failed (the stored item is kept): %s", redact_secrets(found.job.ref.uri),
                            found.error)
            elif found.changed:
                counts.recheck_changed += 1
                changed.append(found)
                if len(changed) >= self.batch_size:
                    self._embed_fetched(changed)
                    changed = []
                continue
            elif found.body is None:
                counts.recheck_not_modified += 1
            if found.error is None and found.new_validators:
                refresh.append(found)
            else:
                self.committer.settle(1)
        self._embed_fetched(changed)
        self._store_validators(refresh)

    def _embed_fetched(self, found: list[Rechecked]) -> None:
        """Embed items from the bodies their recheck fetched."""
        from mmindex.pipeline.embed.images import embed_images
        from mmindex.pipeline.ingest.recheck import FetchedBodies

        if not found:
            return
        refs = [item.job.ref for item in found]
        self._previous.update({item.job.stored.item_key: item.job.stored for item in found})
        reader = FetchedBodies(found)
        try:
            stream = embed_images(refs, self.embedder(), batch_size=self.batch_size, workers=self.workers,
                                  limits=self.image_limits, reader=reader)
            self._queue_embedded([stream], {ref.key: ref for ref in refs})
        finally:
            reader.close()

    def _store_validators(self, found: list[Rechecked]) -> None:
        """Rewrite items whose content is unchanged but whose validators are new, from their
        stored vectors (the next recheck is a 304)."""
        if not found:
            return
        stored = read_item_rows(self.committer.log, [item.job.stored for item in found])
        for item in found:
            rows = stored.get(item.job.stored.item_key)
            if rows is None or item.validators is None:
                log.warning("stored rows of %s are missing; its new validators are not kept", item.job.stored.item_key)
                self.committer.settle(1)
                continue
            records = refreshed(rows[0], item.job.ref)
            for record in records:
                record.etag, record.last_modified = item.validators.etag, item.validators.last_modified
            self.committer.add((records, rows[1]))

    def _known_chunk_vectors(
        self, refs: list[ItemRef]
    ) -> tuple[dict[str, np.ndarray], dict[tuple[str, ...], np.ndarray]]:
        """Stored CLIP vectors of the chunks of edited documents by chunk text, and their
        text-model vectors by ``chunking.reuse_key`` of the version's chunk context."""
        from mmindex.pipeline.embed.chunking import reuse_key

        scheme = self.committer.version.chunk_context
        found = (self._previous.get(ref.key) for ref in refs)
        items = [item for item in found if item is not None and item.live_keys]
        known: dict[str, np.ndarray] = {}
        known_text: dict[tuple[str, ...], np.ndarray] = {}
        for records, vectors in read_item_rows(self.committer.log, items).values():
            for record, vector in zip(records, vectors, strict=True):
                if record.text is not None:
                    known[record.text] = vector
                    if record.text_vector is not None:
                        known_text[reuse_key(scheme, record.title, record.heading_path, record.text)] = record.text_vector
        return known, known_text

    def _embed(self, refs: list[ItemRef]) -> None:
        from mmindex.pipeline.embed.images import embed_images
        from mmindex.pipeline.embed.sandbox import DocumentLimits
        from mmindex.pipeline.embed.texts import TextEmbedStats, embed_texts

        if not refs:
            return
        by_key = {ref.key: ref for ref in refs}
        images = [ref for ref in refs if ref.modality == "image"]
        texts = [ref for ref in refs if ref.modality == "text"]
        stats = TextEmbedStats()
        # The reader first: a remote source's fetches start now and overlap loading the models
        # (seconds, in each shard process of a flow) and reading stored chunk vectors.
        with UnitReader(self.sources, [*images, *texts]) as reader:
            remote = reader if reader.remote else None
            embedder = self.embedder()
            known, known_text = self._known_chunk_vectors(texts) if texts else ({}, {})
            text_embedder = self.text_embedder() if texts and self.text_embedder is not None else None
            groups = [
                embed_images(images, embedder, batch_size=self.batch_size, workers=self.workers,
                             limits=self.image_limits, reader=remote),
                embed_texts(texts, embedder, batch_size=self.batch_size, known_vectors=known, stats=stats,
                            text_embedder=text_embedder, known_text_vectors=known_text, reader=remote,
                            context_scheme=self.committer.version.chunk_context,
                            limits=DocumentLimits(max_bytes=self.max_document_bytes)),
            ]
            self._queue_embedded(groups, by_key)
        self.committer.tally.counts.chunks_reused += stats.reused

    def _queue_embedded(self, groups: list[Iterator[tuple[list[ItemRecord], np.ndarray]]],
                        by_key: dict[str, ItemRef]) -> None:
        """Queue the rows of embedded items (with tombstones for their vanished chunks). A
        document's chunks may come in several groups (one after the other): each piece is queued
        as it comes, and the document's tombstones follow its last piece."""
        tally = self.committer.tally
        current: _OpenItem | None = None
        for records, embeddings in (group for stream in groups for group in stream):
            for item_key, (item_records, item_vectors) in _by_item(records, embeddings):
                if current is None or current.key != item_key:
                    if current is not None:
                        self._close_item(current)
                    current = _OpenItem(item_key, self._previous.get(item_key))
                ref = by_key[item_key]
                for record in item_records:
                    record.sidecar_sig = ref.sidecar_sig
                if not current.embedded and any(record.status == STATUS_OK for record in item_records):
                    current.embedded = True  # a failed item is not embedded
                    tally.embedded_keys.append(item_key)
                    tally.counts.embedded += 1
                current.stale.difference_update(record.key for record in item_records)
                self.committer.add((item_records, item_vectors), items=0 if current.queued else 1)
                current.queued = True
        if current is not None:
            self._close_item(current)

    def _close_item(self, item: _OpenItem) -> None:
        """Queue tombstones for the keys the item had before and no longer has (vanished chunks)."""
        if item.previous is None or not item.stale:
            return
        self.committer.add(tombstone_rows(item.previous, sorted(item.stale), self._embedder_id, self._dim), items=0)


@dataclass(slots=True)
class _OpenItem:
    """The embedded item whose rows are being queued: its key, its catalog state before, the keys
    it had that its rows have not mentioned yet, whether it counted as embedded, whether any of
    its rows were queued."""

    key: str
    previous: CatalogItem | None
    stale: set[str] = field(default_factory=set)
    embedded: bool = False
    queued: bool = False

    def __post_init__(self) -> None:
        if self.previous is not None:
            self.stale = set(self.previous.live_keys)
