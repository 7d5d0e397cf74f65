"""Deterministic identities: item keys and point ids (docs/ARCHITECTURE.md §2)."""

from __future__ import annotations

import uuid

# Fixed forever: changing it would change every point id of every existing index.
POINT_NAMESPACE = uuid.UUID("6f0c3a52-54d4-5f3e-9a57-6d6d696e6465")


def point_id(item_key: str) -> str:
    """The Qdrant point id of an item: UUIDv5 of its key, so every write is idempotent."""
    return str(uuid.uuid5(POINT_NAMESPACE, item_key))


def item_key(source_id: str, relative_path: str) -> str:
    """Stable name of an item: its source id joined to its POSIX relative path."""
    return f"{source_id.rstrip('/')}/{relative_path.lstrip('/')}"


def chunk_key(document_key: str, chunk_index: int) -> str:
    """Key of the ``chunk_index``-th text chunk of a document."""
    return f"{document_key}#chunk={chunk_index}"
