"""Searching a collection: embed the query with the collection's own model, filter, rank."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..schemas.config import Settings
from ..schemas.state import CollectionState
from .embed.model import Embedder, ModelSpec, load_embedder
from .errors import CollectionNotFoundError, ConfigError, SourceError
from .index.filters import parse_where
from .index.open_store import open_store
from .io.state_file import read_state


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A query as given on the command line: text and/or an image, filters, limit."""

    collection: str
    text: str | None = None
    image: Path | None = None
    where: tuple[str, ...] = ()
    limit: int = 10


@dataclass(frozen=True, slots=True)
class QueryHit:
    """One result: the item key, its cosine similarity and its payload."""

    key: str
    score: float
    point_id: str
    payload: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "score": self.score, "id": self.point_id, "payload": self.payload}


def collection_state(settings: Settings, collection: str) -> CollectionState:
    """The collection's state, or a clear error naming the ones that exist."""
    state = read_state(settings.root)
    found = state.collections.get(collection)
    if found is None:
        known = ", ".join(sorted(state.collections)) or "none"
        raise CollectionNotFoundError(f"no collection {collection!r} in {settings.root} (collections: {known})")
    return found


def embedder_for(settings: Settings, collection: CollectionState) -> Embedder:
    """Load the model a collection was built with."""
    return load_embedder(ModelSpec(collection.current.model, collection.current.pretrained), settings.device)


def image_query_vector(embedder: Embedder, path: Path, max_pixels: int) -> np.ndarray:
    """Embed a query image with exactly the decoding and preprocessing used at ingest."""
    from .embed.decode import decode_image  # noqa: PLC0415

    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read query image {path}: {exc.strerror or exc}") from exc
    decoded = decode_image(data, max_pixels)
    return embedder.encode_images(embedder.preprocess(decoded.image).unsqueeze(0))[0]


def query_vector(embedder: Embedder, query: SearchQuery, max_pixels: int) -> np.ndarray:
    """The query's vector: the text's, the image's, or their normalized mean when both are given."""
    parts: list[np.ndarray] = []
    if query.text:
        parts.append(embedder.encode_texts([query.text])[0])
    if query.image is not None:
        parts.append(image_query_vector(embedder, query.image, max_pixels))
    if not parts:
        raise ConfigError("give a query text, --image PATH, or both")
    combined = np.mean(parts, axis=0)
    return (combined / np.linalg.norm(combined)).astype(np.float32)


def search(query: SearchQuery, settings: Settings, embedder: Embedder | None = None) -> list[QueryHit]:
    """Run a query against a collection; filters are validated before any model is loaded."""
    if query.limit < 1:
        raise ConfigError("--limit must be at least 1")
    payload_filter = parse_where(query.where)
    collection = collection_state(settings, query.collection)
    if not query.text and query.image is None:
        raise ConfigError("give a query text, --image PATH, or both")
    if embedder is None:
        embedder = embedder_for(settings, collection)
    if embedder.embedder_id != collection.current.embedder_id:
        raise ConfigError(
            f"collection {query.collection!r} was built with {collection.current.embedder_id}, "
            f"not {embedder.embedder_id}"
        )
    vector = query_vector(embedder, query, settings.max_image_pixels)
    store = open_store(settings)
    try:
        hits = store.search(collection.current.physical_name, vector, query.limit, payload_filter or None)
    finally:
        store.close()
    return [QueryHit(str(hit.payload.get("key", "")), float(hit.score), hit.id, hit.payload) for hit in hits]
