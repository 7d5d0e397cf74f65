"""The Python API: ``from mmindex import Index`` — the same queries as the CLI, typed results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    COLLECTION,
    PRECISION,
    SCORE_TOL,
    Indexed,
    assert_hits,
    assert_same_picks,
    fused,
    image_vector,
    index_corpus,
    reference_mmr,
    unit,
)

from mmindex import Contribution, Index, QueryHit, QueryPart, SearchQuery
from mmindex.pipeline.errors import CollectionNotFoundError, ConfigError, SchemaMismatchError


def _open(indexed: Indexed, **kwargs: Any) -> Index:
    return Index(COLLECTION, indexed.root, qdrant_url=indexed.qdrant_url, device="cpu", precision=PRECISION, **kwargs)


def _as_json(hits: list[QueryHit]) -> list[dict[str, Any]]:
    assert all(isinstance(hit, QueryHit) for hit in hits)
    return [hit.as_json() for hit in hits]


def test_every_query_form_matches_the_reference(indexed: Indexed, tiny_embedder: Any) -> None:
    ref = indexed.reference
    cat = indexed.key("animals/cat.png")
    cat_image = image_vector(tiny_embedder, indexed.corpus / "animals" / "cat.png")
    text = tiny_embedder.encode_texts(["a rocket", "blurry"])
    vector = np.random.default_rng(5).standard_normal(ref.vectors.shape[1])
    with _open(indexed) as index:
        assert index.dim == ref.vectors.shape[1]
        images = index.search_text("a rocket", where="modality=image", limit=3)
        assert_hits(_as_json(images), ref.ranking(text[0], lambda i: ref.modality[i] == "image"), 3)
        assert all(hit.modality == "image" and hit.text is None or hit.payload.get("caption") for hit in images)

        texts = index.search_image(indexed.corpus / "animals" / "cat.png", where=["modality=text"], limit=50)
        assert_hits(_as_json(texts), ref.ranking(cat_image, lambda i: ref.modality[i] == "text"), 50)
        assert all(hit.modality == "text" and hit.text for hit in texts)

        assert_hits(_as_json(index.search_vector(vector, limit=4)), ref.ranking(vector), 4)

        similar = index.more_like_this(cat, limit=5)
        assert cat not in [hit.key for hit in similar]
        assert_hits(_as_json(similar), ref.ranking(ref.vector(cat), lambda i: ref.keys[i] != cat), 5)

        mixed = index.search("a rocket", image=indexed.corpus / "animals" / "cat.png", not_text="blurry",
                             weights=[0.5, 1.0, 0.25], limit=6)
        query, norm = fused([(text[0], 0.5), (cat_image, 1.0), (text[1], -0.25)])
        assert_hits(_as_json(mixed), ref.ranking(query), 6)
        terms = mixed[0].contributions
        assert all(isinstance(term, Contribution) for term in terms)
        assert [term.part.kind for term in terms] == ["text", "image", "text"]
        x = ref.vector(mixed[0].key)
        assert terms[2].contribution == pytest.approx(-0.25 * float(unit(text[1]) @ unit(x)) / norm, abs=2e-4)

        by_parts = index.search(parts=[QueryPart.text("a rocket", weight=0.5), QueryPart.like(cat),
                                       QueryPart.text("blurry", weight=0.25, negative=True)], limit=6)
        like_query, _ = fused([(text[0], 0.5), (ref.vector(cat), 1.0), (text[1], -0.25)])
        assert_hits(_as_json(by_parts), ref.ranking(like_query, lambda i: ref.keys[i] != cat), 6)

        # MMR: the picks of a NumPy MMR, which here differ from the plain top 4 (so ignoring mmr fails).
        plain, picks = ref.ranking(text[0])[:4], reference_mmr(ref, text[0], 4, 0.8, 100)
        assert not np.allclose([score for _, score in picks], [score for _, score in plain], atol=10 * SCORE_TOL)
        assert_same_picks(_as_json(index.search("a rocket", mmr=0.8, limit=4)), picks, ref)
        # min_score: exactly the hits at or above a threshold between two distinct scores.
        ranking = ref.ranking(text[0])
        cut = next(i for i in range(3, len(ranking) - 1) if ranking[i][1] - ranking[i + 1][1] > 10 * SCORE_TOL)
        threshold = (ranking[cut][1] + ranking[cut + 1][1]) / 2
        assert_hits(_as_json(index.search("a rocket", min_score=threshold, limit=50)), ranking[: cut + 1], 50)
        # Both: MMR over the candidates that pass the threshold.
        passing = {key for key, score in ranking if score >= threshold}
        both = index.search("a rocket", mmr=0.8, limit=cut, min_score=threshold)
        assert all(hit.score >= threshold for hit in both)
        assert_same_picks(_as_json(both), reference_mmr(ref, text[0], cut, 0.8, 100, lambda i: ref.keys[i] in passing), ref)

        stored = index.get(cat)
        assert stored.key == cat and stored.payload["path"] == "animals/cat.png"
        embedded = index.embed_texts(["a rocket"])
        np.testing.assert_allclose(embedded[0], text[0], atol=1e-5)
        embedded_image = index.embed_image(indexed.corpus / "animals" / "cat.png")
        np.testing.assert_allclose(embedded_image, cat_image, atol=1e-5)
        assert float(unit(embedded_image) @ unit(ref.vector(cat))) > 0.999  # the stored vector, from ingest


def test_query_result_and_gallery(indexed: Indexed, tmp_path: Path) -> None:
    with _open(indexed) as index:
        result = index.query(SearchQuery(COLLECTION, parts=(QueryPart.like(indexed.key("rocket.bmp")),), limit=3))
        assert result.method == "recommend" and len(result.hits) == 3
        page = index.gallery(result, tmp_path / "g.html")
    assert page.read_text(encoding="utf-8").count('<article class="card"') == 3


def test_api_and_cli_agree(indexed: Indexed) -> None:
    cli = indexed.query("a cat", "--not", "rocket", "--where", "modality=image", "--limit", "4")
    with _open(indexed) as index:
        api = index.search("a cat", not_text="rocket", where=["modality=image"], limit=4)
    assert [hit.key for hit in api] == [hit["key"] for hit in cli]
    np.testing.assert_allclose([hit.score for hit in api], [hit["score"] for hit in cli], atol=1e-5)


def test_api_errors(indexed: Indexed, tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFoundError, match="no collection 'nope'"):
        Index("nope", tmp_path)
    with _open(indexed) as index:
        with pytest.raises(ConfigError, match="2 values for 1 query parts"):
            index.search("a", weights=[1, 2])
        with pytest.raises(SchemaMismatchError, match="dimensions"):
            index.search_vector(np.ones(3))
        with pytest.raises(ConfigError, match="no item"):
            index.more_like_this("nope")
        with pytest.raises(ConfigError, match="limit must be between 1 and 1000, got 1000000"):
            index.search("a", limit=10**6)  # one request would read the whole collection with its vectors
        with pytest.raises(ConfigError, match="k must be between 1 and 1000"):
            index.retrieve("a question", k=5000)


def test_api_labels(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path, tiny_embedder: Any) -> None:
    fresh = index_corpus("edge", tmp_path, photo_corpus, tiny_local_dir)
    with Index(COLLECTION, fresh.root, device="cpu", precision=PRECISION, embedder=tiny_embedder) as index:
        report = index.label(["cat", "rocket"], templates=["a photo of a {}.", "a picture of a {}."], threshold=0.0)
        assert report.images == 6 and report.labeled == 6
        hits = index.search("x", where="labels=cat", limit=50)
        assert len(hits) == 6 and all(hit.labels and set(hit.labels) == {"cat", "rocket"} for hit in hits)


def test_import_mmindex_stays_light() -> None:
    """``import mmindex`` and the CLI module load neither the API nor torch; ``mmindex.Index`` does."""
    code = (
        "import sys, mmindex, mmindex.pipeline.cli; "
        "assert 'torch' not in sys.modules and 'mmindex.api' not in sys.modules; "
        "from mmindex import Index; assert Index.__module__ == 'mmindex.api'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
