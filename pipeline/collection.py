"""One collection of an index root, opened: its state entry, the version in use, its paths, and,
loaded on first use, its store, its CLIP model and its text model.

The rule that a query or an ingest uses the collection's own model lives here and only here:
a model given to (or loaded by) a ``Collection`` must be the one the version was built with,
else ``ModelMismatchError``. The API (``mmindex.Index``), the ingest's run session, the
retriever, labels, info and maintenance all work through this handle.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from mmindex.pipeline.errors import CollectionNotFoundError, ConfigError, ModelMismatchError
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.shards import ShardLog
from mmindex.pipeline.io.state_file import read_state
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionState, CollectionVersion

if TYPE_CHECKING:
    from mmindex.pipeline.embed.model import Embedder, ModelSpec
    from mmindex.pipeline.embed.text_model import TextEmbedder
    from mmindex.pipeline.store.store import VectorStore

# Loads a CLIP model for a spec (e.g. a per-process cache of the Prefect workers).
EmbedderLoader = Callable[["ModelSpec", Settings], "Embedder"]


def collection_state(settings: Settings, name: str) -> CollectionState:
    """The collection's state entry, or a clear error naming the ones that exist."""
    state = read_state(settings.root)
    found = state.collections.get(name)
    if found is None:
        known = ", ".join(sorted(state.collections)) or "none"
        raise CollectionNotFoundError(f"no collection {name!r} in {settings.root} (collections: {known})")
    return found


def load_model(spec: ModelSpec, settings: Settings, loader: EmbedderLoader | None = None) -> Embedder:
    """Load a CLIP model: by ``loader`` when given, else at the configured device and precision."""
    if loader is not None:
        return loader(spec, settings)
    from mmindex.pipeline.embed.model import load_embedder

    return load_embedder(spec, settings.device, settings.precision)


def require_own_model(embedder: Embedder, version: CollectionVersion, collection: str) -> Embedder:
    """``embedder`` if the version was built with it, else ``ModelMismatchError``."""
    if embedder.embedder_id != version.embedder_id:
        raise ModelMismatchError(
            f"collection {collection!r} ({version.physical_name}) was built with {version.embedder_id}, "
            f"not {embedder.embedder_id}"
        )
    recorded, loaded = version.tag_weights_sha256, embedder.tag_weights_sha256
    if recorded is not None and loaded is not None and recorded != loaded:
        raise ModelMismatchError(
            f"collection {collection!r} was built with {embedder.spec.describe()} weights of sha256 "
            f"{recorded[:16]}, but the cached file of that tag now has sha256 {loaded[:16]} (replaced or "
            "re-published): its vectors would not compare with the collection's; put the original file "
            "back, or build a new collection from these weights (`mmindex index SOURCE -c NEW --model ...`)"
        )
    return embedder


class Collection:
    """A collection's entry and one of its versions (the current one unless told), with the store
    and the models opened lazily. A context manager: ``close`` releases the store."""

    def __init__(
        self,
        settings: Settings,
        entry: CollectionState,
        version: CollectionVersion | None = None,
        *,
        embedder: Embedder | None = None,
        loader: EmbedderLoader | None = None,
        store: VectorStore | None = None,
    ) -> None:
        """``store``: an open store to use (``close`` leaves it open: its owner closes it)."""
        self.settings = settings
        self.entry = entry
        self.version = version or entry.current
        self.paths = IndexPaths(settings.root)
        self._embedder = embedder  # checked on first use, like a loaded one
        self._checked = False
        self._loader = loader
        self._store: VectorStore | None = store
        self._owns_store = store is None

    @classmethod
    def open(
        cls, settings: Settings, name: str, *, embedder: Embedder | None = None, loader: EmbedderLoader | None = None,
        store: VectorStore | None = None,
    ) -> Collection:
        """The collection ``name`` at its current version (``CollectionNotFoundError`` if unknown)."""
        return cls(settings, collection_state(settings, name), embedder=embedder, loader=loader, store=store)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def physical_name(self) -> str:
        """The version's Qdrant collection."""
        return self.version.physical_name

    @property
    def shard_log(self) -> ShardLog:
        """The version's Parquet shard log."""
        return self.paths.shard_log(self.name, self.version.physical_name)

    # -- the store ---------------------------------------------------------------------------

    def store(self) -> VectorStore:
        """The store (a Qdrant server or the embedded one), opened on first use."""
        if self._store is None:
            from mmindex.pipeline.store.open_store import open_store

            self._store = open_store(self.settings)
        return self._store

    def close_store(self) -> None:
        """Release the store (and, embedded, nothing stays locked); reopened on next use. A store
        given to the constructor is only let go of, not closed."""
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None

    def close(self) -> None:
        self.close_store()

    def __enter__(self) -> Collection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # -- the models --------------------------------------------------------------------------

    @property
    def loaded_embedder(self) -> Embedder | None:
        """The CLIP model if it was given or loaded already; never loads it."""
        return self._embedder

    def embedder(self) -> Embedder:
        """The version's own CLIP model (the one given, or loaded on first use, by the loader when
        one was given); ``ModelMismatchError`` if it is another."""
        if self._embedder is None:
            from mmindex.pipeline.embed.model import ModelSpec

            self._embedder = load_model(ModelSpec(self.version.model, self.version.pretrained), self.settings, self._loader)
        if not self._checked:
            require_own_model(self._embedder, self.version, self.name)
            self._checked = True
        return self._embedder

    @property
    def has_text_model(self) -> bool:
        """Whether the version has the RAG text model (the ``text`` and ``bm25`` vectors)."""
        return self.version.text_embedder_id is not None

    def text_embedder(self) -> TextEmbedder:
        """The version's own text model (RAG), loaded on first use (once per process)."""
        from mmindex.pipeline.embed.text_model import load_text_embedder

        if self.version.text_model is None or not self.has_text_model:
            raise ConfigError(f"collection {self.name!r} was built without a text model")
        embedder = load_text_embedder(self.version.text_model, self.settings.device)
        if embedder.embedder_id != self.version.text_embedder_id:
            raise ModelMismatchError(
                f"collection {self.name!r} ({self.version.physical_name}) was built with text model "
                f"{self.version.text_embedder_id}, not {embedder.embedder_id}"
            )
        return embedder
