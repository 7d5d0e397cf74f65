"""Points as the store tests write them: one record per point, and the ``PointBatch`` of a list.

The store writes column-wise batches only (``VectorStore.upsert(name, PointBatch)``); the tests
keep their points as records, which are easier to filter and rank by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmindex.pipeline.store.store import PointBatch, SparseVector


@dataclass(frozen=True, slots=True)
class Point:
    """A point to write: id, vector, payload (and the RAG vectors of a text chunk)."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]
    text_vector: np.ndarray | None = None
    sparse: SparseVector | None = None


def batch_of(points: Sequence[Point]) -> PointBatch:
    """The points as one column-wise batch (RAG columns only when some point has them)."""
    rag = any(point.text_vector is not None or point.sparse is not None for point in points)
    return PointBatch(
        [point.id for point in points],
        np.stack([np.asarray(point.vector, dtype=np.float32) for point in points]) if points else np.zeros((0, 1), np.float32),
        [point.payload for point in points],
        [point.text_vector for point in points] if rag else None,
        [point.sparse for point in points] if rag else None,
    )


def batches_of(points: Sequence[Point], size: int) -> Iterator[PointBatch]:
    """The points in batches of at most ``size``."""
    for start in range(0, len(points), size):
        yield batch_of(points[start : start + size])
