"""Pick the store backend from settings: a Qdrant server by URL, else embedded qdrant-edge."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import is_remote
from mmindex.pipeline.store.store import VectorStore
from mmindex.schemas.config import Settings

_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,62}")


def validate_collection_name(name: str) -> str:
    """Collection names are what users type; keep them portable across backends and file systems."""
    if not _COLLECTION_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def physical_collection_name(name: str, embedder_id: str) -> str:
    """The Qdrant collection behind a user-facing name: one per (name, embedder)."""
    return f"{name}--{hashlib.sha256(embedder_id.encode()).hexdigest()[:10]}"


LOCAL_CLIENT_PREFIX = "local:"


def require_store_for_root(settings: Settings) -> None:
    """An object-storage root needs a Qdrant server: the embedded store is a local directory
    that the other workers sharing the root could not see."""
    if is_remote(settings.root) and not settings.qdrant_url:
        raise ConfigError(
            f"the index root {settings.root} is an fsspec URL (object storage): give a Qdrant server with --qdrant-url or QDRANT_URL "
            "(the embedded store needs a local directory)"
        )


def open_store(settings: Settings, hold: bool = False) -> VectorStore:
    """``QdrantClient`` against ``--qdrant-url``/``QDRANT_URL`` when set, else qdrant-edge under the root
    (a local root only: workers that share an object-storage root must share one Qdrant too).

    ``local:/path`` selects qdrant-client's own local mode (for prototyping and tests; it speaks
    the server's API in-process). ``hold``: a long-running reader's embedded store, which keeps
    shards open between reads and hands them to a process that waits (``HeldEdgeStore``).
    """
    if settings.qdrant_url and settings.qdrant_url.startswith(LOCAL_CLIENT_PREFIX):
        from mmindex.pipeline.store.client_store import ClientStore

        return ClientStore.local(Path(settings.qdrant_url[len(LOCAL_CLIENT_PREFIX) :]).expanduser())
    if settings.qdrant_url:
        from mmindex.pipeline.store.client_store import ClientStore

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ClientStore.connect(settings.qdrant_url, api_key)
    require_store_for_root(settings)
    if hold:
        from mmindex.pipeline.store.held_edge_store import HeldEdgeStore

        return HeldEdgeStore(IndexPaths(settings.root).qdrant_dir)
    from mmindex.pipeline.store.edge_store import EdgeStore

    return EdgeStore(IndexPaths(settings.root).qdrant_dir)
