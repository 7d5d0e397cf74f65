"""One store interface over Qdrant backends (DESIGN §4).

``EdgeStore`` (embedded qdrant-edge, the default) and ``ClientStore`` (qdrant-client: a server
or cluster by URL, or its in-process mode) implement ``VectorStore``; the same behavioural test
suite runs on both. Vectors are CLIP embeddings in one named vector, cosine distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ...schemas.payload import INDEXED_FIELDS, FieldType
from .filters import PayloadFilter

CLIP_VECTOR = "clip"
UPSERT_BATCH = 256


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What a collection is created with."""

    dim: int
    vector_name: str = CLIP_VECTOR
    indexed_fields: dict[str, FieldType] = field(default_factory=lambda: dict(INDEXED_FIELDS))


@dataclass(frozen=True, slots=True)
class PointRecord:
    """A point to write: deterministic id, L2-normalized vector, payload."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A scored point returned by a search."""

    id: str
    score: float
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """A point read back by id."""

    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@runtime_checkable
class VectorStore(Protocol):
    """Operations mmindex needs from Qdrant; every backend implements exactly these."""

    def collection_exists(self, name: str) -> bool: ...

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection and its payload indexes; error if it exists."""

    def drop_collection(self, name: str) -> None:
        """Delete the collection and its data; no error if it does not exist."""

    def list_collections(self) -> list[str]: ...

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        """Write points (batched internally); durable when it returns."""

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
    ) -> list[SearchHit]:
        """Nearest points by cosine similarity, best first, filtered."""

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        """Points by id (missing ids are left out)."""

    def count(self, name: str, payload_filter: PayloadFilter | None = None) -> int:
        """Exact number of points matching the filter."""

    def close(self) -> None:
        """Release connections and locks."""
