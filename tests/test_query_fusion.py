"""Fused queries (texts + images + negatives, weighted), modality filters, --min-score.

Expected rankings are brute-force cosine top-k over the vectors in the Parquet shards, with the
fused query vector computed here in NumPy; every backend must give exactly those hits, and the
per-part contributions in --json must add up to each score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import COLLECTION, SCORE_TOL, Indexed, assert_hits, fused, image_vector, run_cli, unit

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.fusion import EmbeddedPart, QueryPart, fuse, parse_weights, with_weights

# -- the formula, on random vectors -------------------------------------------------------------


def test_fuse_is_the_normalized_weighted_sum_and_contributions_add_up() -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((4, 24)).astype(np.float32)
    parts = [
        QueryPart.text("a", weight=0.7),
        QueryPart.vector(vectors[1] * 3.0),  # not unit length: normalized first
        QueryPart.text("b", negative=True),  # default negative weight 0.5
        QueryPart.like("k", weight=0.2, negative=True),
    ]
    signed = [0.7, 1.0, -0.5, -0.2]
    embedded = [EmbeddedPart(p, (v / np.linalg.norm(v)).astype(np.float32)) for p, v in zip(parts, vectors, strict=True)]
    query = fuse(embedded)
    expected, norm = fused([(v, w) for v, w in zip(vectors, signed, strict=True)])
    np.testing.assert_allclose(query.vector, expected, atol=1e-6)
    assert query.norm == pytest.approx(norm, rel=1e-6)
    for item in rng.standard_normal((5, 24)):
        terms = query.contributions(item)
        assert [t.part for t in terms] == parts
        np.testing.assert_allclose([t.similarity for t in terms], [unit(v) @ unit(item) for v in vectors], atol=1e-6)
        assert sum(t.contribution for t in terms) == pytest.approx(float(expected @ unit(item)), abs=1e-6)


def test_default_weights_and_descriptions() -> None:
    assert QueryPart.text("x").effective_weight == 1.0
    assert QueryPart.text("x", negative=True).effective_weight == 0.5
    assert QueryPart.image("a/b.jpg", weight=2).effective_weight == 2.0
    assert QueryPart.text("blurry", negative=True).describe() == "not text 'blurry'"
    assert QueryPart.vector(np.ones(8)).describe() == "vector[8]"
    assert QueryPart.like("k", negative=True).as_json() == {"kind": "like", "value": "k", "weight": 0.5, "sign": -1}
    assert QueryPart.vector([1.0, 2.0]) == QueryPart.vector(np.array([1.0, 2.0])) != QueryPart.vector([1.0, 3.0])
    assert QueryPart.text("x") == QueryPart.text("x", weight=1.0) != QueryPart.text("x", negative=True)
    assert len({QueryPart.vector([1.0]), QueryPart.vector([1.0]), QueryPart.text("x")}) == 2


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "give a query text"),
        ([QueryPart.text("x", negative=True)], "at least one positive"),
        ([QueryPart.text("x"), QueryPart.text("x", weight=1.0, negative=True)], "cancel each other out"),
    ],
)
def test_fuse_refuses_queries_without_direction(parts: list[QueryPart], message: str) -> None:
    v = np.ones(8, dtype=np.float32) / np.sqrt(8)
    with pytest.raises(ConfigError, match=message):
        fuse([EmbeddedPart(p, v) for p in parts])


def test_weights_parsing_and_count() -> None:
    assert parse_weights("0.7, 0.3,2") == (0.7, 0.3, 2.0)
    for bad in ("0.7,x", "1,-1", "0", "nan"):
        with pytest.raises(ConfigError, match="--weights"):
            parse_weights(bad)
    with pytest.raises(ConfigError, match="2 values for 3 query parts"):
        with_weights([QueryPart.text("a"), QueryPart.text("b"), QueryPart.text("c", negative=True)], (1.0, 2.0))
    weighted = with_weights([QueryPart.text("a"), QueryPart.text("c", negative=True)], (0.25, 3.0))
    assert [(p.effective_weight, p.negative) for p in weighted] == [(0.25, False), (3.0, True)]
    with pytest.raises(ConfigError, match="positive number"):
        QueryPart.text("a", weight=0.0)


# -- through the CLI, on every backend -------------------------------------------------------


def _check_contributions(hits: list[dict[str, Any]], indexed: Indexed, parts: list[tuple[np.ndarray, float]]) -> None:
    """Each hit's contributions: s·w·(e_i·x)/‖q‖ per part, summing to its score."""
    _, norm = fused(parts)
    for hit in hits:
        x = indexed.reference.vector(hit["key"]).astype(np.float64)
        terms = hit["contributions"]
        assert len(terms) == len(parts)
        for term, (vector, signed_weight) in zip(terms, parts, strict=True):
            assert term["weight"] * term["sign"] == pytest.approx(signed_weight)
            assert term["similarity"] == pytest.approx(float(unit(vector) @ x), abs=SCORE_TOL)
            assert term["contribution"] == pytest.approx(signed_weight * float(unit(vector) @ x) / norm, abs=SCORE_TOL)
        assert sum(term["contribution"] for term in terms) == pytest.approx(hit["score"], abs=SCORE_TOL)


def test_text_image_and_negative_with_weights(indexed: Indexed, tiny_embedder: Any) -> None:
    image = indexed.corpus / "animals" / "cat.png"
    hits = indexed.query(
        "a rocket in space", "--image", str(image), "--not", "blurry", "--weights", "0.6,1.5,0.4", "--limit", "6"
    )
    text, negative = tiny_embedder.encode_texts(["a rocket in space", "blurry"])
    parts = [(text, 0.6), (image_vector(tiny_embedder, image), 1.5), (negative, -0.4)]
    query, _ = fused(parts)
    assert_hits(hits, indexed.reference.ranking(query), 6)
    _check_contributions(hits, indexed, parts)
    assert [term["part"] for term in hits[0]["contributions"]] == [
        "text 'a rocket in space'", f"image {image}", "not text 'blurry'",
    ]


def test_default_weights_several_texts_and_negatives(indexed: Indexed, tiny_embedder: Any) -> None:
    hits = indexed.query("a cat", "--text", "on a rug", "--not", "a rocket", "--not", "coffee", "--limit", "50")
    vectors = tiny_embedder.encode_texts(["a cat", "on a rug", "a rocket", "coffee"])
    parts = [(vectors[0], 1.0), (vectors[1], 1.0), (vectors[2], -0.5), (vectors[3], -0.5)]
    query, _ = fused(parts)
    assert len(hits) == len(indexed.reference.keys)
    assert_hits(hits, indexed.reference.ranking(query), 50)
    _check_contributions(hits, indexed, parts)


def test_text_plus_image_defaults_to_their_mean(indexed: Indexed, tiny_embedder: Any) -> None:
    hits = indexed.query("cats", "--image", str(indexed.corpus / "space" / "hubble.jpg"), "--limit", "4")
    text = tiny_embedder.encode_texts(["cats"])[0]
    image = image_vector(tiny_embedder, indexed.corpus / "space" / "hubble.jpg")
    assert_hits(hits, indexed.reference.ranking(unit(text) + unit(image)), 4)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_modality_filter_works_with_every_query_form(indexed: Indexed, tiny_embedder: Any, modality: str) -> None:
    ref = indexed.reference
    cat_image = indexed.key("animals/cat.png")
    chunk = indexed.key("notes/cats.md") + "#chunk=0"
    text = tiny_embedder.encode_texts(["a rocket"])[0]
    forms: list[tuple[list[str], np.ndarray, set[str]]] = [
        (["a rocket"], text, set()),
        (["--image", str(indexed.corpus / "animals" / "cat.png")], image_vector(tiny_embedder, indexed.corpus / "animals" / "cat.png"), set()),
        (["--like", cat_image], ref.vector(cat_image), {cat_image}),
        (["--like", chunk], ref.vector(chunk), {chunk}),
        (["a rocket", "--like", chunk], unit(text) + unit(ref.vector(chunk)), {chunk}),
    ]
    for args, query, excluded in forms:
        hits = indexed.query(*args, "--where", f"modality={modality}", "--limit", "50")
        expected = ref.ranking(query, lambda i, excluded=excluded: ref.modality[i] == modality and ref.keys[i] not in excluded)
        assert expected, args
        assert_hits(hits, expected, 50)
        assert all(hit["payload"]["modality"] == modality for hit in hits)
        if modality == "text":  # image→text: text hits carry their chunk text
            assert all(hit["payload"]["text"].strip() for hit in hits)


def test_min_score_keeps_exactly_the_hits_above_it(indexed: Indexed, tiny_embedder: Any) -> None:
    text = tiny_embedder.encode_texts(["a cup of coffee"])[0]
    ranked = indexed.reference.ranking(text)
    # Cut between two clearly different scores, past the first two hits (identical chunks tie).
    cut = next(i for i in range(2, len(ranked) - 1) if ranked[i][1] - ranked[i + 1][1] > 1e-3) + 1
    threshold = (ranked[cut - 1][1] + ranked[cut][1]) / 2
    hits = indexed.query("a cup of coffee", "--min-score", f"{threshold:.6f}", "--limit", "50")
    assert_hits(hits, ranked, cut)
    assert all(hit["score"] >= threshold for hit in hits)
    none = indexed.query("a cup of coffee", "--min-score", "0.9999", "--limit", "50")
    assert none == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "--not", "b", "--weights", "1"], "--weights has 1 values for 2 query parts"),
        (["a", "--weights", "1,x"], "'x' is not a number"),
        (["--not", "blurry"], "at least one positive"),
        (["a", "--min-score", "1.5"], "--min-score must be between"),
    ],
)
def test_query_mistakes_are_one_line_errors(indexed: Indexed, args: list[str], message: str) -> None:
    assert message in indexed.query_fails(*args)


def test_table_output_shows_the_fused_query(indexed: Indexed) -> None:
    code, stdout, stderr = run_cli("query", "-c", COLLECTION, "cats", "--not", "dogs", *indexed.flags, "--device", "cpu")
    assert code == 0, stderr
    assert "query: text 'cats' ×1 − text 'dogs' ×0.5" in stdout
    lines = stdout.splitlines()
    assert lines[1].startswith("mode clip:") and "cosine" in lines[2] and "modality" in stdout  # the score column says what
