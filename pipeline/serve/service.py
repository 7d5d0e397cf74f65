"""What the search API's endpoints do, on warm models and one open store.

A ``SearchService`` serves some collections of one index root. Each request opens its collection
afresh from ``state.json`` (cheap; a rebuild or migrate that switched versions is seen at once),
on the service's one store and with models loaded once per process by the service's loader, then
runs the same pipeline functions as ``mmindex query`` (``run_search``, ``passage_mode``,
``Retriever``) and ``mmindex info`` (``collection_infos``).
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmindex.pipeline.collection import Collection, load_model
from mmindex.pipeline.embed.model import Embedder, ModelSpec
from mmindex.pipeline.errors import CollectionNotFoundError, ConfigError, ItemNotFoundError, RequestTooLargeError
from mmindex.pipeline.io.state_file import read_state
from mmindex.pipeline.manage.info import collection_infos
from mmindex.pipeline.search.gallery import folder_roots, thumbnail_jpeg, under_roots
from mmindex.pipeline.search.query import QueryHit, SearchQuery, image_bytes_vector, parts_from_flags, run_search
from mmindex.pipeline.search.retriever import Passage, RetrieveMode, Retriever, passage_mode, resolve_mode, score_kind
from mmindex.pipeline.serve.requests import DEFAULT_MAX_UPLOAD_BYTES, EmbedRequest, RetrieveRequest, SearchRequest, as_list
from mmindex.pipeline.store.store import MmrParams, VectorStore
from mmindex.schemas.config import Settings

THUMBNAIL_CACHE_ITEMS = 512
JsonObject = dict[str, Any]

@dataclass(frozen=True, slots=True)
class ServeLimits:
    """Limits beyond the request models' own: the decoded bytes of the images of one request."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES


@dataclass(frozen=True, slots=True)
class ImageFiles:
    """A query's images sent as files (``POST /search/files``): the bytes of each image file."""

    images: list[bytes]
    not_images: list[bytes]


def hit_json(hit: QueryHit) -> JsonObject:
    """A search hit as ``mmindex query --json`` prints it, with its ``point_id``."""
    return {**hit.as_json(), "point_id": hit.point_id, "mode": "clip", "score_kind": "cosine"}


def passage_json(passage: Passage, mode: RetrieveMode) -> JsonObject:
    """A passage as ``mmindex query --json`` prints it, with its ``point_id``."""
    return {**passage.as_json(), "point_id": passage.point_id, "mode": mode, "score_kind": score_kind(mode)}


class SearchService:
    """The served collections of one root, one store and the models, loaded once per process."""

    def __init__(self, settings: Settings, collections: Sequence[str], store: VectorStore,
                 limits: ServeLimits | None = None) -> None:
        self.settings = settings
        self.store = store
        self.limits = limits or ServeLimits()
        known = read_state(settings.root).collections
        self.names = list(dict.fromkeys(collections)) or sorted(known)
        if not self.names:
            raise ConfigError(f"no collections to serve in {settings.root} (index one with `mmindex index`)")
        missing = [name for name in self.names if name not in known]
        if missing:
            raise CollectionNotFoundError(f"no collection {missing[0]!r} in {settings.root} "
                                          f"(collections: {', '.join(sorted(known)) or 'none'})")
        self._models: dict[tuple[ModelSpec, str, str], Embedder] = {}
        self._models_lock = threading.Lock()
        self._thumbnails: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._thumbnails_lock = threading.Lock()

    # -- collections and models --------------------------------------------------------------

    def open(self, name: str | None) -> Collection:
        """A served collection (the first one when ``name`` is None) on the service's store."""
        chosen = name or self.names[0]
        if chosen not in self.names:
            raise CollectionNotFoundError(f"collection {chosen!r} is not served here (served: {', '.join(self.names)})")
        return Collection.open(self.settings, chosen, loader=self._model, store=self.store)

    def _model(self, spec: ModelSpec, settings: Settings) -> Embedder:
        key = (spec, str(settings.device), str(settings.precision))
        with self._models_lock:
            if key not in self._models:
                self._models[key] = load_model(spec, settings)
            return self._models[key]

    def warm(self) -> None:
        """Load every served collection's CLIP model and text model now, not on a first query."""
        for name in self.names:
            with self.open(name) as collection:
                collection.embedder()
                if collection.has_text_model:
                    collection.text_embedder()

    def close(self) -> None:
        self.store.close()

    # -- endpoints ---------------------------------------------------------------------------

    def collections(self) -> JsonObject:
        """What ``mmindex info --json`` shows, for the served collections."""
        infos = [collection_infos(self.settings, name, self.store)[0] for name in self.names]
        return {"root": str(self.settings.root), "collections": [info.as_json() for info in infos]}

    def search(self, request: SearchRequest, files: ImageFiles | None = None) -> list[JsonObject]:
        """Hits of a fused query, or passages where ``mode`` (or ``auto``) picks a passage mode.

        ``files``: the query's images as uploaded files (a multipart request) instead of base64."""
        texts = as_list(request.text)
        if files is None:
            images = self._decode_images(as_list(request.image))
            not_images = self._decode_images(as_list(request.not_image))
        elif request.image or request.not_image:
            raise ConfigError("give the images as files or as base64 in the query, not both")
        else:
            images, not_images = files.images, files.not_images
        self._checked_size([*images, *not_images])
        fused_options = (images or request.vector or request.like or request.not_text or not_images or request.not_like
                         or request.weights or request.mmr is not False or request.min_score is not None or request.offset)
        with self.open(request.collection) as collection:
            chosen = passage_mode(request.mode, collection.entry, collection.store, len(texts) == 1 and not fused_options,
                                  request.where)
            if chosen is not None:
                passages = Retriever(collection, k=request.limit, mode=chosen).retrieve(
                    texts[0], where=request.where, per_document=request.per_document)
                return [passage_json(passage, chosen) for passage in passages]
            if request.per_document is not None:
                raise ConfigError("per_document applies to passage queries (mode dense, sparse or hybrid)")
            image_vectors, not_image_vectors = (
                [image_bytes_vector(collection.embedder(), data, self.settings.image_limits) for data in group]
                for group in (images, not_images)
            )
            given = [np.asarray(request.vector, dtype=np.float32)] if request.vector is not None else []
            parts = parts_from_flags(  # a given vector comes after the images, as in Index.search
                texts=texts, images=[*image_vectors, *given], likes=as_list(request.like),
                not_texts=as_list(request.not_text), not_images=not_image_vectors, not_likes=as_list(request.not_like),
                weights=request.weights,
            )
            diversity = None if request.mmr is False else 0.5 if request.mmr is True else float(request.mmr)
            query = SearchQuery(
                collection.name, where=tuple(request.where), limit=request.limit, parts=parts,
                mmr=None if diversity is None else MmrParams(diversity, request.mmr_candidates),
                min_score=request.min_score, offset=request.offset,
            )
            return [hit_json(hit) for hit in run_search(query, collection).hits]

    def retrieve(self, request: RetrieveRequest) -> list[JsonObject]:
        """RAG passages for a question (``Index.retrieve``)."""
        with self.open(request.collection) as collection:
            mode = resolve_mode(request.mode, collection.entry)
            passages = Retriever(collection, k=request.k, mode=mode).retrieve(
                request.question, where=request.where, per_document=request.per_document)
            return [passage_json(passage, mode) for passage in passages]

    def item(self, point_id: str, collection_name: str | None) -> JsonObject:
        """A stored item by point id: its key and payload."""
        with self.open(collection_name) as collection:
            return self._item(collection, point_id)

    def _item(self, collection: Collection, point_id: str) -> JsonObject:
        try:
            canonical = str(uuid.UUID(point_id))
        except ValueError:
            raise ItemNotFoundError(f"no item {point_id!r} in collection {collection.name!r}: not a point id") from None
        found = collection.store().retrieve(collection.physical_name, [canonical])
        if not found:
            raise ItemNotFoundError(f"no item {canonical} in collection {collection.name!r}")
        point = found[0]
        return {"key": str(point.payload.get("key", "")), "point_id": point.id, "payload": point.payload}

    def thumbnail(self, point_id: str, collection_name: str | None) -> bytes:
        """A small JPEG of a stored image read from the collection's own folders (cached)."""
        with self.open(collection_name) as collection:
            item = self._item(collection, point_id)
            cache_key = (collection.name, item["point_id"])
            with self._thumbnails_lock:
                if cache_key in self._thumbnails:
                    self._thumbnails.move_to_end(cache_key)
                    return self._thumbnails[cache_key]
            uri = str(item["payload"].get("uri") or "")
            jpeg = None
            if item["payload"].get("modality") == "image" and uri.startswith("/") and under_roots(
                    uri, folder_roots(self.settings, collection.name)):
                jpeg = thumbnail_jpeg(uri, self.settings.image_limits)
            if jpeg is None:
                raise ItemNotFoundError(f"no thumbnail of item {item['point_id']}: not a readable image of the "
                                        "collection's folders")
        with self._thumbnails_lock:
            self._thumbnails[cache_key] = jpeg
            while len(self._thumbnails) > THUMBNAIL_CACHE_ITEMS:
                self._thumbnails.popitem(last=False)
        return jpeg

    def embed(self, request: EmbedRequest) -> JsonObject:
        """Unit vectors of texts or of one image in the collection's CLIP space."""
        texts = as_list(request.text)
        if bool(texts) == (request.image is not None):
            raise ConfigError("give either text (one or a list) or image (base64), not both")
        with self.open(request.collection) as collection:
            embedder = collection.embedder()
            if texts:
                vectors = embedder.encode_texts(texts)
            else:
                data = self._checked_size(self._decode_images([request.image or ""]))[0]
                vectors = image_bytes_vector(embedder, data, self.settings.image_limits).reshape(1, -1)
            return {"collection": collection.name, "embedder_id": embedder.embedder_id, "dim": int(vectors.shape[1]),
                    "vectors": vectors.astype(float).tolist()}

    def _decode_images(self, encoded: Sequence[str]) -> list[bytes]:
        decoded: list[bytes] = []
        for text in encoded:
            try:
                decoded.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise ConfigError("an image must be a base64-encoded image file") from None
        return decoded

    def _checked_size(self, images: list[bytes]) -> list[bytes]:
        """``images``, or ``RequestTooLargeError`` when together they are over the upload limit."""
        total = sum(len(data) for data in images)
        if total > self.limits.max_upload_bytes:
            raise RequestTooLargeError(f"images of {total} bytes: the limit is {self.limits.max_upload_bytes} bytes a request")
        return images
