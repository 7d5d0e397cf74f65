"""The request bodies of the search API: ``mmindex query``'s options as pydantic models, with the
server's limits on sizes and counts (a body outside them is a 422 before anything runs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_LIMIT = 1000
MAX_OFFSET = 10_000
MAX_TEXT_CHARS = 4096
MAX_PARTS = 16  # texts, images or items in one list
MAX_FILTERS = 32
MAX_EMBED_TEXTS = 64
MAX_VECTOR_DIM = 8192
DEFAULT_MAX_UPLOAD_BYTES = 8 << 20  # decoded bytes of the images of one request

QueryText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
# base64 of an encoded image; its decoded size is checked against the upload limit (413).
Base64Image = Annotated[str, Field(min_length=1)]
ItemRef = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Filter = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
SearchMode = Literal["auto", "clip", "dense", "sparse", "hybrid"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchRequest(_Strict):
    """``POST /search``: the whole query language of ``mmindex query`` (``Index.search``'s arguments).

    ``image``/``not_image`` are base64-encoded image files. Parts are fused in the order texts,
    images, vector, likes, then the negatives in the same order; ``weights`` has one weight per part.
    """

    collection: str | None = Field(None, description="Collection (default: the first one served).")
    text: QueryText | Annotated[list[QueryText], Field(max_length=MAX_PARTS)] | None = None
    image: Base64Image | Annotated[list[Base64Image], Field(max_length=MAX_PARTS)] | None = None
    vector: Annotated[list[float], Field(min_length=1, max_length=MAX_VECTOR_DIM)] | None = Field(
        None, description="A vector of the collection's space (e.g. from /embed)."
    )
    like: ItemRef | Annotated[list[ItemRef], Field(max_length=MAX_PARTS)] | None = None
    not_text: QueryText | Annotated[list[QueryText], Field(max_length=MAX_PARTS)] | None = None
    not_image: Base64Image | Annotated[list[Base64Image], Field(max_length=MAX_PARTS)] | None = None
    not_like: ItemRef | Annotated[list[ItemRef], Field(max_length=MAX_PARTS)] | None = None
    weights: Annotated[list[float], Field(max_length=6 * MAX_PARTS)] | None = None
    where: Annotated[list[Filter], Field(max_length=MAX_FILTERS)] = []
    mode: SearchMode = "auto"
    limit: int = Field(10, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    mmr: bool | Annotated[float, Field(ge=0.0, le=1.0)] = False
    mmr_candidates: int = Field(100, ge=1, le=16384)
    min_score: float | None = Field(None, ge=-1.0, le=1.0)
    per_document: int | None = Field(None, ge=1, le=MAX_LIMIT)


class RetrieveRequest(_Strict):
    """``POST /retrieve``: RAG passages for a question (``Index.retrieve``)."""

    collection: str | None = None
    question: QueryText
    k: int = Field(5, ge=1, le=MAX_LIMIT)
    where: Annotated[list[Filter], Field(max_length=MAX_FILTERS)] = []
    mode: SearchMode = "auto"
    per_document: int | None = Field(None, ge=1, le=MAX_LIMIT)


class EmbedRequest(_Strict):
    """``POST /embed``: texts or one base64 image, to vectors of the collection's CLIP space."""

    collection: str | None = None
    text: QueryText | Annotated[list[QueryText], Field(max_length=MAX_EMBED_TEXTS)] | None = None
    image: Base64Image | None = None


def as_list(value: str | list[str] | None) -> list[str]:
    """A field that takes one value or a list, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
