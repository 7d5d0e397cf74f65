"""The bulk path: ``upsert_batches`` on every backend, the column-wise payloads, and rebuilds.

A bulk load must leave a collection that answers exactly like one written point by point:
the same exact top-k as brute force, the same filters, payloads and vectors. The embedded
backend defers vector indexing to ``optimize`` (and skips it below its indexing threshold); an
interrupted load is simply run again; an interrupted rebuild leaves the old collection serving.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from helpers import scroll_all
from storekit import Point, batches_of
from test_store_backends import (
    BACKENDS,
    COLLECTION,
    DIM,
    FILTER_CASES,
    SPEC,
    _assert_same_hits,
    _factory,
    _records,
    _reference_ids,
    _reference_search,
)

from mmindex.pipeline.errors import ConfigError, MmindexError, SchemaMismatchError
from mmindex.pipeline.ids import chunk_key, point_id
from mmindex.pipeline.ingest.apply import REBUILD_BATCH, point_batches, rebuild_version
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.store import edge_store as edge_module
from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.filters import parse_where
from mmindex.pipeline.store.store import PointBatch, VectorStore
from mmindex.schemas.config import Settings
from mmindex.schemas.items import (
    STATUS_DELETED,
    STATUS_FAILED,
    STATUS_OK,
    ItemRecord,
    batch_embeddings,
    batch_to_records,
    records_to_batch,
)
from mmindex.schemas.payload import PointPayload, payloads_from_table
from mmindex.schemas.state import CollectionState, CollectionVersion


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = _factory(request.param, tmp_path)()
    yield opened
    opened.close()


# -- upsert_batches on every backend --------------------------------------------------------


def test_bulk_load_answers_like_brute_force(store: VectorStore) -> None:
    records = _records(seed=6, n=700)  # batches of 300: several updates and sessions
    store.create_collection(COLLECTION, SPEC)
    assert store.upsert_batches(COLLECTION, batches_of(records, 300)) == 700
    store.optimize(COLLECTION)
    assert store.count(COLLECTION) == 700
    for query in np.random.default_rng(2).standard_normal((4, DIM)).astype(np.float32):
        _assert_same_hits(store.search(COLLECTION, query, 10), _reference_search(records, query, 10))
    for where in FILTER_CASES:
        payload_filter = parse_where(where)
        assert store.count(COLLECTION, payload_filter) == len(_reference_ids(records, payload_filter)), where
        hits = store.search(COLLECTION, records[3].vector, 7, payload_filter)
        _assert_same_hits(hits, _reference_search(records, records[3].vector, 7, payload_filter))
    wanted = [records[0], records[699], records[350]]
    for stored, record in zip(store.retrieve(COLLECTION, [r.id for r in wanted], with_vectors=True), wanted, strict=True):
        assert stored.payload == record.payload
        np.testing.assert_allclose(stored.vector, record.vector, atol=1e-6)  # type: ignore[arg-type]


def test_bulk_load_is_idempotent_and_overwrites(store: VectorStore) -> None:
    records = _records(seed=7, n=120)
    store.create_collection(COLLECTION, SPEC)
    store.upsert_batches(COLLECTION, batches_of(records, 50))
    changed = [Point(r.id, r.vector, {**r.payload, "ext": "overwritten"}) for r in records[:10]]
    store.upsert_batches(COLLECTION, batches_of(records[10:] + changed, 64))
    assert store.count(COLLECTION) == 120
    assert store.count(COLLECTION, parse_where(["ext=overwritten"])) == 10
    assert store.upsert_batches(COLLECTION, iter(())) == 0


def test_bulk_load_can_create_the_collection(store: VectorStore) -> None:
    records = _records(seed=8, n=90)
    assert store.upsert_batches(COLLECTION, batches_of(records, 40), create=SPEC) == 90
    assert store.collection_exists(COLLECTION) and store.count(COLLECTION) == 90
    _assert_same_hits(store.search(COLLECTION, records[5].vector, 5), _reference_search(records, records[5].vector, 5))
    with pytest.raises(MmindexError):
        store.upsert_batches(COLLECTION, batches_of(records, 40), create=SPEC)  # it exists
    assert store.upsert_batches("empty", iter(()), create=SPEC) == 0  # created, with nothing in it
    assert store.collection_exists("empty") and store.count("empty") == 0


def test_bulk_load_checks_shapes(store: VectorStore) -> None:
    store.create_collection(COLLECTION, SPEC)
    wrong = PointBatch([point_id("a")], np.ones((1, DIM + 1), dtype=np.float32), [{}])
    with pytest.raises(SchemaMismatchError, match="16-d"):
        store.upsert_batches(COLLECTION, [wrong])
    with pytest.raises(ConfigError, match="as many"):
        PointBatch([point_id("a"), point_id("b")], np.ones((1, DIM), dtype=np.float32), [{}])


# -- the embedded backend: sessions, interruption, deferred vector index ------------------------


def test_edge_bulk_load_holds_one_session_and_yields_after_its_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edge = EdgeStore(tmp_path)
    edge.create_collection(COLLECTION, SPEC)
    loads: list[str] = []
    real_load = EdgeStore._load_shard

    def counting_load(self: EdgeStore, name: str, config=None):
        loads.append(name)
        return real_load(self, name, config)

    monkeypatch.setattr(EdgeStore, "_load_shard", counting_load)
    records = _records(seed=8, n=300)
    edge.upsert_batches(COLLECTION, batches_of(records, 100))
    assert len(loads) == 1, "one shard session for the whole load"
    monkeypatch.setattr(edge_module, "BULK_SESSION_S", 0.0)
    monkeypatch.setattr(edge_module, "BULK_SESSION_REOPEN_FACTOR", 0.0)
    loads.clear()
    edge.upsert_batches(COLLECTION, batches_of(records, 100))
    assert len(loads) == 3, "a new session (the lock released in between) once a session's time is up"
    assert edge.count(COLLECTION) == 300
    monkeypatch.setattr(edge_module, "BULK_SESSION_REOPEN_FACTOR", 1e6)
    loads.clear()
    edge.upsert_batches(COLLECTION, batches_of(records, 100))
    assert len(loads) == 1, "a session lasts long enough that re-opening the shard stays a small share"


def test_edge_interrupted_bulk_load_keeps_what_it_wrote_and_can_run_again(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path)
    edge.create_collection(COLLECTION, SPEC)
    records = _records(seed=9, n=250)

    def failing() -> Iterator[PointBatch]:
        yield from batches_of(records[:100], 50)
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):  # the producer's error, not a store error
        edge.upsert_batches(COLLECTION, failing())
    assert edge.count(COLLECTION) == 100
    assert edge.upsert_batches(COLLECTION, batches_of(records, 64)) == 250
    assert edge.count(COLLECTION) == 250
    _assert_same_hits(edge.search(COLLECTION, records[5].vector, 5), _reference_search(records, records[5].vector, 5))


def _indexed_vectors(edge: EdgeStore) -> int:
    shard = qe.EdgeShard.load(str(edge.shard_path(COLLECTION)))
    try:
        return int(shard.info().indexed_vectors_count)
    finally:
        shard.close()


def test_edge_vector_index_is_built_by_optimize_only_above_the_threshold(tmp_path: Path) -> None:
    records = _records(seed=10, n=400)
    small = EdgeStore(tmp_path / "default")  # 400 16-d vectors: far below the default threshold
    tiny_threshold = EdgeStore(tmp_path / "tiny", indexing_threshold_kb=1)
    for edge in (small, tiny_threshold):
        edge.create_collection(COLLECTION, SPEC)
        edge.upsert_batches(COLLECTION, batches_of(records, 128))
        assert _indexed_vectors(edge) == 0, "nothing is indexed during a bulk load"
        edge.optimize(COLLECTION)
        query = records[17].vector + records[18].vector
        _assert_same_hits(edge.search(COLLECTION, query, 10), _reference_search(records, query, 10))
        where = parse_where(["modality=image", "width>=200"])
        _assert_same_hits(edge.search(COLLECTION, query, 10, where), _reference_search(records, query, 10, where))
    assert _indexed_vectors(small) == 0, "below the threshold: exact scans, no HNSW build"
    assert _indexed_vectors(tiny_threshold) > 0, "above it: optimize builds the vector index"
    tiny_threshold.drop_collection(COLLECTION)
    tiny_threshold.create_collection(COLLECTION, SPEC)
    tiny_threshold.upsert_batches(COLLECTION, batches_of(records, 128), optimize=True)
    assert _indexed_vectors(tiny_threshold) > 0, "optimize=True builds it at the end of the load"
    config = json.loads((tiny_threshold.shard_path(COLLECTION) / "edge_config.json").read_text())
    assert config["optimizers"]["indexing_threshold"] == 1


def test_edge_bulk_points_carry_the_exact_float32_values() -> None:
    """The bulk path hands qdrant-edge memoryviews of the float32 rows: the points hold exactly
    the values that lists of the same floats would give (with and without RAG vectors)."""
    vectors = _vectors(5, 3)
    payloads = [{"key": str(i)} for i in range(5)]
    ids = [point_id(str(i)) for i in range(5)]
    clip_only = PointBatch(ids, vectors, payloads)
    with_rag = PointBatch(ids, vectors, payloads, text_vectors=[None] * 5, sparse=[None] * 5)
    for batch in (clip_only, with_rag):
        points = edge_module._edge_points(batch, 0, 5, SPEC, COLLECTION)
        assert [p.vector for p in points] == [{SPEC.vector_name: row} for row in vectors.tolist()]
        assert [p.payload for p in points] == payloads and [str(p.id) for p in points] == ids


# -- column-wise payloads and the rebuild -----------------------------------------------------------


def _item(i: int, **changes: object) -> ItemRecord:
    key = f"/src/d/i{i:04d}.jpg"
    fields: dict[str, object] = dict(
        key=key, point_id=point_id(key), source_id="/src", modality="image", uri=f"file://{key}", path=f"d/i{i:04d}.jpg",
        ext="jpg", embedder_id="emb", mime="image/jpeg", width=10 * i, height=7, bytes=1000 + i,
        mtime_ns=1_700_000_000_123_456_789 + i, sha256=f"{i:064x}",
        caption=f"caption {i}" if i % 2 else None, metadata_json=json.dumps({"camera": "x100", "n": i}) if i % 3 else None,
    )
    fields.update(changes)
    return ItemRecord(**fields)  # type: ignore[arg-type]


def _chunk(doc: int, index: int, text: str) -> ItemRecord:
    doc_key = f"/src/n{doc}.txt"
    key = chunk_key(doc_key, index)
    return ItemRecord(key=key, point_id=point_id(key), source_id="/src", modality="text", uri=f"file://{doc_key}",
                      path=f"n{doc}.txt", ext="txt", embedder_id="emb", mime="text/plain", bytes=50, mtime_ns=5,
                      sha256="ab" * 32, text=text, doc_key=doc_key, chunk_index=index, char_start=0, char_end=len(text),
                      title=f"note {doc}")


def _vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _reference_payload(record: ItemRecord) -> dict[str, Any]:
    """The payload of an ok record, field by field through the validated model."""
    return PointPayload(
        key=record.key, source=record.source_id, modality=record.modality, uri=record.uri, path=record.path,
        ext=record.ext, embedder=record.embedder_id, mime=record.mime, width=record.width, height=record.height,
        bytes=record.bytes, mtime=None if record.mtime_ns is None else record.mtime_ns / 1e9, sha256=record.sha256,
        text=record.text, doc_key=record.doc_key, chunk_index=record.chunk_index, char_start=record.char_start,
        char_end=record.char_end, heading_path=record.heading_path or None, title=record.title, caption=record.caption,
        meta=None if record.metadata_json is None else json.loads(record.metadata_json),
    ).model_dump(exclude_none=True)


def test_payloads_from_table_equal_the_validated_payloads() -> None:
    records = [_item(i) for i in range(7)] + [_chunk(1, 0, "héllo"), _chunk(1, 1, "wörld"), _item(9, width=None, mime=None, mtime_ns=None)]
    table = records_to_batch(records, _vectors(len(records), 0), DIM)
    assert payloads_from_table(table) == [_reference_payload(record) for record in records]
    batch, = point_batches(records_to_batch(records + [_item(20, status=STATUS_FAILED, error="bad")],
                                            _vectors(len(records) + 1, 1), DIM))
    assert list(batch.ids) == [record.point_id for record in records]  # the failed row is left out


def _version(dim: int = DIM) -> CollectionVersion:
    return CollectionVersion(physical_name="c--bulk", embedder_id="emb", model="m", pretrained=None, dim=dim,
                             created_at=datetime.now(UTC))


def _history(root: Path, version: CollectionVersion) -> None:
    """Three shards: items written, then some rewritten, deleted, failed, and a document re-chunked."""
    log = IndexPaths(root).shard_log("c", version.physical_name)
    first = [_item(i) for i in range(60)] + [_chunk(1, 0, "a"), _chunk(1, 1, "b"), _chunk(1, 2, "c")]
    log.write(records_to_batch(first, _vectors(len(first), 1), DIM))
    second = [_item(i, width=999) for i in range(10, 30)] + [_chunk(1, 0, "a2"), _chunk(1, 1, "b2")]
    second.append(_tombstone(_chunk(1, 2, "c")))
    log.write(records_to_batch(second, _vectors(len(second), 2), DIM))
    third = [_tombstone(_item(i)) for i in range(40, 45)] + [_item(50, status=STATUS_FAILED, error="bad")]
    log.write(records_to_batch(third, _vectors(len(third), 3), DIM))
    with edit_state(root) as state:
        state.collections["c"] = CollectionState(name="c", current=version)


def _tombstone(record: ItemRecord) -> ItemRecord:
    record.status = STATUS_DELETED
    return record


def _current(root: Path, version: CollectionVersion) -> list[Point]:
    """What the collection must hold, the obvious way: each item's rows of the newest shard that
    mentions it (a later shard replaces all of them), ok rows only."""
    newest: dict[str, list[tuple[ItemRecord, np.ndarray]]] = {}
    for _ref, shard in IndexPaths(root).shard_log("c", version.physical_name).iter_tables():
        in_shard: dict[str, list[tuple[ItemRecord, np.ndarray]]] = {}
        for record, vector in zip(batch_to_records(shard), batch_embeddings(shard), strict=True):
            in_shard.setdefault(record.doc_key or record.key, []).append((record, vector))
        newest.update(in_shard)
    return [
        Point(record.point_id, vector, _reference_payload(record))
        for rows in newest.values()
        for record, vector in rows
        if record.status == STATUS_OK
    ]


@pytest.mark.parametrize("kind", BACKENDS)
def test_rebuild_holds_exactly_the_current_rows(kind: str, tmp_path: Path) -> None:
    version = _version()
    _history(tmp_path / "root", version)
    store = _factory(kind, tmp_path)()
    try:
        written = rebuild_version(Settings(root=tmp_path / "root"), store, "c", version)
        expected = _current(tmp_path / "root", version)
        assert written == len(expected) == 60 - 5 - 1 + 2
        assert store.count(version.physical_name) == written
        stored = {p.id: p for p in scroll_all(store, version.physical_name, with_vectors=True)}
        assert stored.keys() == {r.id for r in expected}
        for record in expected:
            assert stored[record.id].payload == record.payload
            np.testing.assert_allclose(stored[record.id].vector, record.vector, atol=1e-6)  # type: ignore[arg-type]
        for query in _vectors(3, 11):
            _assert_same_hits(store.search(version.physical_name, query, 10), _reference_search(expected, query, 10))
        assert store.count(version.physical_name, parse_where(["width=999"])) == 20
        assert store.count(version.physical_name, parse_where(["modality=text"])) == 2
    finally:
        store.close()


def test_interrupted_rebuild_can_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmindex.pipeline.ingest.apply as apply_module

    version = _version()
    _history(tmp_path / "root", version)
    settings, edge = Settings(root=tmp_path / "root"), EdgeStore(tmp_path / "edge")
    real = apply_module.current_point_batches

    def interrupted(log, size=REBUILD_BATCH, context=None):
        batches = real(log, 16, context=context)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(apply_module, "current_point_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rebuild_version(settings, edge, "c", version)
    assert edge.list_collections() == []  # the staging collection is gone, nothing half-filled serves
    monkeypatch.setattr(apply_module, "current_point_batches", real)
    assert rebuild_version(settings, edge, "c", version) == 56
    assert edge.count(version.physical_name) == 56
    monkeypatch.setattr(apply_module, "current_point_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rebuild_version(settings, edge, "c", version)
    assert edge.list_collections() == [version.physical_name]
    assert edge.count(version.physical_name) == 56  # the old collection kept serving, whole


_BULK_WRITER = """
import sys
from pathlib import Path
from typing import Any
import numpy as np
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.store import edge_store
from mmindex.pipeline.store.store import PointBatch

root, name, batches, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
edge_store.BULK_SESSION_S = edge_store.BULK_SESSION_REOPEN_FACTOR = 0.0  # a new session after every batch
store = edge_store.EdgeStore(root, lock_timeout=30)
rng = np.random.default_rng(5)

def produce():
    for b in range(batches):
        vectors = rng.standard_normal((size, {dim})).astype(np.float32)
        yield PointBatch([point_id(f"w-{{b}}-{{i}}") for i in range(size)], vectors, [{{"batch": b}}] * size)

print("ready", flush=True)
sys.stdin.readline()
store.upsert_batches(name, produce(), optimize=True)
"""


def test_edge_queries_interleave_with_a_bulk_load_in_another_process(tmp_path: Path) -> None:
    from test_store_backends import SUBPROCESS_DEADLINE_S, _read_line, _spawn

    batches, size = 40, 50
    edge = EdgeStore(tmp_path, lock_timeout=30)
    edge.create_collection(COLLECTION, SPEC)
    writer = _spawn(_BULK_WRITER.format(dim=DIM), str(tmp_path), COLLECTION, str(batches), str(size))
    seen: list[int] = []
    try:
        assert _read_line(writer) == "ready"
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        deadline = time.monotonic() + SUBPROCESS_DEADLINE_S
        while writer.poll() is None:
            assert time.monotonic() < deadline, "bulk writer did not finish in time"
            seen.append(edge.count(COLLECTION))
    finally:
        if writer.poll() is None:
            writer.kill()
        _, stderr = writer.communicate(timeout=SUBPROCESS_DEADLINE_S)
    assert writer.returncode == 0, stderr
    assert any(0 < count < batches * size for count in seen), f"queries ran between the bulk sessions: {seen}"
    assert seen == sorted(seen), "counts never go backwards"
    assert edge.count(COLLECTION) == batches * size


class _RecordingClient:
    """Stands in for a server's QdrantClient: records indexing-threshold changes and uploads."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail = fail
        self.threshold = 20_000

    def get_collection(self, name: str) -> object:
        from types import SimpleNamespace

        params = SimpleNamespace(vectors={"clip": SimpleNamespace(size=DIM)})
        config = SimpleNamespace(params=params, optimizer_config=SimpleNamespace(indexing_threshold=self.threshold))
        return SimpleNamespace(config=config)

    def update_collection(self, name: str, optimizers_config: object) -> bool:
        self.threshold = optimizers_config.indexing_threshold  # type: ignore[attr-defined]
        self.calls.append(("threshold", self.threshold))
        return True

    def upload_points(self, name: str, points: Iterator[object], **options: object) -> None:
        uploaded = list(points)
        if self.fail:
            raise ConnectionError("server went away")
        self.calls.append(("upload", (len(uploaded), self.threshold, options["wait"], options["batch_size"])))

    def collection_exists(self, name: str) -> bool:
        return True


def test_client_bulk_load_defers_indexing_on_a_server_and_restores_it() -> None:
    from mmindex.pipeline.store.client_store import ClientStore
    from mmindex.pipeline.store.store import UPSERT_BATCH

    client = _RecordingClient()
    store = ClientStore(client, location="http://server:6333")  # type: ignore[arg-type]
    assert store.upsert_batches(COLLECTION, batches_of(_records(n=30), 8)) == 30
    assert client.calls == [("threshold", 0), ("upload", (30, 0, True, UPSERT_BATCH)), ("threshold", 20_000)]
    failing = _RecordingClient(fail=True)
    with pytest.raises(ConnectionError):
        ClientStore(failing, location="http://server:6333").upsert_batches(COLLECTION, batches_of(_records(n=5), 8))  # type: ignore[arg-type]
    assert failing.calls == [("threshold", 0), ("threshold", 20_000)], "restored when the load fails"
