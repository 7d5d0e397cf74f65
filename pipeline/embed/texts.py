"""Read, chunk and embed text documents; each chunk becomes its own record.

Chunks stream: a document's records are made one chunk at a time (``iter_document_records``) and
embedded in groups of about ``batch_size`` chunks, so a long document is yielded in several
groups, one after the other (never interleaved with another document's); the unit's shard still
holds all of them (``execute.Committer`` writes them a row group at a time). With a text model
(RAG collections) chunks are sized in its tokens and cut at headings, and every chunk gets the
text model's vector beside the CLIP one (CLIP reads the chunk's first 77 tokens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from mmindex.pipeline.embed.chunking import ChunkContext, iter_section_chunks
from mmindex.pipeline.embed.decode import read_item_bytes, sha256_hex, short_reason
from mmindex.pipeline.embed.extract import document_title
from mmindex.pipeline.embed.images import base_record, fail
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.embed.sandbox import PARSED_EXTENSIONS, DocumentLimits, ExtractionSandbox
from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.ids import chunk_key, point_id
from mmindex.pipeline.sources.base import ItemReader, ItemRef
from mmindex.schemas.items import STATUS_OK, ItemRecord

if TYPE_CHECKING:
    from mmindex.pipeline.embed.extract import ExtractedText
    from mmindex.pipeline.embed.text_model import TextEmbedder

CHUNK_OVERLAP_TOKENS = 16


def _extract(
    ref: ItemRef, document: ItemRecord, limits: DocumentLimits, sandbox: ExtractionSandbox | None, reader: ItemReader | None
) -> ExtractedText:
    """Read the document's bytes (recording their size and hash; ``reader``: a remote source's
    reader, None: a local file) and extract its text: parsed formats in the sandbox when there is
    one. Every failure is a ``DecodeError`` with a reason."""
    from mmindex.pipeline.embed.extract import extract_document

    if ref.size is not None and ref.size > limits.max_bytes:  # -1: a listing that does not know the size
        raise DecodeError(f"document too large: {ref.size} bytes exceeds --max-document-bytes {limits.max_bytes}")
    data = read_item_bytes(ref, limits.max_bytes) if reader is None else reader.read(ref, limits.max_bytes)
    document.bytes = len(data)
    document.sha256 = sha256_hex(data)
    if sandbox is not None and ref.ext.lower() in PARSED_EXTENSIONS:
        return sandbox.extract(data, ref.ext)
    try:
        return extract_document(data, ref.ext, limits.max_bytes)
    except DecodeError:
        raise
    except RecursionError as exc:
        raise DecodeError("document too complex: nested too deeply to parse") from exc
    except Exception as exc:  # any extractor failure is this document's, recorded as its reason
        raise DecodeError(f"cannot extract text: {type(exc).__name__}: {short_reason(exc)}") from exc


def document_records(
    ref: ItemRef,
    embedder: Embedder,
    text_embedder: TextEmbedder | None = None,
    limits: DocumentLimits | None = None,
    sandbox: ExtractionSandbox | None = None,
    reader: ItemReader | None = None,
    context: ChunkContext | None = None,
) -> list[ItemRecord]:
    """All of ``iter_document_records``."""
    return list(iter_document_records(ref, embedder, text_embedder, limits, sandbox, reader, context))


def iter_document_records(
    ref: ItemRef,
    embedder: Embedder,
    text_embedder: TextEmbedder | None = None,
    limits: DocumentLimits | None = None,
    sandbox: ExtractionSandbox | None = None,
    reader: ItemReader | None = None,
    context: ChunkContext | None = None,
) -> Iterator[ItemRecord]:
    """One record per chunk of the document, made one at a time, or a single failed record
    (``reader``: a remote source's reader; None: a local file).

    ``limits``: the largest document and the parser's budget (``sandbox``: the child process
    HTML and PDF are parsed in; None parses them in this process, without a budget).
    ``context``: the text model's chunk context, whose prefix tokens each chunk leaves free.
    Every chunk records its document's ``title``.
    """
    document = base_record(ref, embedder.embedder_id)
    document.doc_key = ref.key
    try:
        extracted = _extract(ref, document, limits or DocumentLimits(), sandbox, reader)
    except DecodeError as exc:
        yield fail(document, str(exc))
        return
    if text_embedder is None:
        count, limit, overlap = embedder.count_tokens, embedder.context_length - 2, CHUNK_OVERLAP_TOKENS
    else:
        from mmindex.pipeline.embed.text_model import TEXT_CHUNK_OVERLAP

        count, overlap, limit = text_embedder.count_tokens, TEXT_CHUNK_OVERLAP, text_chunk_tokens(text_embedder)
    document.mime = extracted.mime
    document.title = document_title(extracted, PurePosixPath(ref.path).stem)
    model_context = context if text_embedder is not None else None  # CLIP-only chunks have no context
    reserve = model_context.reserve(document.title) if model_context is not None else None
    merge = model_context is not None and model_context.merge_sections
    chunks = 0
    for chunk in iter_section_chunks(extracted.text, extracted.headings, count, limit, overlap, reserve=reserve,
                                     merge_sections=merge):
        key = chunk_key(ref.key, chunk.index)
        chunks += 1
        yield dataclasses.replace(
            document,
            key=key,
            point_id=point_id(key),
            text=chunk.text,
            chunk_index=chunk.index,
            char_start=chunk.char_start,
            char_end=chunk.char_end,
            heading_path=list(chunk.heading_path) or None,
        )
    if not chunks:
        document.mime = None
        yield fail(document, "empty document: no text to index")


def text_chunk_tokens(text_embedder: TextEmbedder) -> int:
    """The token budget of a chunk (its context prefix included) in a collection with a text model."""
    from mmindex.pipeline.embed.text_model import TEXT_CHUNK_TOKENS

    return min(TEXT_CHUNK_TOKENS, text_embedder.max_tokens - 2)


def chunk_context(text_embedder: TextEmbedder, scheme: str | None) -> ChunkContext:
    """The chunk context of a collection's ``scheme`` for its text model."""
    return ChunkContext(scheme, text_embedder.count_tokens, text_chunk_tokens(text_embedder))


@dataclass(slots=True)
class TextEmbedStats:
    """How many chunk vectors the model computed and how many were reused unchanged."""

    encoded: int = 0
    reused: int = 0
    text_encoded: int = 0
    text_reused: int = 0


def embed_texts(
    refs: Sequence[ItemRef],
    embedder: Embedder,
    *,
    batch_size: int,
    known_vectors: Mapping[str, np.ndarray] | None = None,
    stats: TextEmbedStats | None = None,
    text_embedder: TextEmbedder | None = None,
    known_text_vectors: Mapping[tuple[str, ...], np.ndarray] | None = None,
    limits: DocumentLimits | None = None,
    reader: ItemReader | None = None,
    context_scheme: str | None = None,
) -> Iterator[tuple[list[ItemRecord], np.ndarray]]:
    """Yield (records, embeddings) for groups of at most ``batch_size`` chunks, in document order:
    a document of more chunks comes in several consecutive groups (memory holds one group).

    A chunk whose exact text has a vector in ``known_vectors`` (the stored chunks of edited
    documents) reuses it: the model is deterministic, so only chunks whose text changed are
    embedded again. With ``text_embedder`` each ok chunk also gets its ``text_vector`` of the chunk
    with its context (``context_scheme``: the collection's, see ``chunking.ChunkContext``), reused
    from ``known_text_vectors`` by ``ChunkContext.reuse_key``. ``limits``: what one document may
    cost (HTML and PDF are parsed in a child process within it, started on the first such document).
    """
    context = chunk_context(text_embedder, context_scheme) if text_embedder is not None else None
    known = known_vectors or {}
    known_text = known_text_vectors or {}
    counts = stats if stats is not None else TextEmbedStats()
    pending: list[ItemRecord] = []

    def flush() -> tuple[list[ItemRecord], np.ndarray]:
        embeddings = np.zeros((len(pending), embedder.dim), dtype=np.float32)
        to_encode: list[int] = []
        for row, record in enumerate(pending):
            if record.status != STATUS_OK:
                continue
            if record.text in known:
                embeddings[row] = known[record.text]  # type: ignore[index]
                counts.reused += 1
            else:
                to_encode.append(row)
        if to_encode:
            embeddings[to_encode] = embedder.encode_texts([pending[row].text or "" for row in to_encode], batch_size)
            counts.encoded += len(to_encode)
        if text_embedder is not None and context is not None:
            _add_text_vectors(pending, text_embedder, context, known_text, batch_size, counts)
        return list(pending), embeddings

    document_limits = limits or DocumentLimits()
    with ExtractionSandbox(document_limits) as sandbox:
        for ref in refs:
            for record in iter_document_records(ref, embedder, text_embedder, document_limits, sandbox, reader, context):
                pending.append(record)
                if len(pending) >= batch_size:
                    yield flush()
                    pending.clear()
    if pending:
        yield flush()


def _add_text_vectors(
    records: list[ItemRecord],
    text_embedder: TextEmbedder,
    context: ChunkContext,
    known: Mapping[tuple[str, ...], np.ndarray],
    batch_size: int,
    counts: TextEmbedStats,
) -> None:
    """Set ``text_vector`` on the ok chunks: reused by their reuse key, else their text with its
    context encoded in one batch."""
    to_encode: list[ItemRecord] = []
    for record in records:
        if record.status != STATUS_OK:
            continue
        vector = known.get(context.reuse_key(record.title, record.heading_path, record.text or ""))
        if vector is not None:
            record.text_vector = vector
            counts.text_reused += 1
        else:
            to_encode.append(record)
    if to_encode:
        inputs = [context.embed_text(record.title, record.heading_path, record.text or "") for record in to_encode]
        vectors = text_embedder.encode(inputs, batch_size)
        for record, vector in zip(to_encode, vectors, strict=True):
            record.text_vector = vector
        counts.text_encoded += len(to_encode)
