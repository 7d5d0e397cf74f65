"""The Qdrant payload of a point, and the payload fields that get an index.

Payload keys are what users type in ``--where`` (``modality=image``, ``width>=640``,
``meta.camera=x100``), so they are part of the public contract.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pyarrow as pa


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
    title: str | None = None
    caption: str | None = None
    meta: dict[str, Any] | None = None
    # Set by ``mmindex label`` on images, not by ingest: the labels that passed the threshold,
    # best first, and their scores (``--where label_scores.cat>=0.8`` filters on them too).
    labels: list[str] | None = None
    label_scores: dict[str, float] | None = None


# Payload key <- shard column, in ``PointPayload`` field order (``payloads_from_table``).
_PAYLOAD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("key", "key"), ("source", "source_id"), ("modality", "modality"), ("uri", "uri"), ("path", "path"),
    ("ext", "ext"), ("embedder", "embedder_id"), ("mime", "mime"), ("width", "width"), ("height", "height"),
    ("bytes", "bytes"), ("mtime", "mtime_ns"), ("sha256", "sha256"), ("text", "text"), ("doc_key", "doc_key"),
    ("chunk_index", "chunk_index"), ("char_start", "char_start"), ("char_end", "char_end"),
    ("heading_path", "heading_path"), ("title", "title"), ("caption", "caption"), ("meta", "metadata_json"),
)


def payloads_from_table(table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """The Qdrant payload of every row of shard rows (a ``PointPayload`` without its unset fields),
    column-wise: one ``to_pylist`` per column instead of a record and a validated model per row.
    The one mapping from shard rows to payloads (every write into Qdrant goes through it).
    """
    names = [name for name, _ in _PAYLOAD_COLUMNS]
    present = set(table.schema.names)  # shards older than a column read it as null
    columns = [table.column(column).to_pylist() if column in present else [None] * table.num_rows
               for _, column in _PAYLOAD_COLUMNS]
    mtime, meta, headings = names.index("mtime"), names.index("meta"), names.index("heading_path")
    columns[headings] = [value or None for value in columns[headings]]
    columns[mtime] = [None if value is None else value / 1e9 for value in columns[mtime]]
    columns[meta] = [None if value is None else json.loads(value) for value in columns[meta]]
    return [
        {name: value for name, value in zip(names, row, strict=True) if value is not None}
        for row in zip(*columns, strict=True)
    ]
