"""``--like`` with an indexed document's path (or key) means its chunks: the query is the mean of
the chunks' unit vectors, none of its chunks is returned, and the model is not loaded."""

from __future__ import annotations

import numpy as np
from helpers import Indexed, assert_hits, unit


def test_like_a_document_path_is_the_mean_of_its_chunks(indexed: Indexed) -> None:
    ref = indexed.reference
    document = indexed.key("notes/cats.md")
    chunks = [key for key in ref.keys if key.startswith(document + "#chunk=")]
    assert len(chunks) >= 2  # the corpus's cats.md spans several chunks
    hits = indexed.query("--like", str(indexed.corpus / "notes" / "cats.md"), "--limit", "6")
    mean = np.mean([unit(ref.vector(chunk)) for chunk in chunks], axis=0)
    assert_hits(hits, ref.ranking(mean, lambda i: ref.keys[i] not in chunks), 6)
    assert not {hit["key"] for hit in hits} & set(chunks)
    (term,) = hits[0]["contributions"]
    assert term["kind"] == "like"


def test_like_a_document_key_works_too_and_a_chunk_key_is_one_chunk(indexed: Indexed) -> None:
    document = indexed.key("notes/cats.md")
    by_path = indexed.query("--like", str(indexed.corpus / "notes" / "cats.md"), "--limit", "4")
    by_key = indexed.query("--like", document, "--limit", "4")
    assert [hit["key"] for hit in by_key] == [hit["key"] for hit in by_path]
    one_chunk = indexed.query("--like", f"{document}#chunk=0", "--limit", "50")
    assert f"{document}#chunk=1" in {hit["key"] for hit in one_chunk}  # only chunk 0 is left out
