"""Checks shared by the store backends for the RAG vectors (``text`` dense, ``bm25`` sparse)."""

from __future__ import annotations

from mmindex.pipeline.errors import SchemaMismatchError


def check_text_vectors(text_dim: int | None, collection: str) -> int:
    """The collection's text-vector dimension, or ``SchemaMismatchError`` if it has none."""
    if text_dim is None:
        raise SchemaMismatchError(
            f"collection {collection!r} was built without a text model: it has no 'text'/'bm25' vectors "
            "(index into a new collection to use dense, sparse or hybrid search)"
        )
    return text_dim
