"""The Python API: open an index collection and query it as the CLI does, with typed results.

    from mmindex import Index, QueryPart

    with Index("photos", root="~/mmindex") as index:
        hits = index.search("a dog on a beach", where=["modality=image"], limit=5)
        night = index.search("at night", image="street.jpg", weights=[0.3, 0.7])
        similar = index.more_like_this(hits[0].key)
        fused = index.search(parts=[QueryPart.text("a cat"), QueryPart.text("blurry", negative=True)])
        passages = index.retrieve("how do I rotate the API key?", k=5, mode="hybrid")  # RAG

``Index`` loads the collection's model on first use only (more-like-this and vector queries
never need it) and keeps one store connection until ``close()``; on the embedded backend
every call takes the collection's file lock only for its own duration, as the CLI does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.fusion import QueryPart
from mmindex.pipeline.search.labels import DEFAULT_TEMPLATES, LabelReport, LabelSpec, label_collection
from mmindex.pipeline.search.query import (
    QueryHit,
    SearchQuery,
    SearchResult,
    image_query_vector,
    parts_from_flags,
    resolve_items,
    run_search,
)
from mmindex.pipeline.search.retriever import DEFAULT_CANDIDATES, Passage, RetrieveMode, Retriever
from mmindex.pipeline.store.store import RRF_K, RRF_WEIGHTS, Fusion, MmrParams, VectorStore
from mmindex.schemas.config import Device, Precision, Settings, load_settings
from mmindex.schemas.state import CollectionState, LabelScoring

if TYPE_CHECKING:
    from mmindex.pipeline.embed.text_model import TextEmbedder

Where = str | Sequence[str]


def _as_tuple(values: str | Path | Sequence[Any] | None) -> tuple[Any, ...]:
    if values is None:
        return ()
    if isinstance(values, str | Path):
        return (values,)
    return tuple(values)


class Index:
    """One collection of an index root, opened for queries and labeling."""

    def __init__(
        self,
        collection: str,
        root: str | Path | None = None,
        *,
        qdrant_url: str | None = None,
        device: Device | None = None,
        precision: Precision | None = None,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        """Open ``collection`` under ``root`` (default: ``MMINDEX_ROOT`` / config / per-user dir).

        ``qdrant_url`` selects a Qdrant server (or ``local:/path``); ``device`` and ``precision``
        how the model runs (as ``--device``, ``MMINDEX_PRECISION``); ``settings`` replaces all of
        these; ``embedder`` supplies the collection's model ready-loaded (checked to match).
        """
        self.settings = settings or load_settings(
            root=root, qdrant_url=qdrant_url, device=device, precision=precision
        )
        self.collection = collection
        self._collection = Collection.open(self.settings, collection, embedder=embedder)
        if embedder is not None:
            self._collection.embedder()  # a model given must be the collection's own: say so now

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the store connection (and a local folder's lock)."""
        self._collection.close()

    @property
    def state(self) -> CollectionState:
        """The collection's entry in the root's ``state.json`` (as read when it was opened)."""
        return self._collection.entry

    @property
    def store(self) -> VectorStore:
        """The collection's store, opened on first use."""
        return self._collection.store()

    @property
    def embedder(self) -> Embedder:
        """The collection's own model, loaded on first use."""
        return self._collection.embedder()

    @property
    def text_embedder(self) -> TextEmbedder:
        """The collection's text model (RAG), loaded on first use (once per process)."""
        return self._collection.text_embedder()

    @property
    def dim(self) -> int:
        """Dimension of the collection's vectors."""
        return self._collection.version.dim

    # -- queries -----------------------------------------------------------------------------

    def query(self, query: SearchQuery) -> SearchResult:
        """Run a ``SearchQuery`` on this collection: hits, the fused query, the method used."""
        if query.collection != self.collection:
            raise ConfigError(f"query is for collection {query.collection!r}, this index is {self.collection!r}")
        return run_search(query, self._collection)

    def search(
        self,
        text: str | Sequence[str] | None = None,
        *,
        image: str | Path | Sequence[str | Path] | None = None,
        vector: np.ndarray | Sequence[float] | None = None,
        like: str | Sequence[str] | None = None,
        not_text: str | Sequence[str] | None = None,
        not_image: str | Path | Sequence[str | Path] | None = None,
        not_like: str | Sequence[str] | None = None,
        parts: Iterable[QueryPart] = (),
        weights: Sequence[float] | None = None,
        where: Where = (),
        limit: int = 10,
        mmr: bool | float = False,
        mmr_candidates: int = 100,
        min_score: float | None = None,
    ) -> list[QueryHit]:
        """Search by any mix of texts, images, a vector and stored items (keys or point ids).

        Parts are fused in this order — texts, images, vector, likes, then the negatives, then
        ``parts`` — and ``weights`` (one per part, same order) replaces the default weights
        (1 positive, 0.5 negative). ``where`` takes ``--where`` expressions; ``mmr=True`` (or a
        diversity in [0, 1]) diversifies with Qdrant's MMR; ``min_score`` drops weaker hits.
        """
        query_parts = parts_from_flags(
            texts=_as_tuple(text), images=_as_tuple(image), likes=_as_tuple(like), not_texts=_as_tuple(not_text),
            not_images=_as_tuple(not_image), not_likes=_as_tuple(not_like), weights=weights,
            vectors=[] if vector is None else [vector], extra=tuple(parts),
        )
        diversity = None if mmr is False else 0.5 if mmr is True else float(mmr)
        query = SearchQuery(
            self.collection,
            where=_as_tuple(where),
            limit=limit,
            parts=query_parts,
            mmr=None if diversity is None else MmrParams(diversity, mmr_candidates),
            min_score=min_score,
        )
        return self.query(query).hits

    def search_text(self, text: str, *, where: Where = (), limit: int = 10) -> list[QueryHit]:
        """Items nearest to a text (use ``where="modality=image"`` for text→image)."""
        return self.search(text, where=where, limit=limit)

    def search_image(self, image: str | Path, *, where: Where = (), limit: int = 10) -> list[QueryHit]:
        """Items nearest to an image file (use ``where="modality=text"`` for image→text)."""
        return self.search(image=image, where=where, limit=limit)

    def search_vector(self, vector: np.ndarray | Sequence[float], *, where: Where = (), limit: int = 10) -> list[QueryHit]:
        """Items nearest to a vector of the collection's space."""
        return self.search(vector=vector, where=where, limit=limit)

    def more_like_this(self, key: str | Sequence[str], *, where: Where = (), limit: int = 10) -> list[QueryHit]:
        """Items like stored ones (item keys, point ids or indexed files), never the items themselves."""
        return self.search(like=key, where=where, limit=limit)

    def get(self, key: str) -> QueryHit:
        """A stored item by key, point id or indexed file (score 1, its payload)."""
        item = resolve_items(self._collection, [key])[key]  # a document: its first chunk
        return QueryHit(str(item.payload.get("key", "")), 1.0, item.ids[0], item.payload)

    def gallery(self, result: SearchResult, path: str | Path, *, remote_images: bool = False) -> Path:
        """Write ``result`` (from ``query``) as a self-contained HTML page; returns its path. Only
        files under the collection's folders are thumbnailed; ``remote_images`` lets the page
        load the http(s) images of manifest items."""
        from mmindex.pipeline.search.gallery import write_result_gallery

        return write_result_gallery(Path(path), result, self.settings, remote_images=remote_images)

    # -- RAG retrieval -----------------------------------------------------------------------

    def retriever(
        self,
        *,
        k: int = 5,
        mode: RetrieveMode = "auto",
        where: Where = (),
        candidates: int = DEFAULT_CANDIDATES,
        rrf_k: int = RRF_K,
        rrf_weights: tuple[float, float] = RRF_WEIGHTS,
        fusion: Fusion = "rrf",
    ) -> Retriever:
        """A ``Retriever`` over this collection with default ``k``, ``mode`` and filters (``candidates``
        per branch of hybrid search, fused by ``fusion``: RRF with constant ``rrf_k`` and
        ``rrf_weights`` for the dense and sparse lists, or ``dbsf``)."""
        return Retriever(self._collection, k=k, mode=mode, where=_as_tuple(where), candidates=candidates, rrf_k=rrf_k,
                         rrf_weights=rrf_weights, fusion=fusion)

    def retrieve(
        self,
        question: str,
        k: int = 5,
        *,
        where: Where = (),
        mode: RetrieveMode = "auto",
        include_images: bool | int = False,
        per_document: int | None = None,
    ) -> list[Passage]:
        """The best passages for a question, at most ``per_document`` of one document when given
        (see ``mmindex.pipeline.search.retriever``)."""
        return self.retriever(k=k, mode=mode).retrieve(question, where=_as_tuple(where), include_images=include_images,
                                                       per_document=per_document)

    # -- embeddings and labels ---------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) unit vectors of texts, in the collection's space."""
        return self.embedder.encode_texts(list(texts))

    def embed_image(self, path: str | Path) -> np.ndarray:
        """The unit vector of an image file, decoded and preprocessed as at ingest."""
        return image_query_vector(self.embedder, Path(path), self.settings.image_limits)

    def label(
        self,
        labels: Sequence[str],
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        threshold: float | None = None,
        scoring: LabelScoring = "softmax",
        only_keys: Iterable[str] | None = None,
    ) -> LabelReport:
        """Zero-shot label the collection's images (see ``mmindex.pipeline.search.labels``)."""
        spec = LabelSpec(tuple(labels), tuple(templates), threshold, scoring)
        return label_collection(self._collection, spec, only_keys)
