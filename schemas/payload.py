"""The Qdrant payload of a point, and the payload fields that get an index.

Payload keys are what users type in ``--where`` (``modality=image``, ``width>=640``,
``meta.camera=x100``), so they are part of the public contract.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

from .items import ItemRecord


class FieldType(str, Enum):
    """Type of an indexed payload field; decides how ``--where`` values are parsed."""

    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"


# Every field users filter on gets a payload index when a collection is created.
INDEXED_FIELDS: dict[str, FieldType] = {
    "key": FieldType.KEYWORD,
    "source": FieldType.KEYWORD,
    "modality": FieldType.KEYWORD,
    "path": FieldType.KEYWORD,
    "ext": FieldType.KEYWORD,
    "mime": FieldType.KEYWORD,
    "sha256": FieldType.KEYWORD,
    "doc_key": FieldType.KEYWORD,
    "embedder": FieldType.KEYWORD,
    "width": FieldType.INTEGER,
    "height": FieldType.INTEGER,
    "bytes": FieldType.INTEGER,
    "chunk_index": FieldType.INTEGER,
    "mtime": FieldType.FLOAT,
    # Zero-shot labels (``mmindex label``): a list of keywords; ``labels=cat`` matches any element.
    "labels": FieldType.KEYWORD,
}

LABELS_FIELD = "labels"
LABEL_SCORES_FIELD = "label_scores"


class PointPayload(BaseModel):
    """What Qdrant stores beside each vector."""

    model_config = ConfigDict(extra="forbid")

    key: str
    source: str
    modality: str
    uri: str
    path: str
    ext: str
    embedder: str
    mime: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    text: str | None = None
    doc_key: str | None = None
    chunk_index: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    heading_path: list[str] | None = None
    caption: str | None = None
    meta: dict[str, Any] | None = None
    # Set by ``mmindex label`` on images, not by ingest: the labels that passed the threshold,
    # best first, and their scores (``--where label_scores.cat>=0.8`` filters on them too).
    labels: list[str] | None = None
    label_scores: dict[str, float] | None = None

    @classmethod
    def from_record(cls, record: ItemRecord) -> PointPayload:
        """The payload of an indexed (status ok) record."""
        return cls(
            key=record.key,
            source=record.source_id,
            modality=record.modality,
            uri=record.uri,
            path=record.path,
            ext=record.ext,
            embedder=record.embedder_id,
            mime=record.mime,
            width=record.width,
            height=record.height,
            bytes=record.bytes,
            mtime=None if record.mtime_ns is None else record.mtime_ns / 1e9,
            sha256=record.sha256,
            text=record.text,
            doc_key=record.doc_key,
            chunk_index=record.chunk_index,
            char_start=record.char_start,
            char_end=record.char_end,
            heading_path=record.heading_path or None,
            caption=record.caption,
            meta=None if record.metadata_json is None else json.loads(record.metadata_json),
        )

    def to_qdrant(self) -> dict[str, Any]:
        """The payload as stored: unset fields are left out rather than stored as null."""
        return self.model_dump(exclude_none=True)
