"""One behavioural suite for every ``VectorStore`` backend (docs/ARCHITECTURE.md §4).

Each test runs on embedded qdrant-edge, qdrant-client in memory and qdrant-client on a local
path, and checks answers against a NumPy / plain-Python reference: exact cosine top-k (ids and
scores), every filter operator, idempotent upserts, deletes, retrieval, persistence. Edge-only
tests cover the inter-process file lock and a writer process interleaved with queries; a
congruence test runs the same operations on edge and client and compares the answers.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from storekit import Point, batch_of

from mmindex.pipeline.errors import (
    CollectionNotFoundError,
    ConfigError,
    IndexBusyError,
    MmindexError,
    SchemaMismatchError,
    StoreUnavailableError,
)
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.store.client_store import ClientStore
from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.filters import Condition, PayloadFilter, parse_where
from mmindex.pipeline.store.store import (
    CollectionSpec,
    MmrParams,
    PayloadUpdate,
    SearchHit,
    VectorStore,
)
from mmindex.schemas.payload import INDEXED_FIELDS, FieldType

DIM = 16
N_POINTS = 200
COLLECTION = "items"
SPEC = CollectionSpec(dim=DIM)
SCORE_TOL = 1e-4
SUBPROCESS_DEADLINE_S = 60.0
BACKENDS = ("edge", "client-memory", "client-local")
PERSISTENT_BACKENDS = ("edge", "client-local")

StoreFactory = Callable[[], VectorStore]


# -- data and reference -------------------------------------------------------------------


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _payload(i: int) -> dict[str, Any]:
    """Varied payloads: keywords, ints (some missing), floats, nested int-or-string years."""
    payload: dict[str, Any] = {
        "key": f"src/{i:04d}.jpg",
        "source": ("a", "b", "c")[i % 3],
        "modality": "image" if i % 4 else "text",
        "mtime": 1.6e9 + 0.5 * i,
        "meta": {"year": (2019 + i % 3) if i % 2 else str(2019 + i % 3), "camera": ("x100", "gr3")[i % 2]},
    }
    if i % 5:
        payload["width"] = 100 * (i % 7)
    return payload


def _records(seed: int = 0, n: int = N_POINTS) -> list[Point]:
    vectors = _unit_vectors(np.random.default_rng(seed), n)
    return [Point(point_id(f"item-{i}"), vectors[i], _payload(i)) for i in range(n)]


_MISSING = object()


def _lookup(payload: dict[str, Any], dotted: str) -> Any:
    value: Any = payload
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _equals_any(field: str, value: Any, wanted: tuple[Any, ...]) -> bool:
    """Qdrant equality: same type; an int on a field of unknown type also matches its string."""
    for candidate in wanted:
        forms = [candidate]
        if field not in INDEXED_FIELDS and isinstance(candidate, int):
            forms.append(str(candidate))
        if any(type(value) is type(form) and value == form for form in forms):
            return True
    return False


def _holds(payload: dict[str, Any], condition: Condition) -> bool:
    value = _lookup(payload, condition.field)
    wanted = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    if condition.op in ("eq", "any"):
        return value is not _MISSING and _equals_any(condition.field, value, wanted)
    if condition.op in ("ne", "none"):
        return value is _MISSING or not _equals_any(condition.field, value, wanted)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    bound = float(condition.value)  # type: ignore[arg-type]
    return {"gte": value >= bound, "lte": value <= bound, "gt": value > bound, "lt": value < bound}[condition.op]


def _reference_ids(records: list[Point], payload_filter: PayloadFilter | None) -> list[str]:
    conditions = payload_filter.conditions if payload_filter else ()
    return [r.id for r in records if all(_holds(r.payload, c) for c in conditions)]


def _reference_search(
    records: list[Point], query: np.ndarray, limit: int, payload_filter: PayloadFilter | None = None
) -> list[tuple[str, float]]:
    allowed = set(_reference_ids(records, payload_filter))
    candidates = [r for r in records if r.id in allowed]
    if not candidates:
        return []
    scores = np.stack([r.vector for r in candidates]) @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(candidates[i].id, float(scores[i])) for i in order]


def _assert_same_hits(hits: list[SearchHit], expected: list[tuple[str, float]]) -> None:
    assert [h.id for h in hits] == [point for point, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=SCORE_TOL)


# -- fixtures -----------------------------------------------------------------------------


def _factory(kind: str, root: Path) -> StoreFactory:
    """A function that opens a new store object of ``kind`` on ``root``."""
    if kind == "edge":
        return lambda: EdgeStore(root / "edge")
    if kind == "client-local":
        return lambda: ClientStore.local(root / "qdrant-local")
    if kind == "client-memory":
        return ClientStore.in_memory
    raise ValueError(kind)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    """A fresh, empty store of each backend."""
    opened = _factory(request.param, tmp_path)()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def records() -> list[Point]:
    return _records()


@pytest.fixture(scope="module", params=BACKENDS)
def populated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, records: list[Point]
) -> Iterator[VectorStore]:
    """A store of each backend holding ``records`` in ``COLLECTION`` (read-only tests)."""
    opened = _factory(request.param, tmp_path_factory.mktemp(request.param))()
    opened.create_collection(COLLECTION, SPEC)
    opened.upsert(COLLECTION, batch_of(records))
    yield opened
    opened.close()


# -- collections ---------------------------------------------------------------------------


def test_create_exists_list_drop(store: VectorStore) -> None:
    assert not store.collection_exists(COLLECTION)
    assert store.list_collections() == []
    store.create_collection(COLLECTION, SPEC)
    store.create_collection("other", CollectionSpec(dim=4, vector_name="text"))
    assert store.collection_exists(COLLECTION)
    assert store.list_collections() == ["items", "other"]
    store.drop_collection("other")
    store.drop_collection("never-created")
    assert store.list_collections() == ["items"]
    assert not store.collection_exists("other")
    assert store.count(COLLECTION) == 0


def test_replace_collection_swaps_in_a_complete_one_and_drops_the_old(store: VectorStore, records: list[Point]) -> None:
    store.create_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, batch_of(records[:2]))
    for round_ in range(2):  # a second replace replaces the replacement (behind an alias on a server)
        staged = f"{COLLECTION}-rebuild-{round_}"
        store.create_collection(staged, SPEC)
        store.upsert(staged, batch_of(records))
        assert store.count(COLLECTION) == (2 if round_ == 0 else len(records))  # the old one serves meanwhile
        store.replace_collection(COLLECTION, staged)
        assert store.count(COLLECTION) == len(records)
        assert store.list_collections() == [COLLECTION]
        assert store.search(COLLECTION, records[0].vector, limit=1)[0].id == records[0].id
    store.upsert(COLLECTION, batch_of(records[:1]))  # writes go to the new one
    assert store.count(COLLECTION) == len(records)
    store.drop_collection(COLLECTION)
    assert not store.collection_exists(COLLECTION) and store.list_collections() == []
    with pytest.raises(CollectionNotFoundError):
        store.replace_collection(COLLECTION, "never-created")


def test_create_twice_is_an_error(store: VectorStore) -> None:
    store.create_collection(COLLECTION, SPEC)
    with pytest.raises(MmindexError, match="already exists"):
        store.create_collection(COLLECTION, SPEC)


def test_missing_collection_raises_not_found(store: VectorStore) -> None:
    query = np.ones(DIM, dtype=np.float32)
    with pytest.raises(CollectionNotFoundError, match="nope"):
        store.search("nope", query, limit=3)
    with pytest.raises(CollectionNotFoundError):
        store.count("nope")
    with pytest.raises(CollectionNotFoundError):
        store.upsert("nope", batch_of(_records(n=2)))


def test_wrong_dimension_is_a_schema_mismatch(store: VectorStore) -> None:
    store.create_collection(COLLECTION, SPEC)
    with pytest.raises(SchemaMismatchError, match="16-d"):
        store.upsert(COLLECTION, batch_of([Point(point_id("x"), np.ones(DIM + 1), {})]))
    with pytest.raises(SchemaMismatchError):
        store.search(COLLECTION, np.ones(DIM - 1), limit=1)


# -- points --------------------------------------------------------------------------------


def test_upsert_count_and_idempotent_reupsert(store: VectorStore) -> None:
    many = _records(seed=1, n=300)  # more than one UPSERT_BATCH
    store.create_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, batch_of(many))
    assert store.count(COLLECTION) == 300
    changed = [Point(r.id, r.vector, {**r.payload, "ext": "overwritten"}) for r in many[:10]]
    store.upsert(COLLECTION, batch_of(many[100:] + changed))
    assert store.count(COLLECTION) == 300
    assert store.count(COLLECTION, parse_where(["ext=overwritten"])) == 10


def test_delete_ignores_unknown_ids(store: VectorStore) -> None:
    points = _records(n=20)
    store.create_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, batch_of(points))
    store.delete(COLLECTION, [p.id for p in points[:5]] + [point_id("never-written")])
    assert store.count(COLLECTION) == 15
    assert store.retrieve(COLLECTION, [points[0].id]) == []


def test_retrieve_with_vectors_in_asked_order(populated: VectorStore, records: list[Point]) -> None:
    wanted = [records[7], records[3], records[150]]
    ids = [r.id for r in wanted] + [point_id("missing")]
    got = populated.retrieve(COLLECTION, ids, with_vectors=True)
    assert [p.id for p in got] == [r.id for r in wanted]
    for point, record in zip(got, wanted, strict=True):
        assert point.payload == record.payload
        assert point.vector is not None and point.vector.dtype == np.float32
        np.testing.assert_allclose(point.vector, record.vector, atol=1e-6)
    assert all(p.vector is None for p in populated.retrieve(COLLECTION, ids[:1]))


def test_search_is_exact_cosine_top_k(populated: VectorStore, records: list[Point]) -> None:
    rng = np.random.default_rng(42)
    for query in rng.standard_normal((5, DIM)).astype(np.float32):  # not normalized: cosine must not care
        hits = populated.search(COLLECTION, query, limit=10)
        _assert_same_hits(hits, _reference_search(records, query, 10))
        assert all(isinstance(h.id, str) and h.vector is None for h in hits)


def test_search_returns_payload_and_vectors(populated: VectorStore, records: list[Point]) -> None:
    target = records[11]
    (hit,) = populated.search(COLLECTION, target.vector, limit=1, with_vectors=True)
    assert hit.id == target.id
    assert hit.score == pytest.approx(1.0, abs=SCORE_TOL)
    assert hit.payload == target.payload
    assert hit.vector is not None and hit.vector.dtype == np.float32
    np.testing.assert_allclose(hit.vector, target.vector, atol=1e-6)


FILTER_CASES: list[list[str]] = [
    ["modality=image"],
    ["modality!=image"],
    ["source=a,b"],
    ["source!=a,b"],
    ["width=300"],
    ["width!=300"],
    ["width>=300"],
    ["width<=300"],
    ["width>300"],
    ["width<300"],
    ["mtime>=1600000050"],
    ["mtime<1600000010.5"],
    ["mtime=1600000020.5"],
    ["meta.year=2020"],
    ["meta.year!=2020"],
    ["meta.year=2019,2021"],
    ["meta.year!=2019,2021"],
    ["meta.year>=2020"],
    ["meta.camera=x100"],
    ["modality=image", "width>=300", "meta.year!=2021"],
    ["source=zzz"],
]


@pytest.mark.parametrize("where", FILTER_CASES, ids=lambda where: " & ".join(where))
def test_filters_match_reference(populated: VectorStore, records: list[Point], where: list[str]) -> None:
    payload_filter = parse_where(where)
    expected_ids = _reference_ids(records, payload_filter)
    assert populated.count(COLLECTION, payload_filter) == len(expected_ids)
    query = records[0].vector
    hits = populated.search(COLLECTION, query, limit=15, payload_filter=payload_filter)
    _assert_same_hits(hits, _reference_search(records, query, 15, payload_filter))


def test_filter_int_matches_string_form_on_unindexed_field(populated: VectorStore, records: list[Point]) -> None:
    years = [r.payload["meta"]["year"] for r in records]
    assert 2020 in years and "2020" in years  # the data holds both forms
    expected = sum(1 for year in years if year in (2020, "2020"))
    assert populated.count(COLLECTION, PayloadFilter((Condition("meta.year", "eq", 2020),))) == expected
    assert populated.count(COLLECTION, PayloadFilter((Condition("meta.year", "eq", "2020"),))) == years.count("2020")


@pytest.mark.parametrize("kind", PERSISTENT_BACKENDS)
def test_points_persist_across_reopen(kind: str, tmp_path: Path) -> None:
    factory = _factory(kind, tmp_path)
    points = _records(n=30)
    first = factory()
    first.create_collection(COLLECTION, SPEC)
    first.upsert(COLLECTION, batch_of(points))
    first.close()
    second = factory()
    try:
        assert second.list_collections() == [COLLECTION]
        assert second.count(COLLECTION) == 30
        (stored,) = second.retrieve(COLLECTION, [points[4].id], with_vectors=True)
        assert stored.payload == points[4].payload
        query = points[9].vector
        _assert_same_hits(second.search(COLLECTION, query, 5), _reference_search(points, query, 5))
    finally:
        second.close()


# -- query features: thresholds, exclusions, MMR, recommend, scroll, payload updates ------------


def _reference_mmr(
    records: list[Point], query: np.ndarray, limit: int, mmr: MmrParams, payload_filter: PayloadFilter | None = None
) -> list[tuple[str, float]]:
    """Greedy MMR over the nearest ``mmr.candidates``: λ·relevance − (1−λ)·max similarity to the picked."""
    pool = _reference_search(records, query, mmr.candidates, payload_filter)
    by_id = {r.id: r.vector / np.linalg.norm(r.vector) for r in records}
    vectors = np.stack([by_id[point] for point, _ in pool])
    relevance = np.array([score for _, score in pool])
    lam = 1.0 - mmr.diversity
    picked = [0]
    while len(picked) < min(limit, len(pool)):
        pending = [i for i in range(len(pool)) if i not in picked]
        scores = lam * relevance[pending] - (1 - lam) * (vectors[pending] @ vectors[picked].T).max(axis=1)
        picked.append(pending[int(np.argmax(scores))])
    return [pool[i] for i in picked]


def test_search_score_threshold_and_excluded_ids(populated: VectorStore, records: list[Point]) -> None:
    query = records[5].vector
    ranked = _reference_search(records, query, N_POINTS)
    threshold = (ranked[9][1] + ranked[10][1]) / 2
    _assert_same_hits(populated.search(COLLECTION, query, 50, score_threshold=threshold), ranked[:10])
    excluded = [records[5].id, ranked[3][0], point_id("never-written")]
    kept = [r for r in records if r.id not in excluded]
    where = parse_where(["modality=image"])
    hits = populated.search(COLLECTION, query, 12, where, exclude_ids=excluded)
    _assert_same_hits(hits, _reference_search(kept, query, 12, where))


@pytest.mark.parametrize("mmr", [MmrParams(0.0, 40), MmrParams(0.4, 40), MmrParams(0.85, 25)], ids=str)
def test_search_mmr_matches_reference(populated: VectorStore, records: list[Point], mmr: MmrParams) -> None:
    rng = np.random.default_rng(11)
    for query in rng.standard_normal((3, DIM)).astype(np.float32):
        where = parse_where(["source!=c"])
        hits = populated.search(COLLECTION, query, 8, where, mmr=mmr, with_vectors=True)
        _assert_same_hits(hits, _reference_mmr(records, query, 8, mmr, where))
        assert all(hit.vector is not None for hit in hits)


def test_recommend_is_average_vector_without_the_examples(populated: VectorStore, records: list[Point]) -> None:
    positive, negative = [records[1], records[2]], [records[3]]
    rest = [r for r in records if r not in (*positive, *negative)]
    mean = np.mean([r.vector for r in positive], axis=0)
    where = parse_where(["modality=image"])
    hits = populated.recommend(COLLECTION, [r.id for r in positive], 10, where, negative_ids=[r.id for r in negative])
    _assert_same_hits(hits, _reference_search(rest, 2 * mean - negative[0].vector, 10, where))
    alone = populated.recommend(COLLECTION, [records[7].id.upper()], 5, with_vectors=True)
    _assert_same_hits(alone, _reference_search([r for r in records if r is not records[7]], records[7].vector, 5))
    assert all(hit.vector is not None for hit in alone)


def test_recommend_unknown_example_is_a_config_error(populated: VectorStore, records: list[Point]) -> None:
    with pytest.raises(ConfigError, match="no point"):
        populated.recommend(COLLECTION, [records[0].id, point_id("never-written")], 3)


@pytest.mark.parametrize("where", [[], ["modality=text"], ["source=zzz"]], ids=lambda w: " & ".join(w) or "all")
def test_scroll_pages_through_matching_points_in_id_order(
    populated: VectorStore, records: list[Point], where: list[str]
) -> None:
    payload_filter = parse_where(where)
    seen, offset, pages = [], None, 0
    while True:
        page = populated.scroll(COLLECTION, payload_filter, limit=37, offset=offset, with_vectors=True)
        assert len(page.points) <= 37
        seen.extend(page.points)
        pages += 1
        if page.next_offset is None:
            break
        offset = page.next_offset
    expected = sorted(_reference_ids(records, payload_filter))
    assert [p.id for p in seen] == expected
    by_id = {r.id: r for r in records}
    for point in seen:
        assert point.payload == by_id[point.id].payload
        np.testing.assert_allclose(point.vector, by_id[point.id].vector, atol=1e-6)  # type: ignore[arg-type]


def test_set_payload_replaces_keys_keeps_others_and_ignores_unknown_ids(store: VectorStore) -> None:
    points = _records(n=20)
    spec = CollectionSpec(dim=DIM, indexed_fields={k: v for k, v in INDEXED_FIELDS.items() if k != "labels"})
    store.create_collection(COLLECTION, spec)
    store.upsert(COLLECTION, batch_of(points))
    store.create_field_index(COLLECTION, "labels", FieldType.KEYWORD)
    store.create_field_index(COLLECTION, "labels", FieldType.KEYWORD)  # again: no error
    store.set_payload(COLLECTION, [
        PayloadUpdate(points[0].id, {"labels": ["cat", "dog"], "label_scores": {"cat": 0.9, "dog": 0.6}}),
        PayloadUpdate(points[1].id, {"labels": ["猫"], "label_scores": {"猫": 0.7}}),
        PayloadUpdate(point_id("never-written"), {"labels": ["ghost"]}),
    ])
    store.set_payload(COLLECTION, [PayloadUpdate(points[0].id, {"labels": ["cat"], "label_scores": {"cat": 0.8}})])
    first, second = store.retrieve(COLLECTION, [points[0].id, points[1].id])
    assert first.payload == {**points[0].payload, "labels": ["cat"], "label_scores": {"cat": 0.8}}
    assert second.payload["labels"] == ["猫"]
    assert store.count(COLLECTION) == 20
    assert store.count(COLLECTION, parse_where(["labels=cat"])) == 1
    assert store.count(COLLECTION, parse_where(["labels=猫,cat"])) == 2
    assert store.count(COLLECTION, parse_where(["label_scores.cat>=0.75"])) == 1
    if isinstance(store, EdgeStore):
        assert store.collection_spec(COLLECTION).indexed_fields["labels"] is FieldType.KEYWORD


def test_edge_and_client_agree_on_mmr_recommend_and_scroll(tmp_path: Path) -> None:
    points = _records(seed=4, n=120)
    stores: list[VectorStore] = [EdgeStore(tmp_path / "edge"), ClientStore.in_memory()]
    answers = []
    try:
        for opened in stores:
            opened.create_collection(COLLECTION, SPEC)
            opened.upsert(COLLECTION, batch_of(points))
            query = points[0].vector + points[1].vector
            answers.append([
                opened.search(COLLECTION, query, 10, parse_where(["width>=200"]), mmr=MmrParams(0.6, 30)),
                opened.recommend(COLLECTION, [points[2].id], 10, negative_ids=[points[3].id]),
                opened.search(COLLECTION, query, 10, score_threshold=0.2, exclude_ids=[points[0].id]),
                [SearchHit(p.id, 0.0, p.payload) for p in opened.scroll(COLLECTION, limit=50).points],
            ])
    finally:
        for opened in stores:
            opened.close()
    for edge_hits, client_hits in zip(*answers, strict=True):
        assert edge_hits
        assert [h.id for h in edge_hits] == [h.id for h in client_hits]
        np.testing.assert_allclose([h.score for h in edge_hits], [h.score for h in client_hits], atol=SCORE_TOL)


# -- congruence ----------------------------------------------------------------------------


def _run_script(store: VectorStore) -> list[list[SearchHit]]:
    """The same writes and queries on any backend; returns the answers."""
    points = _records(seed=3, n=N_POINTS)
    store.create_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, batch_of(points))
    store.delete(COLLECTION, [p.id for p in points[::7]])
    store.upsert(COLLECTION, batch_of([Point(p.id, p.vector, {**p.payload, "source": "z"}) for p in points[1::9]]))
    queries = _unit_vectors(np.random.default_rng(9), 3)
    answers = []
    for where in (["source=z"], ["width>=200", "modality!=text"], ["meta.year=2021"], []):
        for query in queries:
            answers.append(store.search(COLLECTION, query, limit=12, payload_filter=parse_where(where)))
    return answers


def test_edge_and_client_give_the_same_answers(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path / "edge")
    client = ClientStore.in_memory()
    try:
        for edge_hits, client_hits in zip(_run_script(edge), _run_script(client), strict=True):
            assert edge_hits, "every query of the script has answers"
            assert [h.id for h in edge_hits] == [h.id for h in client_hits]
            np.testing.assert_allclose([h.score for h in edge_hits], [h.score for h in client_hits], atol=SCORE_TOL)
            assert [h.payload for h in edge_hits] == [h.payload for h in client_hits]
    finally:
        client.close()


# -- client: connecting to a server ---------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_client_connect_failure_names_url_not_key() -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing listens there
    with pytest.raises(StoreUnavailableError) as caught:
        ClientStore.connect(url, api_key="s3cret-key", timeout=2)
    message = str(caught.value)
    assert url in message and "s3cret-key" not in message and "\n" not in message


# -- edge: names, corruption, optimizing, the inter-process lock ----------------------------


def test_edge_rejects_path_like_names(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path)
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(ConfigError):
            edge.create_collection(bad, SPEC)


def test_edge_corrupt_shard_is_unavailable_with_its_path(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path)
    edge.create_collection(COLLECTION, SPEC)
    (tmp_path / COLLECTION / "edge_config.json").write_text("not json", encoding="utf-8")
    with pytest.raises(StoreUnavailableError, match=str(tmp_path / COLLECTION)):
        edge.count(COLLECTION)


def test_edge_optimize_keeps_answers(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path)
    points = _records(n=N_POINTS)
    edge.create_collection(COLLECTION, SPEC)
    for start in range(0, N_POINTS, 50):  # several writes, so there is something to merge
        edge.upsert(COLLECTION, batch_of(points[start : start + 50]))
    edge.delete(COLLECTION, [p.id for p in points[:20]])
    assert isinstance(edge.optimize(COLLECTION), bool)
    kept = points[20:]
    assert edge.count(COLLECTION) == len(kept)
    _assert_same_hits(edge.search(COLLECTION, points[30].vector, 10), _reference_search(kept, points[30].vector, 10))


_HOLD_LOCK = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire(timeout=30)
print("locked", flush=True)
sys.stdin.readline()
lock.release()
"""

_WRITER = """
import sys
from pathlib import Path
import numpy as np
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.store import PointBatch

root, name, batches, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = EdgeStore(root, lock_timeout=30)
rng = np.random.default_rng(5)
print("ready", flush=True)
sys.stdin.readline()
for b in range(batches):
    vectors = rng.standard_normal((size, {dim})).astype(np.float32)
    store.upsert(name, PointBatch([point_id(f"w-{{b}}-{{i}}") for i in range(size)], vectors, [{{"batch": b}}] * size))
"""


_SWAP_AND_DIE = """
import os, sys
from pathlib import Path
import numpy as np
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.store import edge_store
from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.store import CollectionSpec, PointBatch

root, die_after = Path(sys.argv[1]), int(sys.argv[2])
store = EdgeStore(root, lock_timeout=30)
rng = np.random.default_rng(3)
for name, size in (("{collection}", 3), ("staged", 5)):
    store.create_collection(name, CollectionSpec(dim={dim}))
    store.upsert(name, PointBatch([point_id(f"{{name}}-{{i}}") for i in range(size)],
                                  rng.standard_normal((size, {dim})).astype(np.float32), [{{}}] * size))
renames = []
real_replace = os.replace

def replace_then_die(source, target):
    if Path(source).is_dir():  # the shard renames, not the atomic writes of the journal and spec files
        renames.append(source)
        if len(renames) > die_after:
            os._exit(3)  # killed between the shard renames: no cleanup runs
    real_replace(source, target)

edge_store.os.replace = replace_then_die
store.replace_collection("{collection}", "staged")
"""


@pytest.mark.parametrize(("die_after", "points"), [(0, 3), (1, 5)], ids=["before-any-rename", "between-the-renames"])
def test_a_replacement_killed_half_way_is_finished_or_undone_by_the_next_open(
    tmp_path: Path, die_after: int, points: int
) -> None:
    """A rebuild's swap killed before its first rename keeps the old shard; killed between the
    renames (the old shard moved aside, the collection's directory gone), the next open finishes
    the swap with the complete replacement. Never a missing or empty collection, no leftovers."""
    child = _spawn(_SWAP_AND_DIE.format(collection=COLLECTION, dim=DIM), str(tmp_path), str(die_after))
    try:
        child.wait(timeout=SUBPROCESS_DEADLINE_S)
    finally:
        child.kill()
    assert child.returncode == 3, child.stderr.read() if child.stderr else ""
    assert any(entry.name.startswith(".swap-") for entry in tmp_path.iterdir())  # the journal is left
    edge = EdgeStore(tmp_path)
    assert edge.list_collections() == sorted([COLLECTION, "staged"] if die_after == 0 else [COLLECTION])
    assert edge.collection_exists(COLLECTION) and edge.count(COLLECTION) == points
    assert not any(entry.name.startswith((".swap-", ".retired-")) for entry in tmp_path.iterdir())


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _read_line(process: subprocess.Popen[str], deadline_s: float = SUBPROCESS_DEADLINE_S) -> str:
    """One line of the child's stdout, or fail after the deadline (never hang the suite)."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=deadline_s):
            process.kill()
            pytest.fail(f"child process said nothing within {deadline_s}s")
    return process.stdout.readline().strip()


def _finish(process: subprocess.Popen[str]) -> None:
    """Let the child go on (one stdin line) and require a clean exit."""
    assert process.stdin is not None
    process.stdin.write("\n")
    process.stdin.flush()
    try:
        _, stderr = process.communicate(timeout=SUBPROCESS_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("child process did not finish in time")
    assert process.returncode == 0, stderr


def test_edge_lock_held_elsewhere_times_out_then_works(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path, lock_timeout=0.3)
    edge.create_collection(COLLECTION, SPEC)
    holder = _spawn(_HOLD_LOCK, str(edge.lock_path(COLLECTION)))
    try:
        assert _read_line(holder) == "locked"
        started = time.monotonic()
        with pytest.raises(IndexBusyError, match=COLLECTION) as caught:
            edge.count(COLLECTION)
        assert time.monotonic() - started < 10
        assert "\n" not in str(caught.value)
        with pytest.raises(IndexBusyError):
            edge.upsert(COLLECTION, batch_of(_records(n=3)))
    finally:
        _finish(holder)
    edge.upsert(COLLECTION, batch_of(_records(n=3)))
    assert edge.count(COLLECTION) == 3


def test_edge_queries_interleave_with_a_writer_process(tmp_path: Path) -> None:
    batches, size = 30, 20
    edge = EdgeStore(tmp_path, lock_timeout=30)
    edge.create_collection(COLLECTION, SPEC)
    writer = _spawn(_WRITER.format(dim=DIM), str(tmp_path), COLLECTION, str(batches), str(size))
    seen: list[int] = []
    try:
        assert _read_line(writer) == "ready"
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        deadline = time.monotonic() + SUBPROCESS_DEADLINE_S
        query = np.ones(DIM, dtype=np.float32)
        while writer.poll() is None:
            assert time.monotonic() < deadline, "writer did not finish in time"
            seen.append(edge.count(COLLECTION))
            hits = edge.search(COLLECTION, query, limit=5)
            assert min(5, seen[-1]) <= len(hits) <= 5
    finally:
        if writer.poll() is None:
            writer.kill()
        _, stderr = writer.communicate(timeout=SUBPROCESS_DEADLINE_S)
    assert writer.returncode == 0, stderr
    assert any(0 < count < batches * size for count in seen), f"queries ran between the writer's upserts: {seen}"
    assert seen == sorted(seen), "counts never go backwards"
    assert edge.count(COLLECTION) == batches * size
    assert len(edge.search(COLLECTION, np.ones(DIM), limit=5)) == 5
