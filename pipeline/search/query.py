"""Searching a collection: embed the query parts with the collection's own model, fuse, filter, rank.

Every query form goes through one path: the parts (texts, images, stored items, vectors) become
unit vectors, ``fusion.fuse`` combines them (formula in ``pipeline/search/fusion.py``), and the store
ranks by cosine similarity. Two shortcuts into Qdrant's own query API:

* a query made only of stored items (``--like``, equal weights, no MMR) is Qdrant's recommend
  API by point id — the server looks the vectors up and leaves the examples out;
* ``mmr`` asks Qdrant's MMR to re-rank the nearest candidates for diversity.

Stored items named in a query (``--like``/``--not-like``) are never returned as hits; a document
named by its file or key stands for all its chunks (the mean of their unit vectors). Nothing
loads the model unless a part needs embedding: more-like-this runs on stored vectors only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.errors import ConfigError, DecodeError, SchemaMismatchError, SourceError
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.search.fusion import Contribution, EmbeddedPart, FusedQuery, QueryPart, fuse, unit, with_weights
from mmindex.pipeline.search.limits import check_result_count
from mmindex.pipeline.store.filters import Condition, PayloadFilter, parse_where
from mmindex.pipeline.store.store import MmrParams, SearchHit, StoredPoint
from mmindex.schemas.config import ImageLimits, Settings

SearchMethod = Literal["nearest", "recommend", "mmr"]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A query: parts (``text``/``image`` are shorthands for the first two), filters, limit, options.

    ``mmr`` re-ranks for diversity; ``min_score`` drops hits whose cosine similarity to the
    fused query is lower; ``offset`` skips that many of the best hits (pagination).
    """

    collection: str
    text: str | None = None
    image: Path | None = None
    where: tuple[str, ...] = ()
    limit: int = 10
    parts: tuple[QueryPart, ...] = ()
    mmr: MmrParams | None = None
    min_score: float | None = None
    offset: int = 0

    def all_parts(self) -> tuple[QueryPart, ...]:
        """``text``, then ``image``, then ``parts``."""
        shorthand: list[QueryPart] = []
        if self.text:
            shorthand.append(QueryPart.text(self.text))
        if self.image is not None:
            shorthand.append(QueryPart.image(self.image))
        return (*shorthand, *self.parts)


@dataclass(frozen=True, slots=True)
class QueryHit:
    """One result: the item key, its cosine similarity to the query, its payload, and why.

    ``contributions`` has one term per query part; they add up to ``score`` (see ``fusion``).
    """

    key: str
    score: float
    point_id: str
    payload: dict[str, Any]
    contributions: tuple[Contribution, ...] = ()

    @property
    def modality(self) -> str:
        """``image`` or ``text``."""
        return str(self.payload.get("modality", ""))

    @property
    def text(self) -> str | None:
        """A text chunk's text, or an image's caption."""
        value = self.payload.get("text") or self.payload.get("caption")
        return None if value is None else str(value)

    @property
    def labels(self) -> list[str]:
        """Zero-shot labels stored by ``mmindex label`` (best first)."""
        return [str(label) for label in self.payload.get("labels") or []]

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "score": self.score,
            "id": self.point_id,
            "payload": self.payload,
            "contributions": [term.as_json() for term in self.contributions],
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits with the fused query that produced them and how the store was asked."""

    query: SearchQuery
    fused: FusedQuery
    method: SearchMethod
    hits: list[QueryHit] = field(default_factory=list)

    def describe_query(self) -> str:
        """The query in one line: ``text 'a dog' ×1 + image a.jpg ×0.5 − text 'blurry' ×0.5``."""
        terms = []
        for index, embedded in enumerate(self.fused.parts):
            part = embedded.part
            sign = ("− " if part.negative else "+ ") if index else ("−" if part.negative else "")
            label = part.describe().removeprefix("not ")
            terms.append(f"{sign}{label} ×{part.effective_weight:g}")
        return " ".join(terms)


def read_query_image(path: Path) -> bytes:
    """A query image's bytes, checked to be an image (by its header); a one-line ``SourceError``
    (exit 2) naming the file otherwise. Called before any model is loaded."""
    from mmindex.pipeline.embed.decode import check_image_format

    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read query image {path}: {exc.strerror or exc}") from exc
    try:
        check_image_format(data)
    except DecodeError as exc:
        raise SourceError(f"query image {path}: {exc}") from None
    return data


def image_query_vector(embedder: Embedder, path: Path, limits: ImageLimits) -> np.ndarray:
    """Embed a query image file with exactly the decoding and preprocessing used at ingest."""
    data = read_query_image(path)
    try:
        return image_bytes_vector(embedder, data, limits)
    except DecodeError as exc:
        raise SourceError(f"query image {path}: {exc}") from None


def image_bytes_vector(embedder: Embedder, data: bytes, limits: ImageLimits) -> np.ndarray:
    """Embed an encoded query image (``DecodeError`` if it is not one) as ``image_query_vector``."""
    from mmindex.pipeline.embed.decode import decode_image

    plan = embedder.pixel_plan
    image = decode_image(data, limits, plan.decode_min_side if plan is not None else None).image
    if plan is None:  # a transform ingest also runs whole, per item
        return embedder.encode_images(embedder.preprocess(image).unsqueeze(0))[0]
    import torch

    array = np.array(plan.to_array(image))  # a writable copy for torch
    pixels = plan.normalize(torch.from_numpy(array).unsqueeze(0))  # ingest's CPU path, exactly
    return embedder.encode_images(pixels)[0]


def parts_from_flags(
    texts: Sequence[str] = (),
    images: Sequence[Path | str | np.ndarray] = (),
    likes: Sequence[str] = (),
    not_texts: Sequence[str] = (),
    not_images: Sequence[Path | str | np.ndarray] = (),
    not_likes: Sequence[str] = (),
    weights: Sequence[float] | None = None,
    vectors: Sequence[np.ndarray | Sequence[float]] = (),
    extra: Sequence[QueryPart] = (),
) -> tuple[QueryPart, ...]:
    """Query parts in the documented order — texts, images, vectors, likes, then the negatives in
    the same order, then ``extra`` parts — with ``weights`` (one per part, in that order) applied
    when given. The CLI's flags, the API's arguments and the server's requests all become parts
    here. An image is a file, or the vector of an image already embedded (``image_bytes_vector``:
    an upload)."""
    parts = [
        *(QueryPart.text(text) for text in texts),
        *(_image_part(image) for image in images),
        *(QueryPart.vector(vector) for vector in vectors),
        *(QueryPart.like(ref) for ref in likes),
        *(QueryPart.text(text, negative=True) for text in not_texts),
        *(_image_part(image, negative=True) for image in not_images),
        *(QueryPart.like(ref, negative=True) for ref in not_likes),
        *extra,
    ]
    return with_weights(parts, weights)


def _image_part(image: Path | str | np.ndarray, negative: bool = False) -> QueryPart:
    return QueryPart.vector(image, negative=negative) if isinstance(image, np.ndarray) else QueryPart.image(image, negative=negative)


def _candidate_ids(ref: str) -> list[str]:
    """Point ids ``ref`` may name: a point id itself, an item key, or an indexed local file."""
    candidates: list[str] = []
    try:
        candidates.append(str(uuid.UUID(ref)))
    except ValueError:
        pass
    candidates.append(point_id(ref))
    path = Path(ref).expanduser()
    if path.exists():
        candidates.append(point_id(path.resolve().as_posix()))
    return list(dict.fromkeys(candidates))


@dataclass(frozen=True, slots=True)
class StoredItem:
    """What a stored-item reference (``--like``) names: one stored point, or every chunk of an
    indexed document. ``vector`` is the point's, or the mean of the chunks' unit vectors (so a
    document counts once, whatever its length); ``payload`` is the point's, or the first chunk's."""

    ids: tuple[str, ...]
    vector: np.ndarray
    payload: dict[str, Any]


def _document_chunks(collection: Collection, ref: str) -> list[StoredPoint]:
    """The chunks of the document ``ref`` names (its item key, or the path of its indexed file), in order."""
    doc_keys = [ref]
    path = Path(ref).expanduser()
    if path.exists():
        doc_keys.append(path.resolve().as_posix())
    store = collection.store()
    for doc_key in dict.fromkeys(doc_keys):
        only_this = PayloadFilter((Condition("doc_key", "eq", doc_key),))
        chunks: list[StoredPoint] = []
        offset: str | None = None
        while True:
            page = store.scroll(collection.physical_name, only_this, offset=offset, with_vectors=True)
            chunks += [point for point in page.points if point.vector is not None]
            offset = page.next_offset
            if offset is None:
                break
        if chunks:
            return sorted(chunks, key=lambda point: int(point.payload.get("chunk_index") or 0))
    return []


def resolve_items(collection: Collection, refs: Sequence[str]) -> dict[str, StoredItem]:
    """The stored item of each reference: a point (by point id, item key or indexed file), or a
    document's chunks (by the document's key or file); ``ConfigError`` for an unknown one."""
    wanted = {ref: _candidate_ids(ref) for ref in dict.fromkeys(refs)}
    every_id = [candidate for candidates in wanted.values() for candidate in candidates]
    found = {p.id: p for p in collection.store().retrieve(collection.physical_name, every_id, with_vectors=True)}
    resolved: dict[str, StoredItem] = {}
    for ref, candidates in wanted.items():
        match = next((found[candidate] for candidate in candidates if candidate in found), None)
        if match is not None and match.vector is not None:
            resolved[ref] = StoredItem((match.id,), match.vector, match.payload)
            continue
        chunks = _document_chunks(collection, ref)
        if not chunks:
            raise ConfigError(
                f"no item {ref!r} (item key, point id, indexed file or document) in collection {collection.name!r}"
            )
        mean = np.mean([unit(chunk.vector, ref) for chunk in chunks if chunk.vector is not None], axis=0)
        resolved[ref] = StoredItem(tuple(chunk.id for chunk in chunks), mean, chunks[0].payload)
    return resolved


def embed_parts(
    parts: Sequence[QueryPart],
    embedder: Embedder | None,
    limits: ImageLimits,
    dim: int,
    stored: dict[str, StoredItem],
) -> list[EmbeddedPart]:
    """Unit vectors of the parts, in order; texts are embedded in one batch."""
    texts = [str(part.value) for part in parts if part.kind == "text"]
    needs_model = bool(texts) or any(part.kind == "image" for part in parts)
    if needs_model and embedder is None:
        raise ConfigError("embedding a query text or image needs the collection's model")
    text_vectors = iter(embedder.encode_texts(texts) if texts and embedder is not None else [])
    embedded: list[EmbeddedPart] = []
    for part in parts:
        if part.kind == "text":
            embedded.append(EmbeddedPart(part, unit(next(text_vectors), part.describe())))
        elif part.kind == "image" and embedder is not None:
            vector = image_query_vector(embedder, Path(part.value), limits)  # type: ignore[arg-type]
            embedded.append(EmbeddedPart(part, unit(vector, part.describe())))
        elif part.kind == "vector":
            vector = np.asarray(part.value, dtype=np.float32).reshape(-1)
            if vector.shape != (dim,):
                raise SchemaMismatchError(f"query vector has {vector.size} dimensions, the collection {dim}")
            embedded.append(EmbeddedPart(part, unit(vector, part.describe())))
        else:
            item = stored[str(part.value)]
            embedded.append(EmbeddedPart(part, unit(item.vector, part.describe()), item.ids))
    return embedded


def validate_query(query: SearchQuery) -> tuple[tuple[QueryPart, ...], PayloadFilter]:
    """Check everything that needs no model or store: limit, threshold, parts, filters."""
    check_result_count(query.limit, "--limit")
    if query.offset < 0:
        raise ConfigError("--offset must be at least 0")
    if query.min_score is not None and not -1.0 <= query.min_score <= 1.0:
        raise ConfigError(f"--min-score must be between -1 and 1 (cosine similarity), got {query.min_score}")
    parts = query.all_parts()
    if not parts:
        raise ConfigError("give a query text, --image PATH or --like KEY")
    if all(part.negative for part in parts):
        raise ConfigError("a query needs at least one positive part, not only negative ones")
    payload_filter = parse_where(query.where)
    for part in parts:
        if part.kind == "image":
            read_query_image(Path(part.value))  # type: ignore[arg-type]
    return parts, payload_filter


def _is_plain_recommend(fused: FusedQuery, query: SearchQuery) -> bool:
    """Only positive stored items with equal weights: Qdrant's recommend computes the same vector."""
    parts = [embedded.part for embedded in fused.parts]
    return (
        query.mmr is None
        and all(part.kind == "like" and not part.negative and len(embedded.point_ids) == 1
                for part, embedded in zip(parts, fused.parts, strict=True))
        and len({part.effective_weight for part in parts}) == 1
    )


def run_search(query: SearchQuery, collection: Collection) -> SearchResult:
    """Run a query on an opened collection; its model is loaded only if a part needs it."""
    parts, payload_filter = validate_query(query)
    physical = collection.physical_name
    store = collection.store()
    likes = [str(part.value) for part in parts if part.kind == "like"]
    stored = resolve_items(collection, likes) if likes else {}
    needs_model = any(part.kind in ("text", "image") for part in parts)
    embedder = collection.embedder() if needs_model else None
    fused = fuse(embed_parts(parts, embedder, collection.settings.image_limits, collection.version.dim, stored))
    filter_or_none = payload_filter or None
    depth = query.offset + query.limit  # the store ranks from the best; a page is the tail of that
    method: SearchMethod
    if _is_plain_recommend(fused, query):
        method = "recommend"
        found = store.recommend(physical, list(fused.example_ids), depth, filter_or_none, with_vectors=True,
                                score_threshold=query.min_score)
    else:
        method = "nearest" if query.mmr is None else "mmr"
        found = store.search(physical, fused.vector, depth, filter_or_none, with_vectors=True,
                             score_threshold=query.min_score, exclude_ids=fused.example_ids, mmr=query.mmr)
    return SearchResult(query, fused, method, [_hit(hit, fused) for hit in found[query.offset :]])


def _hit(hit: SearchHit, fused: FusedQuery) -> QueryHit:
    terms = fused.contributions(hit.vector) if hit.vector is not None else ()
    return QueryHit(str(hit.payload.get("key", "")), float(hit.score), hit.id, hit.payload, terms)


def search_result(query: SearchQuery, settings: Settings, embedder: Embedder | None = None) -> SearchResult:
    """Run a query against a collection; filters and parts are validated before any model is loaded."""
    validate_query(query)
    with Collection.open(settings, query.collection, embedder=embedder) as collection:
        return run_search(query, collection)


def search(query: SearchQuery, settings: Settings, embedder: Embedder | None = None) -> list[QueryHit]:
    """The hits of ``search_result`` (best first)."""
    return search_result(query, settings, embedder).hits
