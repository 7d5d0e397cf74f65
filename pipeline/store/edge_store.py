"""``VectorStore`` over qdrant-edge: an embedded, in-process Qdrant shard per collection.

Layout under the index directory::

    <directory>/<collection>/            one EdgeShard (segments/, wal/, edge_config.json)
    <directory>/<collection>/mmindex_collection.json   the CollectionSpec; written last, so its
                                                       presence means "created completely"
    <directory>/<collection>.lock        inter-process lock of that collection
    <directory>/<collection>.turnstile.lock   queue in front of it, so waiters are not starved

qdrant-edge allows one process per shard, and a second process that merely tries to load an
open shard fails on the WAL lock *and* corrupts the first process's shard (measured; docs/ARCHITECTURE.md §4).
So every operation that opens a shard takes the collection's file lock, loads the shard, does one
unit of work, flushes (writes), closes it and releases the lock: nothing stays open between
calls, and queries interleave with a running ingest (a bulk load, ``upsert_batches``, keeps one
session for ``BULK_SESSION_S`` seconds or more, then lets waiting queries in). ``collection_exists`` and
``list_collections`` only look at the spec files (written atomically), so they take no lock.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from filelock import FileLock, Timeout

from mmindex.pipeline.errors import (
    CollectionNotFoundError,
    ConfigError,
    IndexBusyError,
    MmindexError,
    StoreUnavailableError,
)
from mmindex.pipeline.io.atomic import write_atomic
from mmindex.pipeline.io.space import EDGE_NEW_COLLECTION_BYTES, RESERVE_BYTES, disk_full, require_free
from mmindex.pipeline.store import edge_layout
from mmindex.pipeline.store._filter_translate import translate_filter
from mmindex.pipeline.store.filters import PayloadFilter
from mmindex.pipeline.store.store import (
    SCROLL_PAGE,
    SPARSE_VECTOR,
    TEXT_VECTOR,
    UPSERT_BATCH,
    CollectionSpec,
    MmrParams,
    PayloadUpdate,
    PointBatch,
    ScrollPage,
    SearchHit,
    SparseVector,
    StoredPoint,
    TextSearch,
    average_vector,
    canonical_id,
)
from mmindex.pipeline.store.vectors import (
    check_text_vectors,
    named_vector,
    point_vectors,
    stored_points,
    text_branches,
    vector_list,
    vector_matrix,
)
from mmindex.schemas.payload import FieldType

logger = logging.getLogger(__name__)

SPEC_FILE = "mmindex_collection.json"
_LOCK_POLL_S = 0.01
_SPEC_FORMAT = 1
# A segment gets a vector (HNSW) index once its vectors exceed this many KiB (a collection that
# seals its segments, ``edge_layout``: once all its vectors do); smaller ones are searched by an
# exact scan. qdrant-edge has no background optimizer: the index is built by
# ``optimize`` (after a bulk load), never during one. Qdrant's server default (10 MB) suits a
# server under many concurrent queries; one process scanning ~100,000 512-d vectors (200 MB)
# answers in tens of milliseconds, so embedded collections up to that size skip the index build
# (the slowest step of a rebuild) and answer exactly.
EDGE_INDEXING_THRESHOLD_KB = 200_000
# A bulk load holds one shard session for this long, then flushes and lets queries waiting for
# the lock in (the turnstile), and goes on in a new session; and for at least this many times
# what closing and re-opening the shard took, since loading a large shard takes long: so
# re-opening costs a bulk load at most about a tenth of its time, whatever the collection's size.
BULK_SESSION_S = 5.0
BULK_SESSION_REOPEN_FACTOR = 10.0
# A collection name becomes a directory name: no separators, no leading dot.
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}")
_SCHEMA_TYPES: dict[FieldType, qe.PayloadSchemaType] = {
    FieldType.KEYWORD: qe.PayloadSchemaType.Keyword,
    FieldType.INTEGER: qe.PayloadSchemaType.Integer,
    FieldType.FLOAT: qe.PayloadSchemaType.Float,
}


class _EdgeFilterBuilders:
    """qdrant-edge constructors for ``translate_filter``."""

    def filter(self, must: list[Any] | None, should: list[Any] | None, must_not: list[Any] | None) -> Any:
        return qe.Filter(must=must, should=should, must_not=must_not)

    def match_value(self, key: str, value: str | int) -> Any:
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))

    def match_any(self, key: str, values: list[str] | list[int]) -> Any:
        return qe.FieldCondition(key=key, match=qe.MatchAny(values))

    def range(self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None) -> Any:
        return qe.FieldCondition(key=key, range=qe.RangeFloat(gte=gte, gt=gt, lte=lte, lt=lt))

    def has_id(self, ids: list[str]) -> Any:
        return qe.HasIdCondition(set(ids))


_BUILDERS = _EdgeFilterBuilders()


def edge_filter(payload_filter: PayloadFilter | None, exclude_ids: Sequence[str] = ()) -> qe.Filter | None:
    """The qdrant-edge filter of a ``PayloadFilter`` minus ``exclude_ids`` (``None`` for no filter)."""
    return translate_filter(payload_filter, _BUILDERS, exclude_ids=exclude_ids)


def _spec_to_json(spec: CollectionSpec) -> dict[str, Any]:
    return {
        "format": _SPEC_FORMAT,
        "dim": spec.dim,
        "vector_name": spec.vector_name,
        "indexed_fields": {name: kind.value for name, kind in spec.indexed_fields.items()},
        "text_dim": spec.text_dim,
    }


def _spec_from_json(data: dict[str, Any]) -> CollectionSpec:
    return CollectionSpec(
        dim=int(data["dim"]),
        vector_name=str(data["vector_name"]),
        indexed_fields={name: FieldType(kind) for name, kind in data["indexed_fields"].items()},
        text_dim=None if data.get("text_dim") is None else int(data["text_dim"]),
    )


def _dense_vectors(spec: CollectionSpec) -> dict[str, tuple[int, qe.Distance]]:
    """The named dense vectors of a collection: CLIP, and ``text`` where it has a text model."""
    vectors = {spec.vector_name: (spec.dim, qe.Distance.Cosine)}
    if spec.text_dim is not None:
        vectors[TEXT_VECTOR] = (spec.text_dim, qe.Distance.Cosine)
    return vectors


def _edge_sparse(sparse: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(list(sparse.indices), list(sparse.values))


def _edge_points(batch: PointBatch, start: int, stop: int, spec: CollectionSpec, collection: str) -> list[qe.Point]:
    """qdrant-edge points of rows ``start:stop`` of a batch.

    Each CLIP vector goes to qdrant-edge as a memoryview of its float32 row, which it reads as a
    sequence of floats: the same values as a list, without first building a Python float per
    element (``tolist`` took a third of the Python time of a rebuild, benchmarks/rebuild.py).
    """
    clips = [memoryview(row) for row in vector_matrix(batch.vectors[start:stop], spec.dim, collection)]
    ids, payloads = batch.ids[start:stop], batch.payloads[start:stop]
    if batch.text_vectors is None and batch.sparse is None:  # CLIP only: no per-point lookups
        return [qe.Point(id=point_id, vector={spec.vector_name: clip}, payload=payload)  # type: ignore[dict-item]  # a memoryview reads as floats
                for point_id, clip, payload in zip(ids, clips, payloads, strict=True)]
    points = []
    for offset, (point_id, clip, payload) in enumerate(zip(ids, clips, payloads, strict=True)):
        text_vector, sparse = batch.rag_vectors(start + offset)
        vectors = point_vectors(clip, text_vector, sparse, spec.vector_name, spec.text_dim, collection, _edge_sparse)
        points.append(qe.Point(id=point_id, vector=vectors, payload=payload))
    return points


def _ordered(records: Sequence[Any], ids: Sequence[str]) -> list[Any]:
    """Records in the order their ids were asked for (Qdrant returns them in its own order)."""
    by_id = {str(record.id): record for record in records}
    wanted = dict.fromkeys(canonical_id(point_id) for point_id in ids)
    return [by_id[point_id] for point_id in wanted if point_id in by_id]


class EdgeStore:
    """Embedded Qdrant (qdrant-edge): one shard directory per collection, opened per operation."""

    def __init__(
        self, directory: Path, lock_timeout: float = 30.0, indexing_threshold_kb: int = EDGE_INDEXING_THRESHOLD_KB
    ) -> None:
        """``indexing_threshold_kb`` applies to the collections this store creates (see the constant)."""
        self.directory = Path(directory)
        self.lock_timeout = lock_timeout
        self.indexing_threshold_kb = indexing_threshold_kb

    # -- paths -----------------------------------------------------------------------------

    def shard_path(self, name: str) -> Path:
        """Directory of the collection's shard."""
        if not _COLLECTION_NAME.fullmatch(name):
            raise ConfigError(
                f"invalid collection name {name!r}: use letters, digits, '_', '-', '.' (not first), at most 200"
            )
        return self.directory / name

    def lock_path(self, name: str) -> Path:
        """The inter-process lock file of the collection (kept on disk between uses)."""
        return self.directory / f"{self.shard_path(name).name}.lock"

    def _spec_path(self, name: str) -> Path:
        return self.shard_path(name) / SPEC_FILE

    # -- locking and opening ---------------------------------------------------------------

    def _turnstile_path(self, name: str) -> Path:
        return self.directory / f"{self.shard_path(name).name}.turnstile.lock"

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Hold the collection's inter-process lock; ``IndexBusyError`` after ``lock_timeout``.

        File locks are not fair: a writer that re-locks right after each upsert would starve
        every query. So a waiter first takes a turnstile lock and holds it until it gets the
        collection lock; the holder of the collection lock must pass the turnstile to lock
        again, so the lock alternates between a running ingest and waiting queries.
        """
        lock = self._take_lock(name)
        try:
            yield
        finally:
            lock.release()

    def _take_lock(self, name: str) -> FileLock:
        """The collection's lock, acquired through the turnstile (see ``_locked``); the caller
        releases it (from any thread)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        lock = FileLock(self.lock_path(name), thread_local=False)
        turnstile = FileLock(self._turnstile_path(name), thread_local=False)
        self._acquire(turnstile, name, deadline)
        try:
            self._acquire(lock, name, deadline)
        finally:
            turnstile.release()
        try:
            self._finish_interrupted_swap(name)
        except BaseException:
            lock.release()
            raise
        return lock

    def _recover(self, name: str) -> None:
        """Finish an interrupted replacement of ``name`` now (taking its lock does it)."""
        with self._locked(name):
            pass

    def _swap_journal(self, name: str) -> Path:
        return self.directory / f".swap-{self.shard_path(name).name}.json"

    def _finish_interrupted_swap(self, name: str) -> None:
        """Bring back a collection whose ``replace_collection`` died half-way (its journal is left):
        with the collection's lock held, its shard is either the complete replacement (the swap is
        finished) or, when that is not there, the old shard put back; the old one is then removed."""
        journal = self._swap_journal(name)
        if not journal.is_file():
            return
        try:
            record = json.loads(journal.read_text(encoding="utf-8"))
            replacement, retired = self.shard_path(str(record["replacement"])), self.directory / str(record["retired"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreUnavailableError(f"the swap journal {journal} is unreadable ({exc}); the old shard may be in "
                                        f"{self.directory}/.retired-*: move it back to {self.shard_path(name)}") from exc
        target = self.shard_path(name)
        if not target.exists():
            if (replacement / SPEC_FILE).is_file():
                os.replace(replacement, target)
            elif retired.exists():
                os.replace(retired, target)
        if target.exists():
            shutil.rmtree(retired, ignore_errors=True)
        journal.unlink()
        logger.warning("finished an interrupted replacement of collection %r (by %r) at %s", name,
                       replacement.name, target)

    def has_waiter(self, name: str) -> bool:
        """Whether another process (or thread) waits for the collection's lock: a waiter holds the
        turnstile until it gets the lock (``_locked``)."""
        turnstile = FileLock(self._turnstile_path(name), thread_local=False)
        try:
            turnstile.acquire(timeout=0)
        except Timeout:
            return True
        turnstile.release()
        return False

    def _acquire(self, lock: FileLock, name: str, deadline: float) -> None:
        try:
            lock.acquire(timeout=0, poll_interval=_LOCK_POLL_S)
            return
        except Timeout:
            logger.info("collection %r is in use by another process; waiting up to %gs", name, self.lock_timeout)
        try:
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()), poll_interval=_LOCK_POLL_S)
        except Timeout:
            raise IndexBusyError(
                f"index collection {name!r} in {self.directory} is busy: another process held its lock for "
                f"over {self.lock_timeout:g}s (run a Qdrant server for many concurrent users)"
            ) from None

    def _read_spec(self, name: str) -> CollectionSpec:
        path = self._spec_path(name)
        try:
            return _spec_from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise CollectionNotFoundError(f"collection {name!r} not found in {self.directory}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreUnavailableError(f"cannot read collection spec {path}: {exc}") from exc

    def _write_spec(self, name: str, spec: CollectionSpec) -> None:
        """Write the spec atomically: it is the mark of a completely created collection."""
        path = self._spec_path(name)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(_spec_to_json(spec), tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)

    def _create_shard(self, name: str, spec: CollectionSpec) -> qe.EdgeShard:
        if self._spec_path(name).exists():
            raise MmindexError(f"collection {name!r} already exists in {self.directory}")
        path = self.shard_path(name)
        if path.exists():
            logger.warning("removing %s, left over from an interrupted collection creation", path)
            shutil.rmtree(path)
        # Its segments are written through memory maps: on a full disk that is a SIGBUS, not an error.
        require_free(self.directory, EDGE_NEW_COLLECTION_BYTES + RESERVE_BYTES, f"a new embedded collection {name!r}")
        sparse = [] if spec.text_dim is None else [SPARSE_VECTOR]
        config = edge_layout.shard_config(_dense_vectors(spec), sparse, self.indexing_threshold_kb)
        shard = qe.EdgeShard.create(str(path), config)
        try:
            for field_name, kind in spec.indexed_fields.items():
                shard.update(qe.UpdateOperation.create_field_index(field_name, edge_layout.index_params(kind)))
        except BaseException:
            shard.close()
            raise
        logger.info("created collection %r (%d-d %r, %d payload indexes) at %s", name, spec.dim,
                    spec.vector_name, len(spec.indexed_fields), path)
        return shard

    def _load_shard(self, name: str, config: qe.EdgeConfig | None = None) -> tuple[qe.EdgeShard, CollectionSpec]:
        spec = self._read_spec(name)
        path = self.shard_path(name)
        try:
            return qe.EdgeShard.load(str(path), config), spec
        except Exception as exc:  # qdrant-edge raises plain Exception for every failure
            raise StoreUnavailableError(
                f"cannot open embedded index shard {path}: {exc} (if it is damaged, `mmindex rebuild -c COLLECTION` "
                "refills it from the Parquet shards)"
            ) from exc

    @contextmanager
    def _open_shard(
        self, name: str, create_spec: CollectionSpec | None = None, write: bool = False,
        config: qe.EdgeConfig | None = None,
    ) -> Iterator[tuple[qe.EdgeShard, CollectionSpec]]:
        """Lock, load (or create with ``create_spec``) the shard; seal and flush writes; close; unlock.

        A created shard is flushed and its spec file written before the block runs: the
        collection exists from then on, also if the block fails. ``config`` is applied on load
        (see ``edge_layout.graph_config``). A shard that seals its segments (``edge_layout``)
        runs its optimizers before each flush, so its appendable segment, held in RAM at every
        load, stays small. Failures of qdrant-edge inside the block become
        ``StoreUnavailableError`` naming the shard; mmindex's own errors pass through.
        """
        path = self.shard_path(name)
        with self._locked(name):
            if create_spec is None:
                shard, spec = self._load_shard(name, config)
            else:
                shard, spec = self._wrap(path, "create", self._create_shard, name, create_spec), create_spec
            try:
                if create_spec is not None:
                    self._wrap(path, "flush", shard.flush)
                    self._write_spec(name, create_spec)
                yield shard, spec
                if write and edge_layout.seals(path):
                    self._wrap(path, "seal", shard.optimize)
                if write:
                    self._wrap(path, "flush", shard.flush)
            except MmindexError:
                raise
            except Exception as exc:  # qdrant-edge raises plain Exception for every failure
                raise disk_full(exc, path) or StoreUnavailableError(f"embedded index shard {path}: {exc}") from exc
            finally:
                self._wrap(path, "close", shard.close)

    @staticmethod
    def _wrap(path: Path, what: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except MmindexError:
            raise
        except Exception as exc:  # qdrant-edge raises plain Exception for every failure
            raise disk_full(exc, path) or StoreUnavailableError(f"cannot {what} embedded index shard {path}: {exc}") from exc

    # -- collections -----------------------------------------------------------------------

    def collection_exists(self, name: str) -> bool:
        """Whether the collection was created completely (its spec file exists; a replacement
        interrupted half-way is finished first)."""
        if self._swap_journal(name).is_file():
            self._recover(name)
        return self._spec_path(name).is_file()

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the shard with its named cosine vector and payload indexes; error if it exists."""
        with self._open_shard(name, create_spec=spec):
            pass

    def drop_collection(self, name: str) -> None:
        """Delete the shard directory (under the lock); no error if it does not exist."""
        path = self.shard_path(name)
        with self._locked(name):
            if not path.exists():
                return
            self._spec_path(name).unlink(missing_ok=True)  # first, so the collection is gone at once
            shutil.rmtree(path)
        logger.info("dropped collection %r at %s", name, path)

    def replace_collection(self, name: str, replacement: str) -> None:
        """Swap the shard directories under both collections' locks: the old one is renamed aside,
        the replacement renamed into its place, then the old one removed."""
        target, staged = self.shard_path(name), self.shard_path(replacement)
        if not self.collection_exists(replacement):
            raise CollectionNotFoundError(f"collection {replacement!r} not found in {self.directory}")
        retired = self.directory / f".retired-{target.name}-{os.getpid()}"
        with self._locked(replacement), self._locked(name):
            # The journal says what to finish if this process dies between the renames (the next
            # holder of the lock does it: ``_finish_interrupted_swap``).
            journal = self._swap_journal(name)
            write_atomic(journal, json.dumps({"replacement": replacement, "retired": retired.name}).encode("utf-8"))
            if target.exists():
                os.replace(target, retired)
            os.replace(staged, target)
            shutil.rmtree(retired, ignore_errors=True)
            journal.unlink()
        logger.info("replaced collection %r by %r at %s", name, replacement, target)

    def list_collections(self) -> list[str]:
        """Names of the completely created collections, sorted."""
        if not self.directory.is_dir():
            return []
        for journal in self.directory.glob(".swap-*.json"):  # replacements interrupted half-way: finish them
            self._recover(journal.name[len(".swap-") : -len(".json")])
        return sorted(entry.name for entry in self.directory.iterdir()
                      if not entry.name.startswith(".") and (entry / SPEC_FILE).is_file())  # not a retired shard

    def collection_spec(self, name: str) -> CollectionSpec:
        """What the collection was created with."""
        return self._read_spec(name)

    # -- points ----------------------------------------------------------------------------

    def upsert(self, name: str, batch: PointBatch) -> None:
        """Write a batch in updates of ``UPSERT_BATCH`` points in one shard session; flushed on return."""
        if not len(batch):
            return
        with self._open_shard(name, write=True) as (shard, spec):
            for start in range(0, len(batch), UPSERT_BATCH):
                shard.update(qe.UpdateOperation.upsert_points(_edge_points(batch, start, start + UPSERT_BATCH, spec, name)))
        logger.debug("upserted %d points into %r", len(batch), name)

    def upsert_batches(
        self, name: str, batches: Iterable[PointBatch], optimize: bool = False, create: CollectionSpec | None = None
    ) -> int:
        """Bulk load in as few locked shard sessions as possible; flushed on return; points written.

        One session takes batch after batch (each sent in updates of ``UPSERT_BATCH`` points, its
        vectors converted in one call) for ``BULK_SESSION_S`` seconds (longer for a shard slow to
        re-open, see ``BULK_SESSION_REOPEN_FACTOR``), then flushes and closes, so queries waiting
        for the lock get their turn, and the load goes on in the next session. Nothing is indexed meanwhile;
        ``optimize=True`` runs the optimizers (the HNSW build of segments above the indexing threshold) at the end of the last session.
        With ``create`` the first session creates the collection (as ``create_collection``) and
        loads into it, saving a close and a re-load of the new shard; its payload indexes are then
        created after the load (``_create_indexes_after_load``), not kept up to date during it.
        """
        deferred: CollectionSpec | None = None  # the spec whose payload indexes come after the load
        if create is not None and create.indexed_fields:
            deferred, create = create, dataclasses.replace(create, indexed_fields={})
        pending = iter(batches)
        batch: PointBatch | None = None
        try:
            batch = next(pending, None)
        finally:
            if batch is None and create is not None:  # nothing to load (or the producer failed)
                self.create_collection(name, deferred or create)
        written = 0
        failure: BaseException | None = None
        closing_s = 0.0  # what flushing and closing the previous session took
        loaded: tuple[int, CollectionSpec] | None = None  # (points, spec) after an optimized load
        while batch is not None:
            entering = time.monotonic()
            with self._open_shard(name, create_spec=create, write=True) as (shard, spec):
                opened = time.monotonic()
                reopen_s = 0.0 if create is not None else closing_s + opened - entering  # (creating is no re-open)
                create = None
                deadline = opened + max(BULK_SESSION_S, BULK_SESSION_REOPEN_FACTOR * reopen_s)
                while batch is not None:
                    for start in range(0, len(batch), UPSERT_BATCH):
                        points = _edge_points(batch, start, start + UPSERT_BATCH, spec, name)
                        shard.update(qe.UpdateOperation.upsert_points(points))
                    written += len(batch)
                    try:  # the producer's own failure is raised as it is, once this session is flushed
                        batch = next(pending, None)
                    except Exception as exc:  # noqa: BLE001 - re-raised below, unchanged
                        batch, failure = None, exc
                    if time.monotonic() >= deadline:
                        break
                if deferred is not None and batch is None:  # the last session (also when the producer failed)
                    spec = self._create_indexes_after_load(name, shard, deferred)
                if optimize and batch is None and failure is None:
                    shard.optimize()
                    loaded = int(shard.info().points_count), spec
                leaving = time.monotonic()
            closing_s = time.monotonic() - leaving
        if failure is not None:
            raise failure
        if loaded is not None:
            self._build_graphs_when_large(name, *loaded)
        logger.debug("bulk-loaded %d points into %r", written, name)
        return written

    def _create_indexes_after_load(self, name: str, shard: qe.EdgeShard, spec: CollectionSpec) -> CollectionSpec:
        """Create the payload indexes of a bulk-loaded new collection, then record them in its spec.

        A shard that seals its segments (``edge_layout``) is sealed first, so the indexes are built
        once, memory-mapped, in the sealed segments: the optimizer's copy builds every index of a
        segment anew, so indexes kept up to date in the appendable segment during the load were
        work thrown away (measured at 20,000 512-d points with qdrant-edge alone, in seconds:
        upsert 2.26 + seal 3.35 with the indexes during the load; upsert 0.37 + seal 0.40 +
        indexes 2.01 after it). A shard that does not seal builds them in its appendable segment.
        Until the spec is rewritten it lists no indexes, which is what the shard then holds.
        """
        if edge_layout.seals(self.shard_path(name)):
            shard.optimize()
        for field_name, kind in spec.indexed_fields.items():
            shard.update(qe.UpdateOperation.create_field_index(field_name, edge_layout.index_params(kind)))
        self._write_spec(name, spec)
        return spec

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""
        if not ids:
            return
        with self._open_shard(name, write=True) as (shard, _spec):
            for start in range(0, len(ids), UPSERT_BATCH):
                shard.update(qe.UpdateOperation.delete_points(list(ids[start : start + UPSERT_BATCH])))

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
        *,
        score_threshold: float | None = None,
        exclude_ids: Sequence[str] = (),
        mmr: MmrParams | None = None,
    ) -> list[SearchHit]:
        """Nearest points by cosine similarity (higher is closer), best first, filtered.

        With ``mmr`` the order is qdrant-edge's MMR (``lambda = 1 - diversity``) and the scores
        stay the cosine similarity to ``vector``, as on a Qdrant server.
        """
        with self._open_shard(name) as (shard, spec):
            query = vector_list(vector, spec.dim, name)
            if limit <= 0:
                return []
            return self._nearest(shard, spec, query, limit, edge_filter(payload_filter, exclude_ids),
                                 with_vectors, score_threshold, mmr)

    @staticmethod
    def _nearest(
        shard: qe.EdgeShard,
        spec: CollectionSpec,
        query: list[float],
        limit: int,
        point_filter: qe.Filter | None,
        with_vectors: bool,
        score_threshold: float | None,
        mmr: MmrParams | None,
    ) -> list[SearchHit]:
        scoring: Any = (
            qe.Query.Nearest(query, using=spec.vector_name)
            if mmr is None
            else qe.Mmr(query, 1.0 - mmr.diversity, max(mmr.candidates, limit), using=spec.vector_name)
        )
        request = qe.QueryRequest(
            limit=limit,
            query=scoring,
            filter=point_filter,
            score_threshold=score_threshold,
            with_payload=True,
            with_vector=[spec.vector_name] if with_vectors else False,
        )
        return [
            SearchHit(
                id=str(point.id),
                score=float(point.score),
                payload=dict(point.payload or {}),
                vector=named_vector(point.vector, spec.vector_name) if with_vectors else None,
            )
            for point in shard.query(request)
        ]

    def recommend(
        self,
        name: str,
        positive_ids: Sequence[str],
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
        *,
        negative_ids: Sequence[str] = (),
        score_threshold: float | None = None,
    ) -> list[SearchHit]:
        """Points like the stored examples: Qdrant's ``average_vector`` recommend, done here.

        qdrant-edge's recommend queries take vectors, not ids, and only score strategies; so the
        examples are read and averaged as a Qdrant server does, in the same shard session.
        """
        examples = [canonical_id(point_id) for point_id in (*positive_ids, *negative_ids)]
        with self._open_shard(name) as (shard, spec):
            records = shard.retrieve(list(dict.fromkeys(examples)), with_payload=False, with_vector=[spec.vector_name])
            vectors = {str(record.id): named_vector(record.vector, spec.vector_name) for record in records}
            missing = [point_id for point_id in examples if vectors.get(point_id) is None]
            if missing:
                raise ConfigError(f"no point {missing[0]} in collection {name!r} to recommend from")
            query = average_vector(
                [vectors[canonical_id(i)] for i in positive_ids], [vectors[canonical_id(i)] for i in negative_ids]  # type: ignore[misc]
            )
            if limit <= 0:
                return []
            return self._nearest(shard, spec, vector_list(query, spec.dim, name), limit,
                                 edge_filter(payload_filter, examples), with_vectors, score_threshold, None)

    def search_text(
        self, name: str, request: TextSearch, limit: int, payload_filter: PayloadFilter | None = None
    ) -> list[SearchHit]:
        """Passages by ``text`` (cosine), ``bm25`` (BM25 with Qdrant's IDF) or both fused by RRF."""
        with self._open_shard(name) as (shard, spec):
            check_text_vectors(spec.text_dim, name)
            if limit <= 0:
                return []
            point_filter = edge_filter(payload_filter)
            branches = [qe.Query.Nearest(query, using=using)
                        for query, using in text_branches(request, spec.text_dim, name, _edge_sparse)]
            if request.mode == "hybrid":
                prefetches = [qe.Prefetch(limit=max(request.candidates, limit), query=b, filter=point_filter) for b in branches]
                fusion: Any = qe.Fusion.Dbsf() if request.fusion == "dbsf" else \
                    qe.Fusion.Rrf(k=request.rrf_k, weights=list(request.rrf_weights))  # the stubs miss Rrf under Fusion
                query = qe.QueryRequest(limit=limit, prefetches=prefetches, query=fusion,
                                        filter=point_filter, with_payload=True, with_vector=False)
            else:
                query = qe.QueryRequest(limit=limit, query=branches[0], filter=point_filter, with_payload=True,
                                        with_vector=False)
            found = shard.query(query)
        return [SearchHit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in found]

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        """Points by id, in the order asked (missing ids are left out)."""
        if not ids:
            return []
        with self._open_shard(name) as (shard, spec):
            records = shard.retrieve(
                list(dict.fromkeys(ids)), with_payload=True, with_vector=[spec.vector_name] if with_vectors else False
            )
        return stored_points(_ordered(records, ids), spec.vector_name, with_vectors)

    def count(self, name: str, payload_filter: PayloadFilter | None = None) -> int:
        """Exact number of points matching the filter."""
        with self._open_shard(name) as (shard, _spec):
            return int(shard.count(qe.CountRequest(exact=True, filter=edge_filter(payload_filter))))

    def scroll(
        self,
        name: str,
        payload_filter: PayloadFilter | None = None,
        limit: int = SCROLL_PAGE,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> ScrollPage:
        """One page of the points matching the filter, in id order (one shard session per page)."""
        with self._open_shard(name) as (shard, spec):
            records, next_offset = shard.scroll(
                qe.ScrollRequest(
                    offset=None if offset is None else canonical_id(offset),
                    limit=limit,
                    filter=edge_filter(payload_filter),
                    with_payload=True,
                    with_vector=[spec.vector_name] if with_vectors else False,
                )
            )
        points = stored_points(records, spec.vector_name, with_vectors)
        return ScrollPage(points, None if next_offset is None else str(next_offset))

    def set_payload(self, name: str, updates: Sequence[PayloadUpdate]) -> None:
        """Set payload keys point by point in one shard session; ids not stored are ignored."""
        if not updates:
            return
        with self._open_shard(name, write=True) as (shard, _spec):
            for update in updates:
                only_this = qe.Filter(must=[qe.HasIdCondition({canonical_id(update.id)})])
                shard.update(qe.UpdateOperation.set_payload_by_filter(only_this, update.payload))

    def create_field_index(self, name: str, field_name: str, kind: FieldType) -> None:
        """Index a payload field of an existing collection and record it in the spec file."""
        with self._open_shard(name, write=True) as (shard, spec):
            if spec.indexed_fields.get(field_name) == kind:
                return
            shard.update(qe.UpdateOperation.create_field_index(field_name, edge_layout.index_params(kind)))
            self._write_spec(name, CollectionSpec(spec.dim, spec.vector_name, {**spec.indexed_fields, field_name: kind},
                                                  spec.text_dim))

    def optimize(self, name: str) -> bool:
        """Run qdrant-edge's segment optimizers (HNSW build, vacuum) now; True if anything changed.

        qdrant-edge has no background optimizer: call this after a bulk load so that searches
        use an HNSW index instead of scanning the appendable segments. A collection that seals
        its segments without graphs (``edge_layout``) gets real HNSW graphs here once its vectors
        exceed the store's indexing threshold.
        """
        with self._open_shard(name, write=True) as (shard, spec):
            changed = bool(shard.optimize())
            points = int(shard.info().points_count)
        return self._build_graphs_when_large(name, points, spec) or changed

    def _build_graphs_when_large(self, name: str, points: int, spec: CollectionSpec) -> bool:
        """Switch a sealing collection of ``points`` points past the indexing threshold to HNSW
        graphs (one more session, with Qdrant's default HNSW); True if it did."""
        if not edge_layout.seals(self.shard_path(name)) or edge_layout.vectors_kb(points, spec.dim) < self.indexing_threshold_kb:
            return False
        logger.info("collection %r outgrew %d KiB of vectors: building HNSW graphs", name, self.indexing_threshold_kb)
        config = edge_layout.graph_config(_dense_vectors(spec), self.indexing_threshold_kb)
        with self._open_shard(name, write=True, config=config) as (shard, _spec):
            shard.optimize()
        return True

    def close(self) -> None:
        """Nothing to release: shards and locks are held only for the duration of a call."""
