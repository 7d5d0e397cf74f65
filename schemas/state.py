"""``<root>/state.json``: which collections an index root holds and how they were built."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

# Names in the state become directory names (shard logs, embedded store folders) and Qdrant
# collection names: matched whole (so "photos\n" is refused), no separators, no dots (so a
# tampered "../../.." can never point outside the root).
CollectionName = Annotated[str, StringConstraints(pattern=r"\A[A-Za-z0-9][A-Za-z0-9_\-]{0,62}\z")]
PhysicalName = Annotated[str, StringConstraints(pattern=r"\A[A-Za-z0-9][A-Za-z0-9_\-]{0,199}\z")]

# The plan's part of ``RunCounts``, in the order reports show it.
PLAN_FIELDS = ("new", "changed", "renamed", "deleted", "unchanged", "retried", "failed_unchanged")


class RunCounts(BaseModel):
    """What a run did, from planning to the report: one shape all the way.

    Planning fills ``items_seen`` and the plan's counts (``PLAN_FIELDS``), each work unit's
    commit the rest; the run adds them up (``+``), the report prints them and the run record
    (``RunSummary``, the collection's ``last_run``) stores them as they are.
    """

    items_seen: int = 0
    new: int = 0
    changed: int = 0
    renamed: int = 0
    deleted: int = 0
    unchanged: int = 0
    retried: int = 0
    failed_unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    chunks_reused: int = 0
    images: int = 0
    text_chunks: int = 0
    failed: int = 0
    points_upserted: int = 0
    points_deleted: int = 0
    shards_written: int = 0
    # ``index --recheck``: the unchanged manifest rows whose URLs planning sent to be revalidated
    # (counted in ``unchanged`` too), and what the revalidation found: not modified (a 304, no
    # body), a body with another content hash (re-embedded), or a failure (the stored item is kept).
    rechecked: int = 0
    recheck_not_modified: int = 0
    recheck_changed: int = 0
    recheck_failed: int = 0

    def __add__(self, other: RunCounts) -> RunCounts:
        return RunCounts(**{name: getattr(self, name) + getattr(other, name) for name in RunCounts.model_fields})

    def plan(self) -> dict[str, int]:
        """The plan's counts by name (``--dry-run``, the report's ``plan``)."""
        return {name: getattr(self, name) for name in PLAN_FIELDS}


class RunSummary(RunCounts):
    """The record of the last ingest run into a collection: its counts, when, and how long.

    Flat, as ``state.json`` files of every earlier version hold it (counts they lack are 0).
    """

    started_at: datetime
    seconds: float
    dry_run: bool = False

    @classmethod
    def of(cls, counts: RunCounts, started_at: datetime, seconds: float) -> RunSummary:
        return cls(**dict(counts), started_at=started_at, seconds=seconds)


class CollectionVersion(BaseModel):
    """One physical Qdrant collection built with one embedder, and its shard log."""

    physical_name: PhysicalName
    embedder_id: str
    model: str
    pretrained: str | None
    dim: int
    created_at: datetime
    # Shards with seq <= applied_through are known to be in Qdrant; later ones are replayed.
    applied_through: int = 0
    # RAG: the sentence-embedding model of text chunks (the ``text`` named vector) and the
    # sparse encoder of the ``bm25`` vector; None for collections built without them.
    text_model: str | None = None
    text_embedder_id: str | None = None
    text_dim: int | None = None
    sparse_encoder_id: str | None = None
    # What the text model embeds ahead of each chunk (``pipeline/embed/chunking.py`` schemes);
    # None: a version from before chunk context, whose chunks were embedded bare.
    chunk_context: str | None = None
    # The sha256 of the weights file a published tag was loaded from when the version was made
    # (a tag names weights by name only); None for checkpoint files and local-dirs (the embedder
    # id holds their hash) and for versions made before it was recorded (not checked).
    tag_weights_sha256: str | None = None


SourceKind = Literal["folder", "manifest", "prefix", "webdataset"]


class ManifestColumns(BaseModel):
    """Which columns of a URL manifest hold the URL, the caption and the item key (None: the default)."""

    url: str | None = None
    caption: str | None = None
    key: str | None = None


class FetchOptions(BaseModel):
    """How items of a remote source are fetched over HTTP(S) (``mmindex index --fetch-*``)."""

    timeout_s: float = Field(default=30.0, gt=0)
    max_bytes: int = Field(default=50_000_000, gt=0)
    concurrency: int = Field(default=16, ge=1)
    per_host: int = Field(default=8, ge=1)
    retries: int = Field(default=2, ge=0)
    max_redirects: int = Field(default=5, ge=0)
    allow_private_network: bool = False
    allow_networks: list[str] = Field(default_factory=list)
    user_agent_token: str | None = None
    respect_opt_outs: bool = True


class SourceSpec(BaseModel):
    """A source indexed into a collection, remembered so a migration can re-crawl it.

    ``path`` is the folder or the manifest (a local path or an fsspec URL); ``kind`` says which
    (state files written before sources had kinds hold folders).
    """

    path: str
    kind: SourceKind = "folder"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    include_hidden: bool = False
    follow_links_outside: bool = False
    columns: ManifestColumns = Field(default_factory=ManifestColumns)
    fetch: FetchOptions = Field(default_factory=FetchOptions)


LabelScoring = Literal["softmax", "cosine"]


class LabelConfig(BaseModel):
    """Zero-shot labels a collection was labeled with; re-applied to points an ingest rewrites."""

    labels: list[str]
    templates: list[str]
    threshold: float | None = None
    scoring: LabelScoring = "softmax"


class CollectionState(BaseModel):
    """A collection as users name it: an alias for its current version."""

    name: CollectionName
    current: CollectionVersion
    building: CollectionVersion | None = None
    previous: list[CollectionVersion] = Field(default_factory=list)
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    labels: LabelConfig | None = None
    last_run: RunSummary | None = None

    def version(self, physical_name: str) -> CollectionVersion | None:
        """Any version of this collection by physical name."""
        candidates = [self.current, *([self.building] if self.building else []), *self.previous]
        return next((version for version in candidates if version.physical_name == physical_name), None)


class IndexState(BaseModel):
    """Everything ``state.json`` holds."""

    format: int = 1
    collections: dict[CollectionName, CollectionState] = Field(default_factory=dict)
