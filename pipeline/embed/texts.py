"""Read, chunk and embed text documents; each chunk becomes its own record.

All chunks of a document are yielded together, so a document never straddles two shards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...schemas.items import STATUS_OK, ItemRecord
from ..chunking import chunk_text
from ..errors import DecodeError
from ..ids import chunk_key, point_id
from ..sources.base import ItemRef
from .decode import decode_text, read_item_bytes, sha256_hex
from .images import MAX_FILE_BYTES, base_record, fail
from .model import Embedder

CHUNK_OVERLAP_TOKENS = 16
MAX_TEXT_BYTES = 64 * 1024 * 1024


def document_records(ref: ItemRef, embedder: Embedder) -> list[ItemRecord]:
    """One record per chunk of the document, or a single failed record."""
    document = base_record(ref, embedder.embedder_id)
    document.doc_key = ref.key
    try:
        data = read_item_bytes(ref, min(MAX_FILE_BYTES, MAX_TEXT_BYTES))
        document.bytes = len(data)
        document.sha256 = sha256_hex(data)
        text = decode_text(data)
    except DecodeError as exc:
        return [fail(document, str(exc))]
    chunks = chunk_text(text, embedder.count_tokens, embedder.context_length - 2, CHUNK_OVERLAP_TOKENS)
    if not chunks:
        return [fail(document, "empty document: no text to index")]
    document.mime = "text/markdown" if ref.ext == "md" else "text/plain"
    records = []
    for chunk in chunks:
        key = chunk_key(ref.key, chunk.index)
        records.append(
            dataclasses.replace(
                document,
                key=key,
                point_id=point_id(key),
                text=chunk.text,
                chunk_index=chunk.index,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
            )
        )
    return records


@dataclass(slots=True)
class TextEmbedStats:
    """How many chunk vectors the model computed and how many were reused unchanged."""

    encoded: int = 0
    reused: int = 0


def embed_texts(
    refs: Sequence[ItemRef],
    embedder: Embedder,
    *,
    batch_size: int,
    known_vectors: Mapping[str, np.ndarray] | None = None,
    stats: TextEmbedStats | None = None,
) -> Iterator[tuple[list[ItemRecord], np.ndarray]]:
    """Yield (records, embeddings) for groups of whole documents (about ``batch_size`` chunks).

    A chunk whose exact text has a vector in ``known_vectors`` (the stored chunks of edited
    documents) reuses it: the model is deterministic, so only chunks whose text changed are
    embedded again.
    """
    known = known_vectors or {}
    counts = stats if stats is not None else TextEmbedStats()
    pending: list[ItemRecord] = []

    def flush() -> tuple[list[ItemRecord], np.ndarray]:
        embeddings = np.zeros((len(pending), embedder.dim), dtype=np.float32)
        to_encode: list[int] = []
        for row, record in enumerate(pending):
            if record.status != STATUS_OK:
                continue
            if record.text in known:
                embeddings[row] = known[record.text]
                counts.reused += 1
            else:
                to_encode.append(row)
        if to_encode:
            embeddings[to_encode] = embedder.encode_texts([pending[row].text or "" for row in to_encode], batch_size)
            counts.encoded += len(to_encode)
        return list(pending), embeddings

    for ref in refs:
        pending.extend(document_records(ref, embedder))
        if len(pending) >= batch_size:
            yield flush()
            pending.clear()
    if pending:
        yield flush()
