"""The exception tree of mmindex.

Run-level failures raise one of these and the CLI prints ``str(exc)`` as one line with a
non-zero exit. Item-level failures (a corrupt image, undecodable text) are never raised out of a
run: they become rows with ``status="failed"`` and a reason (see ``schemas.items``).
"""

from __future__ import annotations

from mmindex.pipeline.redact import redact_secrets


class MmindexError(Exception):
    """Base class of every error mmindex raises on purpose. Its message never carries a URL's
    credentials (userinfo, signed or token query parameters: ``pipeline/redact.py``)."""

    exit_code: int = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_secrets(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(MmindexError):
    """A flag, environment variable or config file value is invalid."""

    exit_code = 2


class SourceError(MmindexError):
    """A source cannot be crawled (missing path, not a directory, ...)."""

    exit_code = 2


class DecodeError(MmindexError):
    """An item's bytes cannot be turned into an image or text (item-level; becomes a row)."""


class ModelUnavailableError(MmindexError):
    """Model weights or configuration cannot be obtained or loaded."""

    exit_code = 3


class StoreUnavailableError(MmindexError):
    """The vector store (Qdrant server or embedded shard) cannot be reached or opened."""

    exit_code = 4


class IndexBusyError(StoreUnavailableError):
    """Another process holds the lock on the embedded store or on an ingest."""


class IncompleteRunError(MmindexError):
    """A run cannot be finalized because some of its work units are not done (re-run to finish it)."""


class ShardDispatchError(IncompleteRunError):
    """A shard sent to a work pool (``embed_deployment``) did not complete after every attempt."""


class CollectionNotFoundError(MmindexError):
    """A collection name that is not in the index root was asked for."""

    exit_code = 2


class SchemaMismatchError(MmindexError):
    """Data on disk or in the store does not match what this run expects (dimension, embedder)."""

    exit_code = 2


class DamagedShardError(SchemaMismatchError):
    """A Parquet shard is missing, truncated or corrupt (``mmindex verify`` names them, ``repair`` fixes them)."""


class DiskFullError(MmindexError):
    """The file system under the index root has too little free space for the next write."""

    exit_code = 5


class ModelMismatchError(SchemaMismatchError):
    """A model that is not the collection's own was given for a query or an ingest (one collection,
    one model: ``pipeline/collection.py``)."""


class FilterSyntaxError(ConfigError):
    """A ``--where`` expression cannot be parsed."""


class ItemNotFoundError(MmindexError):
    """A stored item (point id) that is not in the collection was asked for."""

    exit_code = 2


class RequestTooLargeError(ConfigError):
    """A request to ``mmindex serve`` carries more bytes than its limit (an upload too large)."""
