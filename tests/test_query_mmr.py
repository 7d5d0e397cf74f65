"""--mmr: Qdrant's maximal marginal relevance, checked against a NumPy MMR over the brute-force
candidates (relevance = cosine to the fused query; scores stay that relevance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from querykit import SCORE_TOL, Indexed, Reference, indexed, tiny_embedder, unit  # noqa: F401

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.store.store import MmrParams


def reference_mmr(
    ref: Reference,
    query: np.ndarray,
    limit: int,
    diversity: float,
    candidates: int,
    allowed: Callable[[int], bool] = lambda _i: True,
) -> list[tuple[str, float]]:
    """Greedy MMR: first the most relevant, then argmax λ·rel − (1−λ)·max sim to the picked, λ = 1 − diversity."""
    pool = ref.ranking(query, allowed)[:candidates]
    vectors = np.stack([unit(ref.vector(key)) for key, _ in pool])
    relevance = np.array([score for _, score in pool])
    lam = 1.0 - diversity
    picked = [0]
    while len(picked) < min(limit, len(pool)):
        pending = [i for i in range(len(pool)) if i not in picked]
        similarity = vectors[pending] @ vectors[picked].T
        scores = lam * relevance[pending] - (1 - lam) * similarity.max(axis=1)
        picked.append(pending[int(np.argmax(scores))])
    return [pool[i] for i in picked]


def assert_same_picks(hits: list[dict[str, Any]], expected: list[tuple[str, float]], ref: Reference) -> None:
    """Same relevance rank by rank; identical text chunks are interchangeable."""
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], atol=SCORE_TOL)
    for hit, (key, _) in zip(hits, expected, strict=True):
        assert np.allclose(ref.vector(hit["key"]), ref.vector(key), atol=1e-5), (hit["key"], key)


@pytest.mark.parametrize("diversity", [0.0, 0.5, 0.9])
def test_mmr_matches_numpy_reference(indexed: Indexed, tiny_embedder: Any, diversity: float) -> None:
    text = tiny_embedder.encode_texts(["cats"])[0]
    hits = indexed.query("cats", "--mmr", "--diversity", str(diversity), "--limit", "6")
    assert_same_picks(hits, reference_mmr(indexed.reference, text, 6, diversity, 100), indexed.reference)


def test_mmr_diversity_zero_is_plain_relevance_and_high_diversity_spreads(indexed: Indexed) -> None:
    plain = indexed.query("cats", "--limit", "6")
    flat = indexed.query("cats", "--mmr", "--diversity", "0", "--limit", "6")
    diverse = indexed.query("cats", "--mmr", "--diversity", "0.9", "--limit", "6")
    assert [h["score"] for h in flat] == pytest.approx([h["score"] for h in plain], abs=SCORE_TOL)
    ref = indexed.reference

    def duplicates(hits: list[dict[str, Any]]) -> int:
        vectors = np.stack([unit(ref.vector(h["key"])) for h in hits])
        similarity = vectors @ vectors.T
        return int((similarity[np.triu_indices(len(hits), 1)] > 0.9999).sum())

    assert duplicates(diverse) < duplicates(plain)  # the corpus holds three identical chunks


def test_mmr_candidates_filter_like_and_min_score(indexed: Indexed) -> None:
    ref = indexed.reference
    key = indexed.key("animals/cat.png")
    hits = indexed.query(
        "--like", key, "--mmr", "--diversity", "0.7", "--mmr-candidates", "4", "--where", "modality=image", "--limit", "3"
    )
    allowed = lambda i: ref.modality[i] == "image" and ref.keys[i] != key  # noqa: E731
    assert_same_picks(hits, reference_mmr(ref, ref.vector(key), 3, 0.7, 4, allowed), ref)
    ranking = ref.ranking(ref.vector(key), allowed)
    threshold = (ranking[1][1] + ranking[2][1]) / 2
    above = indexed.query("--like", key, "--mmr", "--where", "modality=image", "--min-score", f"{threshold:.6f}")
    assert sorted(h["key"] for h in above) == sorted(k for k, _ in ranking[:2])


def test_mmr_parameters_are_checked() -> None:
    with pytest.raises(ConfigError, match="diversity"):
        MmrParams(diversity=1.5)
    with pytest.raises(ConfigError, match="candidates"):
        MmrParams(candidates=0)
