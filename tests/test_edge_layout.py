"""The embedded store seals its segments (``edge_layout``): same answers, small shard loads.

Sealed segments carry no HNSW graph and are scanned exactly, so searches answer as on the
appendable segment; a collection past the indexing threshold switches to real HNSW graphs; a
shard created before sealing existed loads and works as it was created.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import qdrant_edge as qe
from storekit import Point, batch_of, batches_of
from test_store_backends import COLLECTION, DIM, FILTER_CASES, SPEC, _assert_same_hits, _records, _reference_search

from mmindex.pipeline.store import edge_layout
from mmindex.pipeline.store.edge_store import SPEC_FILE, EdgeStore
from mmindex.pipeline.store.filters import parse_where
from mmindex.pipeline.store.store import PointBatch

SEAL_POINTS = 64  # 4 KiB of 16-d vectors: the tests' points fill a few sealed segments
SEAL_KB = 4


@pytest.fixture(autouse=True)
def _small_seal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_layout, "SEAL_POINTS", SEAL_POINTS)
    assert edge_layout.seal_kb(DIM) == SEAL_KB


def _shard_config(edge: EdgeStore) -> dict[str, object]:
    return json.loads((edge.shard_path(COLLECTION) / "edge_config.json").read_text())


def _segment_configs(edge: EdgeStore) -> list[dict[str, object]]:
    segments = (edge.shard_path(COLLECTION) / "segments").glob("*/segment.json")
    return [json.loads(path.read_text())["config"]["vector_data"][SPEC.vector_name] for path in segments]


def _assert_exact_answers(edge: EdgeStore, records: list[Point]) -> None:
    query = records[3].vector + records[40].vector
    _assert_same_hits(edge.search(COLLECTION, query, 10), _reference_search(records, query, 10))
    for where in FILTER_CASES:
        payload_filter = parse_where(where)
        _assert_same_hits(edge.search(COLLECTION, query, 7, payload_filter),
                          _reference_search(records, query, 7, payload_filter))
    assert edge.count(COLLECTION) == len(records)


def test_segments_are_sealed_without_graphs_and_answer_exactly(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path)
    edge.create_collection(COLLECTION, SPEC)
    records = _records(seed=21, n=400)  # 25 KiB of vectors: several sealed segments
    for start in range(0, len(records), 50):  # one session per upsert, as ingest units do
        edge.upsert(COLLECTION, batch_of(records[start : start + 50]))
    configs = _segment_configs(edge)
    sealed = [c for c in configs if c["index"]["type"] == "hnsw"]
    assert sealed, "the appendable segment is sealed once it outgrows SEAL_POINTS"
    assert all(c["index"]["options"]["m"] == 0 for c in sealed), "sealing builds no graph"
    _assert_exact_answers(edge, records)
    edge.delete(COLLECTION, [records[0].id, records[1].id])  # deletes and re-writes reach sealed points
    edge.upsert(COLLECTION, batch_of([records[5]]))
    _assert_exact_answers(edge, records[2:])
    edge.optimize(COLLECTION)
    assert _shard_config(edge)["hnsw_config"]["m"] == 0, "below the indexing threshold: still no graphs"


def test_a_collection_past_the_indexing_threshold_gets_hnsw_graphs(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path, indexing_threshold_kb=3 * SEAL_KB)
    edge.create_collection(COLLECTION, SPEC)
    records = _records(seed=22, n=300)  # 19 KiB of vectors
    edge.upsert_batches(COLLECTION, batches_of(records, 100), optimize=True)
    config = _shard_config(edge)
    assert config["hnsw_config"]["m"] == 16 and config["optimizers"]["indexing_threshold"] == 3 * SEAL_KB
    assert not edge_layout.seals(edge.shard_path(COLLECTION))
    assert any(c["index"]["type"] == "hnsw" and c["index"]["options"]["m"] == 16 for c in _segment_configs(edge))
    _assert_exact_answers(edge, records)  # segments below the full-scan threshold are still scanned exactly


def test_a_shard_created_before_sealing_loads_and_keeps_its_layout(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path)
    path = edge.shard_path(COLLECTION)
    old = qe.EdgeShard.create(str(path), qe.EdgeConfig(
        vectors={SPEC.vector_name: qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)},
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=200_000)))
    old.update(qe.UpdateOperation.create_field_index("modality", qe.PayloadSchemaType.Keyword))
    old.flush()
    old.close()
    (path / SPEC_FILE).write_text(json.dumps({"format": 1, "dim": DIM, "vector_name": SPEC.vector_name,
                                              "indexed_fields": {"modality": "keyword"}, "text_dim": None}))
    records = _records(seed=23, n=300)
    for start in range(0, len(records), 50):
        edge.upsert(COLLECTION, batch_of(records[start : start + 50]))
    edge.optimize(COLLECTION)
    assert "hnsw_config" not in _shard_config(edge) or _shard_config(edge)["hnsw_config"] is None
    assert all(c["index"]["type"] == "plain" for c in _segment_configs(edge)), "no sealing, no index: as before"
    _assert_exact_answers(edge, records)


def _payload_schema(edge: EdgeStore) -> set[str]:
    shard = qe.EdgeShard.load(str(edge.shard_path(COLLECTION)))
    try:
        return set(shard.info().payload_schema)
    finally:
        shard.close()


def test_a_bulk_load_that_creates_its_collection_indexes_payloads_after_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmindex.pipeline.store.edge_store as edge_module

    events: list[str] = []
    real_points, real_params = edge_module._edge_points, edge_layout.index_params
    monkeypatch.setattr(edge_module, "_edge_points", lambda *a: events.append("points") or real_points(*a))
    monkeypatch.setattr(edge_layout, "index_params", lambda kind: events.append("index") or real_params(kind))
    monkeypatch.setattr(edge_module, "BULK_SESSION_S", 0.0)  # several sessions, each sealing
    monkeypatch.setattr(edge_module, "BULK_SESSION_REOPEN_FACTOR", 0.0)
    edge = EdgeStore(tmp_path)
    records = _records(seed=25, n=400)  # several sealed segments (a seed without tied scores)
    assert edge.upsert_batches(COLLECTION, batches_of(records, 100), optimize=True, create=SPEC) == 400
    first_index = events.index("index")
    assert "points" not in events[first_index:], "no index is kept up to date during the load"
    assert events.count("index") == len(SPEC.indexed_fields)
    assert _payload_schema(edge) == set(SPEC.indexed_fields), "every index exists once the load returns"
    assert edge.collection_spec(COLLECTION).indexed_fields == SPEC.indexed_fields
    assert any(c["index"]["type"] == "hnsw" for c in _segment_configs(edge)), "the load was sealed"
    _assert_exact_answers(edge, records)

    events.clear()
    edge.drop_collection(COLLECTION)
    with pytest.raises(OSError, match="gone"):  # a failing producer still leaves the collection as specified
        edge.upsert_batches(COLLECTION, _failing_after(batches_of(records, 100), 2), create=SPEC)
    assert _payload_schema(edge) == set(SPEC.indexed_fields)
    assert edge.collection_spec(COLLECTION).indexed_fields == SPEC.indexed_fields
    assert edge.count(COLLECTION) == 200


def _failing_after(batches: Iterator[PointBatch], count: int) -> Iterator[PointBatch]:
    for _ in range(count):
        yield next(batches)
    raise OSError("gone")
