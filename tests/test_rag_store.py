"""RAG vectors on every store backend: the dense ``text`` vector, the sparse ``bm25`` vector
(with Qdrant's IDF) and their RRF fusion, checked against plain-Python references.

Runs on qdrant-edge, qdrant-client in memory and qdrant-client on a local path.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from storekit import Point, batch_of

from mmindex.pipeline.embed.sparse import document_vector, query_vector
from mmindex.pipeline.errors import ConfigError, SchemaMismatchError
from mmindex.pipeline.store.client_store import ClientStore
from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.filters import parse_where
from mmindex.pipeline.store.store import (
    RRF_K,
    RRF_WEIGHTS,
    CollectionSpec,
    SearchHit,
    TextSearch,
    VectorStore,
)

CLIP_DIM, TEXT_DIM = 16, 8
COLLECTION = "rag"
SPEC = CollectionSpec(dim=CLIP_DIM, text_dim=TEXT_DIM)
BACKENDS = ("edge", "client-memory", "client-local")
WORDS = ("invoice refund billing email monthly kernel compiler rocket orbit satellite cat sleeps garden "
         "bird password rotate settings cluster replica shard backup restore").split()
SCORE_TOL = 1e-4


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    texts = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(5, 25)))
        texts.append(" ".join(words) + (" ticket ZX-4411" if i == 5 else ""))
    return texts


def _points() -> list[Point]:
    rng = np.random.default_rng(3)
    texts = _texts(40)
    clip, text = _unit(rng, 50, CLIP_DIM), _unit(rng, 40, TEXT_DIM)
    points = [
        Point(f"00000000-0000-4000-8000-{i:012d}", clip[i], {"key": f"doc{i}", "modality": "text",
                    "source": "a" if i % 2 else "b", "text": t}, text_vector=text[i], sparse=document_vector(t))
        for i, t in enumerate(texts)
    ]
    points += [
        Point(f"00000000-0000-4000-9000-{i:012d}", clip[i], {"key": f"img{i}", "modality": "image", "source": "a"})
        for i in range(40, 50)
    ]
    return points


def _open(kind: str, root: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(root / "edge")
    if kind == "client-local":
        return ClientStore.local(root / "qdrant-local")
    return ClientStore.in_memory()


@pytest.fixture(scope="module")
def points() -> list[Point]:
    return _points()


@pytest.fixture(scope="module", params=BACKENDS)
def populated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              points: list[Point]) -> Iterator[VectorStore]:
    store = _open(request.param, tmp_path_factory.mktemp(request.param))
    store.create_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, batch_of(points))
    yield store
    store.close()


def _dense_reference(points: list[Point], query: np.ndarray, limit: int, source: str | None = None) -> list[tuple[str, float]]:
    scored = [
        (p.id, float(np.dot(p.text_vector, query) / np.linalg.norm(query)))
        for p in points
        if p.text_vector is not None and (source is None or p.payload["source"] == source)
    ]
    return sorted(scored, key=lambda item: -item[1])[:limit]


def _bm25_reference(points: list[Point], question: str, limit: int) -> list[tuple[str, float]]:
    """BM25 as Qdrant computes it with ``modifier=idf``: sum over query terms of idf * document weight."""
    documents = [p for p in points if p.sparse is not None]
    frequency: dict[int, int] = defaultdict(int)
    for p in documents:
        for index in set(p.sparse.indices):  # type: ignore[union-attr]
            frequency[index] += 1
    n = len(documents)
    query = query_vector(question)
    scored = []
    for p in documents:
        weights = dict(zip(p.sparse.indices, p.sparse.values, strict=True))  # type: ignore[union-attr]
        score = sum(
            math.log(1 + (n - frequency[i] + 0.5) / (frequency[i] + 0.5)) * q * weights[i]
            for i, q in zip(query.indices, query.values, strict=True)
            if i in weights
        )
        if score > 0:
            scored.append((p.id, score))
    return sorted(scored, key=lambda item: -item[1])[:limit]


def _assert_hits(hits: list[SearchHit], expected: list[tuple[str, float]]) -> None:
    assert [round(h.score, 4) for h in hits] == pytest.approx([round(s, 4) for _, s in expected], abs=SCORE_TOL)
    assert [h.id for h in hits] == [point_id for point_id, _ in expected]


def test_dense_text_search_matches_cosine_reference(populated: VectorStore, points: list[Point]) -> None:
    query = _unit(np.random.default_rng(11), 1, TEXT_DIM)[0]
    hits = populated.search_text(COLLECTION, TextSearch(dense=query), 7)
    _assert_hits(hits, _dense_reference(points, query, 7))
    assert all(hit.payload["modality"] == "text" for hit in hits)  # images have no text vector
    filtered = populated.search_text(COLLECTION, TextSearch(dense=query), 5, parse_where(["source=a"]))
    _assert_hits(filtered, _dense_reference(points, query, 5, source="a"))


def test_sparse_search_is_bm25_with_collection_idf(populated: VectorStore, points: list[Point]) -> None:
    for question in ("refund the invoice by email", "rotate password settings", "ZX-4411"):
        hits = populated.search_text(COLLECTION, TextSearch(sparse=query_vector(question)), 6)
        expected = _bm25_reference(points, question, 6)
        assert expected, question
        _assert_hits(hits, expected)
    rare = populated.search_text(COLLECTION, TextSearch(sparse=query_vector("ticket zx-4411")), 3)
    assert rare[0].payload["key"] == "doc5"


def _by_score(hits: list[SearchHit]) -> list[tuple[float, frozenset[str]]]:
    """Hits grouped by score (RRF ties may come in either order)."""
    groups: dict[float, set[str]] = defaultdict(set)
    for hit in hits:
        groups[round(hit.score, 6)].add(hit.id)
    return sorted(((score, frozenset(ids)) for score, ids in groups.items()), reverse=True)


def test_hybrid_is_rrf_of_dense_and_sparse(populated: VectorStore) -> None:
    query = _unit(np.random.default_rng(5), 1, TEXT_DIM)[0]
    sparse = query_vector("billing invoice refund cluster backup")
    candidates = 12
    hybrid = populated.search_text(COLLECTION, TextSearch(dense=query, sparse=sparse, candidates=candidates), 10)
    dense = populated.search_text(COLLECTION, TextSearch(dense=query), candidates)
    lexical = populated.search_text(COLLECTION, TextSearch(sparse=sparse), candidates)
    expected = rrf_fuse([dense, lexical], 10, weights=RRF_WEIGHTS)
    assert len(hybrid) == 10
    # The last score may tie with points cut off differently; compare everything above it exactly.
    cut = min(h.score for h in hybrid)
    assert _by_score([h for h in hybrid if h.score > cut + 1e-9]) == _by_score([h for h in expected if h.score > cut + 1e-9])
    assert [h.score for h in hybrid] == pytest.approx([h.score for h in expected], abs=1e-6)


def test_hybrid_respects_filters(populated: VectorStore) -> None:
    query = _unit(np.random.default_rng(9), 1, TEXT_DIM)[0]
    request = TextSearch(dense=query, sparse=query_vector("rocket orbit satellite"))
    hits = populated.search_text(COLLECTION, request, 8, parse_where(["source=b"]))
    assert hits and all(hit.payload["source"] == "b" for hit in hits)


@pytest.mark.parametrize("kind", BACKENDS)
def test_deleted_chunks_leave_both_indexes(kind: str, tmp_path: Path, points: list[Point]) -> None:
    store = _open(kind, tmp_path)
    try:
        store.create_collection(COLLECTION, SPEC)
        store.upsert(COLLECTION, batch_of(points))
        store.upsert(COLLECTION, batch_of(points))  # idempotent
        assert store.count(COLLECTION) == len(points)
        target = points[5]
        store.delete(COLLECTION, [target.id])
        rare = store.search_text(COLLECTION, TextSearch(sparse=query_vector("ZX-4411")), 5)
        assert target.id not in {hit.id for hit in rare}
        dense = store.search_text(COLLECTION, TextSearch(dense=target.text_vector), 3)
        assert target.id not in {hit.id for hit in dense}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ("edge", "client-local"))
def test_text_vectors_survive_reopening(kind: str, tmp_path: Path, points: list[Point]) -> None:
    store = _open(kind, tmp_path)
    store.create_collection(COLLECTION, SPEC)
    store.upsert(COLLECTION, batch_of(points))
    store.close()
    reopened = _open(kind, tmp_path)
    try:
        hits = reopened.search_text(COLLECTION, TextSearch(sparse=query_vector("ZX-4411")), 1)
        assert hits[0].payload["key"] == "doc5"
    finally:
        reopened.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_collection_without_text_model_refuses_text_vectors(kind: str, tmp_path: Path, points: list[Point]) -> None:
    store = _open(kind, tmp_path)
    try:
        store.create_collection(COLLECTION, CollectionSpec(dim=CLIP_DIM))
        with pytest.raises(SchemaMismatchError, match="without a text model"):
            store.search_text(COLLECTION, TextSearch(sparse=query_vector("refund")), 3)
        with pytest.raises(SchemaMismatchError, match="without a text model"):
            store.upsert(COLLECTION, batch_of(points[:2]))
        store.upsert(COLLECTION, batch_of(points[40:]))  # images (CLIP only) are fine
        assert store.count(COLLECTION) == 10
    finally:
        store.close()


def rrf_fuse(
    rankings: Sequence[Sequence[SearchHit]], limit: int, k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[SearchHit]:
    """The reference: reciprocal rank fusion of ranked lists, exactly as Qdrant computes it.

    A point at 0-based position ``i`` of a list of weight ``w`` scores ``1 / ((i + 1) / w + k - 1)``
    (``1 / (i + k)`` at weight 1); scores add up over the lists, ties keep the first-seen order.
    """
    scores: dict[str, float] = {}
    first: dict[str, SearchHit] = {}
    for number, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[number]
        for position, hit in enumerate(ranking):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / ((position + 1) / weight + k - 1)
            first.setdefault(hit.id, hit)
    ordered = sorted(scores, key=lambda point_id: scores[point_id], reverse=True)[:limit]
    return [SearchHit(point_id, scores[point_id], first[point_id].payload) for point_id in ordered]


def test_rrf_fuse_formula() -> None:
    a = [SearchHit("x", 0.9, {}), SearchHit("y", 0.8, {})]
    b = [SearchHit("y", 5.0, {}), SearchHit("z", 1.0, {})]
    fused = rrf_fuse([a, b], 3, k=60)
    assert [hit.id for hit in fused] == ["y", "x", "z"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 60)
    assert fused[1].score == pytest.approx(1 / 60)
    weighted = rrf_fuse([a, b], 3, k=2, weights=[1.0, 0.5])  # Qdrant's weighted form
    assert weighted[0].score == pytest.approx(1 / (2 / 1.0 + 1) + 1 / (1 / 0.5 + 1))


def test_rrf_ties_go_to_the_dense_list(populated: VectorStore) -> None:
    """The best dense and the best sparse hit tie under plain RRF; the default weights decide."""
    target = next(p for p in _points() if "ZX-4411" in p.payload["text"])
    query = _unit(np.random.default_rng(21), 1, TEXT_DIM)[0]
    dense = populated.search_text(COLLECTION, TextSearch(dense=query), 3)
    assert target.id not in {hit.id for hit in dense}  # fixed seed: only the sparse list has it
    request = TextSearch(dense=query, sparse=query_vector("ZX-4411"), candidates=3)
    hybrid = populated.search_text(COLLECTION, request, 3)
    assert hybrid[0].id == dense[0].id and hybrid[1].id == target.id
    assert hybrid[0].score > hybrid[1].score


def dbsf_fuse(rankings: Sequence[Sequence[SearchHit]], limit: int) -> list[tuple[str, float]]:
    """The reference of distribution-based score fusion: each list's scores mapped from
    [mean - 3 sd, mean + 3 sd] (the sample standard deviation) to [0, 1], summed over the lists."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        values = np.array([hit.score for hit in ranking], dtype=np.float64)
        spread = 3 * values.std(ddof=1)
        low, high = values.mean() - spread, values.mean() + spread
        for hit in ranking:
            scores[hit.id] = scores.get(hit.id, 0.0) + (hit.score - low) / (high - low)
    return sorted(scores.items(), key=lambda item: -item[1])[:limit]


def test_hybrid_dbsf_is_normalized_score_fusion(populated: VectorStore) -> None:
    query = _unit(np.random.default_rng(5), 1, TEXT_DIM)[0]
    sparse = query_vector("billing invoice refund cluster backup")
    candidates = 12
    request = TextSearch(dense=query, sparse=sparse, candidates=candidates, fusion="dbsf")
    hybrid = populated.search_text(COLLECTION, request, 8)
    dense = populated.search_text(COLLECTION, TextSearch(dense=query), candidates)
    lexical = populated.search_text(COLLECTION, TextSearch(sparse=sparse), candidates)
    expected = dbsf_fuse([dense, lexical], 8)
    assert [h.id for h in hybrid] == [point_id for point_id, _ in expected]
    assert [h.score for h in hybrid] == pytest.approx([score for _, score in expected], abs=1e-4)
    rrf = populated.search_text(COLLECTION, TextSearch(dense=query, sparse=sparse, candidates=candidates), 8)
    assert [h.score for h in rrf] != pytest.approx([h.score for h in hybrid], abs=1e-3)


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown fusion"):
        TextSearch(dense=np.ones(3, dtype=np.float32), fusion="max")  # type: ignore[arg-type]
