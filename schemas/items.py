"""The Arrow schema of an embedded item: the one object that flows between stages.

Every shard file under ``<root>/shards/`` is a Parquet file with exactly this schema (plus the
embedding width, which depends on the model). Failed items are rows too: ``status="failed"``,
``error`` says why, ``embedding`` is null. Deleted items (and chunks a document no longer has)
are tombstone rows with ``status="deleted"``. A row's item is its ``doc_key`` (documents) or its
``key`` (images); a shard holds the complete new state of every item it mentions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1

Modality = Literal["image", "text"]
Status = Literal["ok", "failed", "deleted"]
STATUS_OK: Status = "ok"
STATUS_FAILED: Status = "failed"
# A tombstone: the item (or one chunk of a document) is gone; its point must not exist.
STATUS_DELETED: Status = "deleted"


@dataclass(slots=True)
class ItemRecord:
    """One row of a shard, minus its embedding (kept as a separate float32 matrix)."""

    key: str
    point_id: str
    source_id: str
    modality: Modality
    uri: str
    path: str
    ext: str
    embedder_id: str
    status: Status = STATUS_OK
    error: str | None = None
    mime: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    text: str | None = None
    doc_key: str | None = None
    chunk_index: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    caption: str | None = None
    metadata_json: str | None = None
    sidecar_sig: str | None = None
    heading_path: list[str] | None = None
    # A document's title (its declared title, first heading or file stem): part of the context
    # its chunks are embedded with (``pipeline/embed/chunking.py``); null in older shards.
    title: str | None = None
    # The HTTP validators (``ETag``, ``Last-Modified``) a fetched item's body came with: what
    # ``index --recheck`` revalidates it with; null for other sources and in older shards.
    etag: str | None = None
    last_modified: str | None = None
    # The text model's vector of a text chunk (collections with a text model); stored in the
    # ``text_embedding`` column, not one of ``RECORD_FIELDS``.
    text_vector: np.ndarray | None = field(default=None, compare=False, repr=False)


_ARROW_TYPES: dict[str, pa.DataType] = {
    "key": pa.string(),
    "point_id": pa.string(),
    "source_id": pa.string(),
    "modality": pa.string(),
    "uri": pa.string(),
    "path": pa.string(),
    "ext": pa.string(),
    "embedder_id": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "mime": pa.string(),
    "width": pa.int32(),
    "height": pa.int32(),
    "bytes": pa.int64(),
    "mtime_ns": pa.int64(),
    "sha256": pa.string(),
    "text": pa.string(),
    "doc_key": pa.string(),
    "chunk_index": pa.int32(),
    "char_start": pa.int32(),
    "char_end": pa.int32(),
    "caption": pa.string(),
    "metadata_json": pa.string(),
    "sidecar_sig": pa.string(),
    "heading_path": pa.list_(pa.string()),
    "title": pa.string(),
    "etag": pa.string(),
    "last_modified": pa.string(),
}
TEXT_EMBEDDING = "text_embedding"
# Columns added after the first shards were written: a shard without one reads it as null.
LATER_COLUMNS: dict[str, pa.DataType] = {name: _ARROW_TYPES[name] for name in ("heading_path", "title", "etag",
                                                                              "last_modified")}
_NOT_NULL = {"key", "point_id", "source_id", "modality", "uri", "path", "ext", "embedder_id", "status"}
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ItemRecord) if f.name != "text_vector")


def item_schema(dim: int, text_dim: int | None = None) -> pa.Schema:
    """Arrow schema of a shard whose embeddings have ``dim`` dimensions.

    With ``text_dim`` the shard also has a nullable ``text_embedding`` column: the text model's
    vector of each text chunk (null for images and failed rows).
    """
    if dim <= 0:
        raise ValueError(f"embedding dimension must be positive, got {dim}")
    columns = [pa.field(name, _ARROW_TYPES[name], nullable=name not in _NOT_NULL) for name in RECORD_FIELDS]
    columns.append(pa.field("embedding", pa.list_(pa.float32(), dim), nullable=True))
    metadata = {"mmindex.schema_version": str(SCHEMA_VERSION), "mmindex.dim": str(dim)}
    if text_dim is not None:
        columns.append(pa.field(TEXT_EMBEDDING, pa.list_(pa.float32(), text_dim), nullable=True))
        metadata["mmindex.text_dim"] = str(text_dim)
    return pa.schema(columns, metadata=metadata)


def _text_vectors(records: list[ItemRecord], text_dim: int) -> pa.FixedSizeListArray:
    matrix = np.zeros((len(records), text_dim), dtype=np.float32)
    missing = []
    for row, record in enumerate(records):
        if record.status == STATUS_OK and record.text_vector is not None:
            matrix[row] = record.text_vector
            missing.append(False)
        else:
            missing.append(True)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, text_dim, mask=pa.array(missing, type=pa.bool_()))


def records_to_batch(
    records: list[ItemRecord], embeddings: np.ndarray, dim: int, text_dim: int | None = None
) -> pa.RecordBatch:
    """Build a RecordBatch from records and their embeddings (row i of ``embeddings`` is record i).

    Rows whose status is failed get a null embedding whatever the matrix holds there. With
    ``text_dim`` the records' ``text_vector``s fill the ``text_embedding`` column.
    """
    if embeddings.shape != (len(records), dim):
        raise ValueError(f"embeddings shape {embeddings.shape} != ({len(records)}, {dim})")
    schema = item_schema(dim, text_dim)
    columns: list[pa.Array] = []
    for name in RECORD_FIELDS:
        values = [getattr(record, name) for record in records]
        columns.append(pa.array(values, type=_ARROW_TYPES[name]))
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), type=pa.float32())
    failed_mask = pa.array([record.status != STATUS_OK for record in records], type=pa.bool_())
    vectors = pa.FixedSizeListArray.from_arrays(flat, dim, mask=failed_mask)
    columns.append(vectors)
    if text_dim is not None:
        columns.append(_text_vectors(records, text_dim))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def batch_to_records(batch: pa.RecordBatch | pa.Table) -> list[ItemRecord]:
    """Rows of a shard back as records (embeddings are read with ``batch_embeddings``).

    Columns a shard predates (``heading_path``, ``title``, ``etag``, ``last_modified``) read as null; a ``text_embedding`` column
    fills the records' ``text_vector``.
    """
    present = [name for name in RECORD_FIELDS if name in batch.schema.names]
    records = [ItemRecord(**row) for row in batch.select(present).to_pylist()]
    text_vectors = batch_text_vectors(batch)
    if text_vectors is not None:
        for record, vector in zip(records, text_vectors, strict=True):
            record.text_vector = vector
    return records


def batch_text_vectors(batch: pa.RecordBatch | pa.Table) -> list[np.ndarray | None] | None:
    """The ``text_embedding`` column as one vector (or None) per row; None without that column."""
    if TEXT_EMBEDDING not in batch.schema.names:
        return None
    column = batch.column(TEXT_EMBEDDING)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    text_dim = batch.schema.field(TEXT_EMBEDDING).type.list_size
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    filled = column.fill_null(pa.scalar([0.0] * text_dim, type=column.type))
    matrix = filled.values.to_numpy(zero_copy_only=False).reshape(len(batch), text_dim).astype(np.float32)
    return [matrix[row] if valid[row] else None for row in range(len(batch))]


def batch_embeddings(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The embedding column as an (n, dim) float32 matrix; failed rows are zero rows."""
    column = batch.column("embedding")
    dim = batch.schema.field("embedding").type.list_size
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    filled = column.fill_null(pa.scalar([0.0] * dim, type=column.type))
    return filled.values.to_numpy(zero_copy_only=False).reshape(len(batch), dim).astype(np.float32, copy=False)
