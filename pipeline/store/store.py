"""One store interface over Qdrant backends (docs/ARCHITECTURE.md §4).

``EdgeStore`` (embedded qdrant-edge, the default) and ``ClientStore`` (qdrant-client: a server
or cluster by URL, or its in-process mode) implement ``VectorStore``; the same behavioural test
suite runs on both. Vectors are CLIP embeddings in one named vector, cosine distance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.store.filters import PayloadFilter
from mmindex.schemas.payload import INDEXED_FIELDS, FieldType

CLIP_VECTOR = "clip"
# RAG (collections built with a text model): the text model's dense vector and a BM25 sparse
# vector (IDF applied by Qdrant: ``modifier=idf``), both on text chunks only.
TEXT_VECTOR = "text"
SPARSE_VECTOR = "bm25"
# Reciprocal rank fusion constant: Qdrant's own default (``FusionQuery(fusion=RRF)``, k=2),
# which weighs the top ranks of each list more than the k=60 of Cormack et al.
# ``TextSearch(rrf_k=...)`` changes it.
RRF_K = 2
# Weights of the dense and sparse lists in the fusion: equal (plain RRF). A heavier dense list did
# not hold up on held-out questions (benchmarks/rag_eval.py chooses the weight on random halves of
# its questions and scores it on the other half: the choice varies from 1 to 3 between splits), so
# no tuned value is baked in; ``rrf_weights`` sets it per retriever. The sparse weight is 0.999
# rather than 1 so that a tie of fused scores (frequent with rank fusion) goes to the dense list
# and every backend returns the same order (ties would otherwise come in each engine's own order).
RRF_WEIGHTS = (1.0, 0.999)
UPSERT_BATCH = 256
SCROLL_PAGE = 256
# Qdrant's own ceiling on MMR candidates (server and qdrant-client local mode).
MMR_CANDIDATES_MAX = 16_384


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What a collection is created with."""

    dim: int
    vector_name: str = CLIP_VECTOR
    indexed_fields: dict[str, FieldType] = field(default_factory=lambda: dict(INDEXED_FIELDS))
    # With ``text_dim`` the collection also has the dense ``text`` vector and the sparse ``bm25``.
    text_dim: int | None = None


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse vector: term ids and weights (BM25 term frequencies; Qdrant applies IDF)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


TextSearchMode = Literal["dense", "sparse", "hybrid"]
# How hybrid search merges its two lists: reciprocal rank fusion (weighted, ``rrf_k``) or Qdrant's
# distribution-based score fusion (each list's scores normalized by their mean and spread, summed).
Fusion = Literal["rrf", "dbsf"]
FUSIONS: tuple[str, ...] = ("rrf", "dbsf")


@dataclass(frozen=True, slots=True)
class TextSearch:
    """A passage search on the ``text`` and/or ``bm25`` vectors.

    ``dense`` (the text model's query vector) ranks by cosine on ``text``; ``sparse`` (BM25
    query terms) by BM25 on ``bm25``; with both, each branch fetches ``candidates`` points and
    ``fusion`` merges them in Qdrant (prefetch + fusion query): weighted reciprocal rank fusion
    (``rrf_k``, ``rrf_weights``), or distribution-based score fusion (``dbsf``, no parameters).
    """

    dense: np.ndarray | None = None
    sparse: SparseVector | None = None
    candidates: int = 50
    rrf_k: int = RRF_K
    rrf_weights: tuple[float, float] = RRF_WEIGHTS
    fusion: Fusion = "rrf"

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}: use one of {', '.join(FUSIONS)}")

    @property
    def mode(self) -> TextSearchMode:
        if self.dense is not None and self.sparse is not None:
            return "hybrid"
        if self.dense is not None:
            return "dense"
        if self.sparse is not None:
            return "sparse"
        raise ConfigError("a text search needs a dense or a sparse query vector")


@dataclass(frozen=True, slots=True)
class PointBatch:
    """Points to write, column-wise (the one write path): ``ids[i]`` gets ``vectors[i]`` and ``payloads[i]``
    (``ingest.apply.point_batches`` maps shard rows to them).

    ``vectors`` is an (n, dim) float32 matrix of L2-normalized rows, so backends convert it in one
    call instead of point by point.
    """

    ids: Sequence[str]
    vectors: np.ndarray
    payloads: Sequence[dict[str, Any]]
    # Per point, the text model's vector and the BM25 vector (text chunks of RAG collections),
    # None where a point has none; the whole field None when no point has any.
    text_vectors: Sequence[np.ndarray | None] | None = None
    sparse: Sequence[SparseVector | None] | None = None

    def __post_init__(self) -> None:
        sizes = {len(self.ids), len(self.payloads), len(self.vectors)}
        sizes |= {len(extra) for extra in (self.text_vectors, self.sparse) if extra is not None}
        if len(sizes) != 1:
            raise ConfigError(
                f"a point batch needs as many vectors and payloads as ids: "
                f"{len(self.ids)} ids, {len(self.vectors)} vectors, {len(self.payloads)} payloads"
            )

    def rag_vectors(self, row: int) -> tuple[np.ndarray | None, SparseVector | None]:
        """The text-model and BM25 vectors of point ``row`` (None for either it lacks)."""
        return (None if self.text_vectors is None else self.text_vectors[row],
                None if self.sparse is None else self.sparse[row])

    def __len__(self) -> int:
        return len(self.ids)


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


@dataclass(frozen=True, slots=True)
class MmrParams:
    """Maximal marginal relevance re-ranking (Qdrant's MMR).

    ``diversity`` 0 ranks by relevance only, 1 by dissimilarity to the results already picked
    (Qdrant's ``diversity``; qdrant-edge's ``lambda`` is ``1 - diversity``). The best
    ``candidates`` nearest points are re-ranked.
    """

    diversity: float = 0.5
    candidates: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise ConfigError(f"MMR diversity must be between 0 and 1, got {self.diversity}")
        if not 1 <= self.candidates <= MMR_CANDIDATES_MAX:
            raise ConfigError(f"MMR candidates must be between 1 and {MMR_CANDIDATES_MAX}, got {self.candidates}")


@dataclass(frozen=True, slots=True)
class PayloadUpdate:
    """Payload keys to set on one point (other keys are kept; a key's old value is replaced)."""

    id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScrollPage:
    """One page of points in id order, and the offset of the next page (``None``: last page)."""

    points: list[StoredPoint]
    next_offset: str | None


def average_vector(positive: Sequence[np.ndarray], negative: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Qdrant's ``average_vector`` recommend query: ``mean(pos)``, or ``2·mean(pos) − mean(neg)``."""
    if not positive:
        raise ConfigError("recommend needs at least one positive example")
    mean_positive = np.mean(np.stack(positive).astype(np.float64), axis=0)
    if not negative:
        return mean_positive.astype(np.float32)
    return (2.0 * mean_positive - np.mean(np.stack(negative).astype(np.float64), axis=0)).astype(np.float32)


@runtime_checkable
class VectorStore(Protocol):
    """Operations mmindex needs from Qdrant; every backend implements exactly these."""

    def collection_exists(self, name: str) -> bool: ...

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create the collection and its payload indexes; error if it exists."""

    def drop_collection(self, name: str) -> None:
        """Delete the collection and its data; no error if it does not exist."""

    def list_collections(self) -> list[str]: ...

    def replace_collection(self, name: str, replacement: str) -> None:
        """Make the complete collection ``replacement`` the one called ``name`` and drop the old one
        (a rebuild built aside). Until this returns, ``name`` answers from the old collection; no
        caller ever sees ``name`` partly filled."""

    def upsert(self, name: str, batch: PointBatch) -> None:
        """Write the points of a batch (sent in parts of ``UPSERT_BATCH``); durable when it returns."""

    def upsert_batches(
        self, name: str, batches: Iterable[PointBatch], optimize: bool = False, create: CollectionSpec | None = None
    ) -> int:
        """Bulk load: write every batch (pulled lazily), durable when it returns; points written.

        For loads of many points (``mmindex rebuild``): backends write with as little per-point
        work and as few round trips or shard sessions as they can, and leave vector indexing to
        the end: ``optimize=True`` builds the indexes once the last batch is in (as ``optimize``
        would, without another shard session). Re-running after an interruption is safe.
        With ``create``, the collection is first created with that spec (as ``create_collection``;
        an error if it exists), also when there are no batches.
        """

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
        *,
        score_threshold: float | None = None,
        exclude_ids: Sequence[str] = (),
        mmr: MmrParams | None = None,
    ) -> list[SearchHit]:
        """Nearest points by cosine similarity, best first, filtered.

        ``score_threshold`` drops points less similar than it; ``exclude_ids`` are never
        returned; ``mmr`` re-ranks the nearest candidates for diversity (scores stay the cosine
        similarity to ``vector``, the order is MMR's).
        """

    def recommend(
        self,
        name: str,
        positive_ids: Sequence[str],
        limit: int,
        payload_filter: PayloadFilter | None = None,
        with_vectors: bool = False,
        *,
        negative_ids: Sequence[str] = (),
        score_threshold: float | None = None,
    ) -> list[SearchHit]:
        """Points like the stored examples (Qdrant's recommend, ``average_vector`` strategy).

        The query is ``average_vector`` of the examples' stored vectors; the examples themselves
        are never returned. An id that is not stored raises ``ConfigError``.
        """

    def search_text(
        self, name: str, request: TextSearch, limit: int, payload_filter: PayloadFilter | None = None
    ) -> list[SearchHit]:
        """Text chunks by the text model's vector, BM25, or both fused with RRF (see ``TextSearch``).

        ``SchemaMismatchError`` when the collection was built without a text model.
        """

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        """Points by id (missing ids are left out)."""

    def scroll(
        self,
        name: str,
        payload_filter: PayloadFilter | None = None,
        limit: int = SCROLL_PAGE,
        offset: str | None = None,
        with_vectors: bool = False,
    ) -> ScrollPage:
        """One page of the points matching the filter, in id order, from ``offset`` on."""

    def set_payload(self, name: str, updates: Sequence[PayloadUpdate]) -> None:
        """Set payload keys point by point (batched); ids that are not stored are ignored."""

    def create_field_index(self, name: str, field_name: str, kind: FieldType) -> None:
        """Index a payload field of an existing collection; no error if it is indexed already."""

    def count(self, name: str, payload_filter: PayloadFilter | None = None) -> int:
        """Exact number of points matching the filter."""

    def optimize(self, name: str) -> bool:
        """Build indexes after a bulk load (HNSW, payload); True if anything was rebuilt."""

    def close(self) -> None:
        """Release connections and locks."""


def canonical_id(point_id: str) -> str:
    """A UUID id in Qdrant's canonical form (lower case, hyphenated); other ids unchanged."""
    try:
        return str(uuid.UUID(point_id))
    except ValueError:
        return point_id
