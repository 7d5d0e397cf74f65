"""--mmr: Qdrant's maximal marginal relevance, checked against a NumPy MMR over the brute-force
candidates (relevance = cosine to the fused query; scores stay that relevance)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import SCORE_TOL, Indexed, assert_same_picks, reference_mmr, unit

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.store.store import MmrParams


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
