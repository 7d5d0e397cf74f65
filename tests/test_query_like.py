"""More-like-this: --like KEY / point id / indexed file uses the stored vector, never re-embeds,
goes through Qdrant's recommend API when the query is only stored items, and never returns the
items it names."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import COLLECTION, Indexed, assert_hits, fused, unit

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.search.fusion import QueryPart
from mmindex.pipeline.search.query import SearchQuery, run_search


def _not(*keys: str) -> Any:
    return lambda ref: (lambda i: ref.keys[i] not in keys)


@pytest.mark.parametrize("relative", ["animals/cat.png", "rocket.bmp", "notes/cats.md#chunk=4"])
def test_like_key_ranks_by_the_stored_vector_without_itself(indexed: Indexed, relative: str) -> None:
    ref = indexed.reference
    key = indexed.key(relative)
    hits = indexed.query("--like", key, "--limit", "5")
    assert_hits(hits, ref.ranking(ref.vector(key), _not(key)(ref)), 5)
    assert key not in [hit["key"] for hit in hits]
    for hit in hits:
        (term,) = hit["contributions"]
        assert term["kind"] == "like" and term["value"] == key
        assert term["contribution"] == pytest.approx(hit["score"], abs=2e-4)


def test_like_accepts_point_ids_and_indexed_files(indexed: Indexed) -> None:
    key = indexed.key("food/coffee.webp")
    by_key = indexed.query("--like", key, "--limit", "4")
    by_id = indexed.query("--like", point_id(key), "--limit", "4")
    by_id_upper = indexed.query("--like", point_id(key).upper(), "--limit", "4")
    by_path = indexed.query("--like", str(indexed.corpus / "people" / ".." / "food" / "coffee.webp"), "--limit", "4")
    assert [h["key"] for h in by_key] == [h["key"] for h in by_id] == [h["key"] for h in by_id_upper]
    assert [h["key"] for h in by_key] == [h["key"] for h in by_path]


def test_several_likes_and_not_like(indexed: Indexed) -> None:
    ref = indexed.reference
    a, b, c = indexed.key("animals/cat.png"), indexed.key("space/hubble.jpg"), indexed.key("rocket.bmp")
    hits = indexed.query("--like", a, "--like", b, "--not-like", c, "--limit", "50")
    query, _ = fused([(ref.vector(a), 1.0), (ref.vector(b), 1.0), (ref.vector(c), -0.5)])
    assert_hits(hits, ref.ranking(query, _not(a, b, c)(ref)), 50)
    assert len(hits) == len(ref.keys) - 3


def test_like_fused_with_text_and_filter(indexed: Indexed, tiny_embedder: Any) -> None:
    ref = indexed.reference
    chunk = indexed.key("notes/rockets.txt#chunk=0")
    hits = indexed.query("a photo", "--like", chunk, "--weights", "0.3,1", "--where", "modality=image", "--limit", "3")
    text = tiny_embedder.encode_texts(["a photo"])[0]
    query, _ = fused([(text, 0.3), (ref.vector(chunk), 1.0)])
    assert_hits(hits, ref.ranking(query, lambda i: ref.modality[i] == "image"), 3)


def test_like_unknown_item_is_a_one_line_error(indexed: Indexed) -> None:
    message = indexed.query_fails("--like", "/no/such/key.jpg")
    assert "no item '/no/such/key.jpg'" in message and COLLECTION in message


def _run(indexed: Indexed, query: SearchQuery, get_embedder: Any) -> Any:
    with Collection.open(indexed.settings(), COLLECTION, loader=lambda spec, settings: get_embedder()) as collection:
        return run_search(query, collection)


def _no_model() -> Any:
    raise AssertionError("more-like-this must not load the model")


def test_plain_like_uses_recommend_without_loading_the_model(indexed: Indexed) -> None:
    ref = indexed.reference
    a, b = indexed.key("people/astronaut.jpg"), indexed.key("people/camera.tif")
    result = _run(indexed, SearchQuery(COLLECTION, limit=50, parts=(QueryPart.like(a), QueryPart.like(b))), _no_model)
    assert result.method == "recommend"
    expected = ref.ranking(unit(ref.vector(a)) + unit(ref.vector(b)), _not(a, b)(ref))
    assert_hits([hit.as_json() for hit in result.hits], expected, 50)
    for hit in result.hits:
        assert sum(term.contribution for term in hit.contributions) == pytest.approx(hit.score, abs=2e-4)


def test_weighted_or_negative_likes_search_the_fused_vector(indexed: Indexed) -> None:
    ref = indexed.reference
    a, b = indexed.key("people/astronaut.jpg"), indexed.key("people/camera.tif")
    parts = (QueryPart.like(a, weight=2.0), QueryPart.like(b, negative=True))
    result = _run(indexed, SearchQuery(COLLECTION, limit=5, where=("modality=image",), parts=parts), _no_model)
    assert result.method == "nearest"
    query, _ = fused([(ref.vector(a), 2.0), (ref.vector(b), -0.5)])
    expected = ref.ranking(query, lambda i: ref.modality[i] == "image" and ref.keys[i] not in (a, b))
    assert_hits([hit.as_json() for hit in result.hits], expected, 4)  # 6 images minus the two examples


def test_vector_query_needs_no_model(indexed: Indexed) -> None:
    ref = indexed.reference
    vector = np.random.default_rng(3).standard_normal(ref.vectors.shape[1]).astype(np.float32)
    result = _run(indexed, SearchQuery(COLLECTION, limit=5, parts=(QueryPart.vector(vector),)), _no_model)
    assert_hits([hit.as_json() for hit in result.hits], ref.ranking(vector), 5)
