"""``<root>/state.json``: which collections an index root holds and how they were built."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RunSummary(BaseModel):
    """Counts of the last ingest run into a collection."""

    started_at: datetime
    seconds: float
    items_seen: int
    images: int
    text_chunks: int
    failed: int
    points_upserted: int
    shards_written: int


class CollectionVersion(BaseModel):
    """One physical Qdrant collection built with one embedder."""

    physical_name: str
    embedder_id: str
    model: str
    pretrained: str | None
    dim: int
    created_at: datetime


class CollectionState(BaseModel):
    """A collection as users name it: an alias for its current version."""

    name: str
    current: CollectionVersion
    last_run: RunSummary | None = None


class IndexState(BaseModel):
    """Everything ``state.json`` holds."""

    format: int = 1
    collections: dict[str, CollectionState] = Field(default_factory=dict)
