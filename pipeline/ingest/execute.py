"""Execute a work unit: build the rows of each of its items, commit them as the unit's shard.

A commit writes the shard (the durable record) and then applies it to Qdrant, and finally moves
the version's ``applied_through`` marker. Items never straddle shards, and every shard holds the
complete new state of the items it mentions: their ok rows, failed rows, and tombstones for the
keys they no longer have.
"""

from __future__ import annotations

import contextlib
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
from mmindex.pipeline.io.shards import ShardLog, ShardRef
from mmindex.pipeline.io.space import SpaceGuard
from mmindex.pipeline.redact import redact_secrets
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.readers import UnitReader
from mmindex.pipeline.store.store import VectorStore
from mmindex.pipeline.timing import stage
from mmindex.schemas.config import DEFAULT_MAX_DOCUMENT_BYTES
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


@dataclass(slots=True)
class Committer:
    """Writes the one shard of a work unit (whole items) and applies it to the store.

    Everything added goes into the shard of the unit's sequence number, written by ``flush``; the
    version's ``applied_through`` marker then only moves when the shard is the next one (units may
    finish out of order; the run's finalize step moves it past all of them).
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

    def add(self, rows: ItemRows) -> None:
        """Queue one item's rows for the unit's shard."""
        self._pending.append(rows)

    def settle(self, items: int) -> None:
        """Count items of the unit that need no row (a recheck found them unchanged) as done."""
        self._settled += items

    def flush(self) -> None:
        """Commit everything queued as the unit's shard (none: a unit whose every item settled)."""
        settled, self._settled = self._settled, 0
        if not self._pending:
            if settled:  # nothing to write: the unit's seq stays unused, so the marker may pass it
                mark_applied_next(self.root, self.collection, self.version.physical_name, self.seq)
                if self.progress is not None:
                    self.progress.advance(settled)
            return
        records = [record for rows, _ in self._pending for record in rows]
        embeddings = np.concatenate([vectors for _, vectors in self._pending])
        items = len(self._pending)
        self._pending = []
        with stage("write"):
            batch = records_to_batch(records, embeddings, self.version.dim, self.version.text_dim)
            if self.space is not None:  # before anything of the unit is written
                self.space.require(batch.num_rows, batch.nbytes)
        with self.space.measuring(batch.num_rows) if self.space is not None else contextlib.nullcontext():
            with stage("write"):
                ref = self.log.write(batch, self.seq)
            self.written = ref
            self._apply(pa.Table.from_batches([batch]), ref)
        if self.progress is not None:
            self.progress.advance(items + settled)

    def reapply(self, ref: ShardRef, embedded_keys: list[str]) -> None:
        """Apply the unit's shard that an earlier attempt wrote but may not have applied (idempotent)."""
        self._apply(self.log.read(ref), ref)
        self.tally.embedded_keys = list(embedded_keys)
        self.tally.counts.embedded = len(embedded_keys)

    def _apply(self, rows: pa.Table, ref: ShardRef) -> None:
        with stage("upsert"):
            result = apply_rows(self.store_factory(), self.version.physical_name, rows, self.version.chunk_context)
        with stage("write"):
            mark_applied_next(self.root, self.collection, self.version.physical_name, ref.seq)
        counts = self.tally.counts
        counts.shards_written += 1
        counts.points_upserted += result.upserted
        counts.points_deleted += result.deleted
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
    max_pixels: int
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
                                  max_pixels=self.max_pixels, reader=reader)
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
                             max_pixels=self.max_pixels, reader=remote),
                embed_texts(texts, embedder, batch_size=self.batch_size, known_vectors=known, stats=stats,
                            text_embedder=text_embedder, known_text_vectors=known_text, reader=remote,
                            context_scheme=self.committer.version.chunk_context,
                            limits=DocumentLimits(max_bytes=self.max_document_bytes)),
            ]
            self._queue_embedded(groups, by_key)
        self.committer.tally.counts.chunks_reused += stats.reused

    def _queue_embedded(self, groups: list[Iterator[tuple[list[ItemRecord], np.ndarray]]],
                        by_key: dict[str, ItemRef]) -> None:
        """Queue the rows of embedded items (with tombstones for their vanished chunks)."""
        tally = self.committer.tally
        for records, embeddings in (group for stream in groups for group in stream):
            for item_key, (item_records, item_vectors) in _by_item(records, embeddings):
                ref = by_key[item_key]
                for record in item_records:
                    record.sidecar_sig = ref.sidecar_sig
                if any(record.status == STATUS_OK for record in item_records):  # a failed item is not embedded
                    tally.embedded_keys.append(item_key)
                    tally.counts.embedded += 1
                self.committer.add(self._with_tombstones(item_key, (item_records, item_vectors)))

    def _with_tombstones(self, item_key: str, rows: ItemRows) -> ItemRows:
        """Add tombstones for keys the item had before and no longer has (vanished chunks)."""
        old = self._previous.get(item_key)
        if old is None:
            return rows
        stale = sorted(set(old.live_keys) - {record.key for record in rows[0]})
        if not stale:
            return rows
        extra, zeros = tombstone_rows(old, stale, self._embedder_id, self._dim)
        return [*rows[0], *extra], np.concatenate([rows[1], zeros])
