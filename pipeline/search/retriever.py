"""RAG retrieval: a question in, the best passages (and images) with their sources out.

Modes (``RetrieveMode``):

* ``dense``: the text model's vector of the question against the chunks' ``text`` vectors;
* ``sparse``: BM25 (``bm25`` sparse vectors, IDF from Qdrant) — exact terms, ids, rare words;
* ``hybrid``: both, each fetching ``candidates`` chunks, merged in Qdrant (prefetch + fusion
  query, the same on every backend) by weighted reciprocal rank fusion (``fusion="rrf"``, the
  default) or distribution-based score fusion (``fusion="dbsf"``);
* ``clip``: CLIP's text tower (77 tokens) against the chunks' CLIP vectors — the only mode of a
  collection built without a text model;
* ``auto``: ``hybrid`` when the collection has a text model, else ``clip`` (``mmindex query``'s
  own ``auto`` also looks at the query: ``passage_mode``).

``per_document=N`` keeps at most N passages of each document (the best ones, in rank order), so
top-k spans up to k documents: the ranked list is read deeper (doubling, up to
``MAX_GROUPED_DEPTH`` hits) until k passages survive the cap. The cap is applied to the store's
ranked hits here, so both backends give the same result.

``include_images`` adds the best images for the question (CLIP text→image) after the passages.
Filters are ``--where`` expressions; passages are always text chunks (``modality=text``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.limits import check_result_count
from mmindex.pipeline.store.filters import parse_where
from mmindex.pipeline.store.store import RRF_K, RRF_WEIGHTS, Fusion, SearchHit, TextSearch, VectorStore
from mmindex.schemas.state import CollectionState

if TYPE_CHECKING:
    from mmindex.pipeline.collection import Collection

log = logging.getLogger(__name__)

RetrieveMode = Literal["auto", "dense", "sparse", "hybrid", "clip"]
RETRIEVE_MODES: tuple[str, ...] = get_args(RetrieveMode)
DEFAULT_CANDIDATES = 50
# The deepest ranked list ``per_document`` reads to find k passages of distinct documents.
MAX_GROUPED_DEPTH = 1000
ScoreKind = Literal["cosine", "bm25", "rrf"]
_SCORE_KINDS: dict[str, ScoreKind] = {"clip": "cosine", "dense": "cosine", "sparse": "bm25", "hybrid": "rrf"}


def _admits_text(where: Sequence[str]) -> bool:
    """Whether ``--where`` filters can match a text chunk (``modality=image`` cannot)."""
    for condition in parse_where(where).conditions:
        if condition.field != "modality":
            continue
        values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
        if (condition.op in ("eq", "any") and "text" not in values) or (condition.op in ("ne", "none") and "text" in values):
            return False
    return True


def score_kind(mode: RetrieveMode) -> ScoreKind:
    """What a passage's ``score`` is in ``mode``: a cosine similarity (clip, dense), a BM25 score
    (sparse) or a reciprocal-rank-fusion sum (hybrid; ``1/(k+rank)`` per list, not a similarity)."""
    return _SCORE_KINDS["hybrid" if mode == "auto" else mode]


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved passage (a text chunk) or image, with where it came from.

    ``source`` is the document's (or image's) path relative to its source folder, ``uri`` where
    it is read from; ``score`` is the ranking score of the mode (cosine for dense/clip, BM25 for
    sparse, the RRF sum for hybrid); ``payload`` is everything stored with the point.
    """

    key: str
    text: str
    score: float
    source: str
    uri: str
    modality: str
    doc_key: str | None
    chunk_index: int | None
    char_start: int | None
    char_end: int | None
    heading_path: tuple[str, ...]
    point_id: str
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hit(cls, hit: SearchHit) -> Passage:
        payload = hit.payload
        return cls(
            key=str(payload.get("key", "")),
            text=str(payload.get("text") or payload.get("caption") or ""),
            score=float(hit.score),
            source=str(payload.get("path", "")),
            uri=str(payload.get("uri", "")),
            modality=str(payload.get("modality", "")),
            doc_key=payload.get("doc_key"),
            chunk_index=payload.get("chunk_index"),
            char_start=payload.get("char_start"),
            char_end=payload.get("char_end"),
            heading_path=tuple(payload.get("heading_path") or ()),
            point_id=hit.id,
            payload=dict(payload),
        )

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "score": self.score, "source": self.source, "text": self.text,
                "modality": self.modality, "chunk_index": self.chunk_index, "char_start": self.char_start,
                "char_end": self.char_end, "heading_path": list(self.heading_path), "id": self.point_id,
                "payload": self.payload}


def resolve_mode(mode: str, state: CollectionState) -> RetrieveMode:
    """The concrete mode of a request; ``ConfigError`` for a mode the collection cannot serve."""
    if mode not in RETRIEVE_MODES:
        raise ConfigError(f"unknown retrieval mode {mode!r}: use one of {', '.join(RETRIEVE_MODES)}")
    has_text = state.current.text_embedder_id is not None
    if mode == "auto":
        return "hybrid" if has_text else "clip"
    if mode != "clip" and not has_text:
        raise ConfigError(
            f"collection {state.name!r} was built without a text model: only --mode clip works "
            "(index into a new collection with a text model, the default, for dense/sparse/hybrid)"
        )
    return cast(RetrieveMode, mode)


class Retriever:
    """Ranked passages for questions, over one collection's store (see the module docstring)."""

    def __init__(
        self,
        collection: Collection,
        *,
        k: int = 5,
        mode: RetrieveMode = "auto",
        where: Sequence[str] = (),
        candidates: int = DEFAULT_CANDIDATES,
        rrf_k: int = RRF_K,
        rrf_weights: tuple[float, float] = RRF_WEIGHTS,
        fusion: Fusion = "rrf",
    ) -> None:
        self.collection = collection
        self.k = check_result_count(k, "k")
        self.mode = mode
        self.where = tuple(where)
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.rrf_weights = rrf_weights
        self.fusion = fusion

    @property
    def store(self) -> VectorStore:
        return self.collection.store()

    @property
    def state(self) -> CollectionState:
        return self.collection.entry

    def text_search(self, question: str, mode: RetrieveMode) -> TextSearch:
        """The store request of a question in ``dense``/``sparse``/``hybrid`` mode."""
        from mmindex.pipeline.embed.sparse import query_vector

        dense = self.collection.text_embedder().encode([question])[0] if mode in ("dense", "hybrid") else None
        sparse = query_vector(question) if mode in ("sparse", "hybrid") else None
        return TextSearch(dense=dense, sparse=sparse, candidates=self.candidates, rrf_k=self.rrf_k,
                          rrf_weights=self.rrf_weights, fusion=self.fusion)

    def retrieve(
        self,
        question: str,
        k: int | None = None,
        *,
        where: Sequence[str] | str | None = None,
        mode: RetrieveMode | None = None,
        include_images: bool | int = False,
        per_document: int | None = None,
    ) -> list[Passage]:
        """The ``k`` best passages for ``question``, best first; then images when asked.

        ``where`` adds filters to the retriever's own; ``per_document`` keeps at most that many
        passages of one document; ``include_images`` (True, or a number of images) appends the
        best images for the question by CLIP text→image similarity.
        """
        if not question or not question.strip():
            raise ConfigError("a question is needed to retrieve passages")
        limit = self.k if k is None else k
        check_result_count(limit, "k")
        if per_document is not None and per_document < 1:
            raise ConfigError("per_document must be at least 1")
        extra = (where,) if isinstance(where, str) else tuple(where or ())
        filters = (*self.where, *extra)
        concrete = resolve_mode(mode or self.mode, self.state)
        physical = self.collection.physical_name
        text_filter = parse_where([*filters, "modality=text"])
        if concrete == "clip":
            query = self._clip_query(question)

            def ranked(depth: int) -> list[SearchHit]:
                return self.store.search(physical, query, depth, text_filter)
        else:
            request = self.text_search(question, concrete)

            def ranked(depth: int) -> list[SearchHit]:
                return self.store.search_text(physical, request, depth, text_filter)

        passages = _ranked_passages(ranked, limit, per_document)
        if include_images:
            count = limit if include_images is True else check_result_count(include_images, "include_images")
            images = self.store.search(physical, self._clip_query(question), count,
                                       parse_where([*filters, "modality=image"]))
            passages.extend(Passage.from_hit(hit) for hit in images)
        log.debug("retrieved %d passages for %r (%s)", len(passages), question, concrete)
        return passages

    def _clip_query(self, question: str) -> Any:
        return self.collection.embedder().encode_texts([question])[0]


def cap_per_document(passages: Sequence[Passage], per_document: int) -> list[Passage]:
    """``passages`` in their order, keeping at most ``per_document`` of each document (``doc_key``,
    else the passage's own key)."""
    taken: dict[str, int] = {}
    kept = []
    for passage in passages:
        document = passage.doc_key or passage.key
        if taken.get(document, 0) < per_document:
            taken[document] = taken.get(document, 0) + 1
            kept.append(passage)
    return kept


def _ranked_passages(ranked: Callable[[int], list[SearchHit]], limit: int, per_document: int | None) -> list[Passage]:
    """The best ``limit`` passages of the ranked list ``ranked(depth)``, at most ``per_document``
    of each document (reading the list deeper until enough survive or it runs out)."""
    if per_document is None:
        return [Passage.from_hit(hit) for hit in ranked(limit)]
    depth = limit * per_document
    while True:
        hits = ranked(depth)
        kept = cap_per_document([Passage.from_hit(hit) for hit in hits], per_document)
        if len(kept) >= limit or len(hits) < depth or depth >= MAX_GROUPED_DEPTH:
            return kept[:limit]
        depth = min(depth * 2, MAX_GROUPED_DEPTH)


def passage_mode(
    requested: str, state: CollectionState, store: Callable[[], VectorStore], plain_text: bool,
    where: Sequence[str] = (),
) -> RetrieveMode | None:
    """How ``mmindex query --mode`` runs: a passage mode, or None for the CLIP fusion query.

    ``auto`` decides by the query and the collection's contents: a single plain text on a
    collection with a text model and text chunks runs ``hybrid`` over the chunks, whether or not
    the collection also holds images; images are searched (the CLIP query) with ``--mode clip``,
    a filter that admits only images (``--where modality=image``), any other query form, or a
    collection without text chunks or text model. ``dense``/``sparse``/``hybrid`` take exactly
    one text and no other query options.
    """
    if requested == "clip":
        return None
    if requested == "auto":
        if not plain_text or state.current.text_embedder_id is None or not _admits_text(where):
            return None
        chunks = store().count(state.current.physical_name, parse_where(["modality=text"]))
        return "hybrid" if chunks else None
    if not plain_text:
        raise ConfigError(f"--mode {requested} takes one query text and no --image/--like/--not/--weights/--mmr/"
                          "--min-score/--html (use --mode clip for fused queries)")
    return resolve_mode(requested, state)
