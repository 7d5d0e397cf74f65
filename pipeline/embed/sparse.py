"""BM25 sparse vectors of text chunks and queries, with qdrant-edge's own BM25 embedder.

One tokenizer for documents and queries on every backend: qdrant-edge's ``Bm25`` (English
tokenization, lower-casing, stop words, Snowball stemming, hashed term ids). A document vector
holds BM25's saturated term frequencies (``k``, ``b``, ``avg_len`` below); a query vector weighs
each term 1. The collection's sparse vector has ``modifier=idf``, so Qdrant (server, client
local mode and qdrant-edge alike) multiplies in the inverse document frequency over the
collection at query time: scores are exactly BM25.

No model and no state: a chunk's vector is a pure function of its text and context (the title and
heading path of its version's chunk context scheme, ``ingest.apply.bm25_vectors``), so
``mmindex rebuild`` recomputes it from what Parquet stores. ``SPARSE_ENCODER_ID`` names the parameters and
is recorded on the collection version.
"""

from __future__ import annotations

import functools
from typing import Any

from mmindex.pipeline.store.store import SparseVector

BM25_K = 1.2
BM25_B = 0.75
# Average chunk length in words (chunks are at most ~200 word pieces of the text model).
BM25_AVG_LEN = 150.0
SPARSE_ENCODER_ID = f"qdrant-edge-bm25:k={BM25_K},b={BM25_B},avg_len={BM25_AVG_LEN:g},english"


@functools.lru_cache(maxsize=1)
def _bm25() -> Any:
    import qdrant_edge as qe

    return qe.Bm25(qe.Bm25Config(k=BM25_K, b=BM25_B, avg_len=BM25_AVG_LEN, language="english"))


def _sparse(raw: Any) -> SparseVector:
    return SparseVector(tuple(int(i) for i in raw.indices), tuple(float(v) for v in raw.values))


def document_vector(text: str) -> SparseVector:
    """The BM25 document vector (term frequencies, saturated and length-normalized) of a chunk."""
    return _sparse(_bm25().embed_document(text))


def query_vector(text: str) -> SparseVector:
    """The BM25 query vector (each distinct term weight 1) of a question."""
    return _sparse(_bm25().embed_query(text))
