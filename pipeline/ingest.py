"""``index_source``: crawl a source, embed its items, write Parquet shards, upsert into Qdrant.

The CLI and the Prefect flows both call this. Shards are the unit of work: each one is written
atomically to Parquet and then upserted, so a crash loses at most the shard in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
from filelock import FileLock, Timeout

from ..schemas.config import Settings
from ..schemas.items import STATUS_OK, ItemRecord, records_to_batch
from ..schemas.payload import PointPayload
from ..schemas.state import CollectionState, CollectionVersion, RunSummary
from .embed.model import Embedder, ModelSpec, load_embedder
from .errors import IndexBusyError, SchemaMismatchError
from .index.open_store import open_store, physical_collection_name, validate_collection_name
from .index.store import CollectionSpec, PointRecord, VectorStore
from .io.shards import ShardLog
from .io.state_file import edit_state, read_state
from .sources.base import ItemRef
from .sources.local import crawl_local

log = logging.getLogger(__name__)


class ProgressReporter(Protocol):
    """Receives progress of a run (the CLI draws it with Rich)."""

    def start(self, total_items: int) -> None: ...

    def advance(self, items: int) -> None: ...


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """What to index and where (flags of ``mmindex index``)."""

    source: Path
    collection: str
    model: ModelSpec | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    source_id: str | None = None


@dataclass(slots=True)
class IndexReport:
    """What a run did."""

    collection: str
    embedder_id: str
    items_seen: int = 0
    images: int = 0
    text_chunks: int = 0
    failed: int = 0
    points_upserted: int = 0
    shards_written: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        return self.items_seen / self.seconds if self.seconds > 0 else 0.0


def shard_log(settings: Settings, collection: str, version: CollectionVersion) -> ShardLog:
    """The Parquet shard log of a collection version."""
    return ShardLog(settings.root / "shards" / collection / version.physical_name)


def model_for(request_model: ModelSpec | None, settings: Settings, collection: str) -> ModelSpec:
    """Model of a run: the flag, else the collection's own model, else the configured default."""
    if request_model is not None:
        return request_model
    existing = read_state(settings.root).collections.get(collection)
    if existing is not None and not {"model", "pretrained"} & settings.model_fields_set:
        return ModelSpec(existing.current.model, existing.current.pretrained)
    return ModelSpec(settings.model, settings.pretrained)


def _ensure_version(settings: Settings, store: VectorStore, collection: str, embedder: Embedder) -> CollectionVersion:
    """The collection version this run writes to, created on first use; refuses another embedder."""
    with edit_state(settings.root) as state:
        existing = state.collections.get(collection)
        if existing is not None and existing.current.embedder_id != embedder.embedder_id:
            current = existing.current
            raise SchemaMismatchError(
                f"collection {collection!r} was built with {current.embedder_id} (dim {current.dim}); this run uses "
                f"{embedder.embedder_id} (dim {embedder.dim}): index into another collection name, or pass the "
                f"collection's own model (--model {current.model}"
                + (f" --pretrained {current.pretrained})" if current.pretrained else ")")
            )
        if existing is None:
            version = CollectionVersion(
                physical_name=physical_collection_name(collection, embedder.embedder_id),
                embedder_id=embedder.embedder_id,
                model=embedder.spec.name,
                pretrained=embedder.spec.pretrained,
                dim=embedder.dim,
                created_at=datetime.now(UTC),
            )
            state.collections[collection] = CollectionState(name=collection, current=version)
        version = state.collections[collection].current
    if not store.collection_exists(version.physical_name):
        store.create_collection(version.physical_name, CollectionSpec(dim=version.dim))
    return version


def points_of(records: Sequence[ItemRecord], embeddings: np.ndarray) -> list[PointRecord]:
    """Qdrant points for the records that were embedded."""
    return [
        PointRecord(record.point_id, embeddings[row], PointPayload.from_record(record).to_qdrant())
        for row, record in enumerate(records)
        if record.status == STATUS_OK
    ]


def _shard_groups(
    groups: Iterable[tuple[list[ItemRecord], np.ndarray]], shard_size: int
) -> Iterator[tuple[list[ItemRecord], np.ndarray]]:
    """Regroup embedded batches into shards of about ``shard_size`` rows (never splitting a batch)."""
    records: list[ItemRecord] = []
    vectors: list[np.ndarray] = []
    for batch_records, batch_vectors in groups:
        records.extend(batch_records)
        vectors.append(batch_vectors)
        if len(records) >= shard_size:
            yield records, np.concatenate(vectors)
            records, vectors = [], []
    if records:
        yield records, np.concatenate(vectors)


@dataclass(slots=True)
class _ShardSink:
    """Commits shards: Parquet first (the durable record), then the Qdrant upsert."""

    store: VectorStore
    log: ShardLog
    physical_name: str
    dim: int
    report: IndexReport
    progress: ProgressReporter | None

    def commit(self, records: list[ItemRecord], embeddings: np.ndarray) -> None:
        self.log.write(records_to_batch(records, embeddings, self.dim))
        points = points_of(records, embeddings)
        self.store.upsert(self.physical_name, points)
        report = self.report
        report.shards_written += 1
        report.points_upserted += len(points)
        for record in records:
            if record.status != STATUS_OK:
                report.failed += 1
                report.failures.append((record.path, record.error or ""))
            elif record.modality == "image":
                report.images += 1
            else:
                report.text_chunks += 1
        if self.progress is not None:
            self.progress.advance(len({record.doc_key or record.key for record in records}))


def _ingest_lock(settings: Settings, collection: str) -> FileLock:
    locks = settings.root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{collection}.ingest.lock"))


def index_source(
    request: IndexRequest,
    settings: Settings,
    progress: ProgressReporter | None = None,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Index every item of the source into the collection; failed items become rows, not errors."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    collection = validate_collection_name(request.collection)
    refs = list(
        crawl_local(
            request.source,
            source_id=request.source_id,
            include=request.include,
            exclude=request.exclude,
            include_hidden=request.include_hidden,
        )
    )
    lock = _ingest_lock(settings, collection)
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise IndexBusyError(f"another ingest into collection {collection!r} is running (lock {lock.lock_file})") from exc
    try:
        if embedder is None:
            embedder = load_embedder(model_for(request.model, settings, collection), settings.device)
        store = open_store(settings)
        try:
            report = _run(refs, collection, embedder, store, settings, progress)
        finally:
            store.close()
        report.seconds = time.perf_counter() - started
        _record_run(settings, collection, report, started_at)
        return report
    finally:
        lock.release()


def _run(
    refs: list[ItemRef],
    collection: str,
    embedder: Embedder,
    store: VectorStore,
    settings: Settings,
    progress: ProgressReporter | None,
) -> IndexReport:
    from .embed.images import embed_images  # noqa: PLC0415
    from .embed.texts import embed_texts  # noqa: PLC0415

    version = _ensure_version(settings, store, collection, embedder)
    report = IndexReport(collection=collection, embedder_id=embedder.embedder_id, items_seen=len(refs))
    if progress is not None:
        progress.start(len(refs))
    sink = _ShardSink(store, shard_log(settings, collection, version), version.physical_name, version.dim, report, progress)
    images = [ref for ref in refs if ref.modality == "image"]
    texts = [ref for ref in refs if ref.modality == "text"]
    embedded_images = embed_images(
        images, embedder, batch_size=settings.batch_size, workers=settings.workers, max_pixels=settings.max_image_pixels
    )
    for records, embeddings in _shard_groups(embedded_images, settings.shard_size):
        sink.commit(records, embeddings)
    for records, embeddings in _shard_groups(embed_texts(texts, embedder, batch_size=settings.batch_size), settings.shard_size):
        sink.commit(records, embeddings)
    return report


def _record_run(settings: Settings, collection: str, report: IndexReport, started_at: datetime) -> None:
    with edit_state(settings.root) as state:
        state.collections[collection].last_run = RunSummary(
            started_at=started_at,
            seconds=report.seconds,
            items_seen=report.items_seen,
            images=report.images,
            text_chunks=report.text_chunks,
            failed=report.failed,
            points_upserted=report.points_upserted,
            shards_written=report.shards_written,
        )
