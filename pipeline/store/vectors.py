"""Vector helpers shared by the store backends: dimension checks, the named vectors of a point
(``clip``, and ``text`` and ``bm25`` on the text chunks of RAG collections), the branches of a
passage search, and points read back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmindex.pipeline.errors import SchemaMismatchError
from mmindex.pipeline.store.store import SPARSE_VECTOR, TEXT_VECTOR, SparseVector, StoredPoint, TextSearch

# A backend's own sparse vector type, built from ours.
SparseFactory = Callable[[SparseVector], Any]


def vector_list(vector: np.ndarray, dim: int, collection: str) -> list[float]:
    """A vector as a list of floats for Qdrant, checked against the collection's dimension."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise SchemaMismatchError(f"collection {collection!r} holds {dim}-d vectors, got an array of shape {array.shape}")
    return array.tolist()


def vector_matrix(vectors: np.ndarray, dim: int, collection: str) -> np.ndarray:
    """A batch of vectors as a C-contiguous float32 (n, dim) matrix, checked against the collection."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise SchemaMismatchError(f"collection {collection!r} holds {dim}-d vectors, got an array of shape {matrix.shape}")
    return matrix


def named_vector(raw: Any, vector_name: str) -> np.ndarray | None:
    """The named vector of a returned point as float32, if it came back."""
    if not isinstance(raw, dict) or vector_name not in raw:
        return None
    return np.asarray(raw[vector_name], dtype=np.float32)


def check_text_vectors(text_dim: int | None, collection: str) -> int:
    """The collection's text-vector dimension, or ``SchemaMismatchError`` if it has none."""
    if text_dim is None:
        raise SchemaMismatchError(
            f"collection {collection!r} was built without a text model: it has no 'text'/'bm25' vectors "
            "(index into a new collection to use dense, sparse or hybrid search)"
        )
    return text_dim


def point_vectors(
    clip: Any, text_vector: np.ndarray | None, sparse: SparseVector | None, vector_name: str, text_dim: int | None,
    collection: str, make_sparse: SparseFactory,
) -> dict[str, Any]:
    """The named vectors of a point: CLIP (already converted), plus ``text`` and ``bm25`` on text
    chunks that have them (``SchemaMismatchError`` in a collection without a text model)."""
    vectors: dict[str, Any] = {vector_name: clip}
    if text_vector is None and sparse is None:
        return vectors
    dim = check_text_vectors(text_dim, collection)
    if text_vector is not None:
        vectors[TEXT_VECTOR] = vector_list(text_vector, dim, collection)
    if sparse is not None:
        vectors[SPARSE_VECTOR] = make_sparse(sparse)
    return vectors


def text_branches(
    request: TextSearch, text_dim: int | None, collection: str, make_sparse: SparseFactory
) -> list[tuple[Any, str]]:
    """The ``(query, vector name)`` branches of a passage search: the dense ``text`` query and/or
    the sparse ``bm25`` one (two branches: fused by RRF)."""
    dim = check_text_vectors(text_dim, collection)
    branches: list[tuple[Any, str]] = []
    if request.dense is not None:
        branches.append((vector_list(request.dense, dim, collection), TEXT_VECTOR))
    if request.sparse is not None:
        branches.append((make_sparse(request.sparse), SPARSE_VECTOR))
    return branches


def stored_points(records: Sequence[Any], vector_name: str, with_vectors: bool) -> list[StoredPoint]:
    """Backend records (edge ``Record`` or client ``Record``) as ``StoredPoint``s."""
    return [
        StoredPoint(
            id=str(record.id),
            payload=dict(record.payload or {}),
            vector=named_vector(record.vector, vector_name) if with_vectors else None,
        )
        for record in records
    ]
