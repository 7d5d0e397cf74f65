"""The catalog: the latest row per item key, a view over the shard log (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ...schemas.items import STATUS_FAILED, STATUS_OK
from .shards import ShardLog

CATALOG_COLUMNS = ["key", "path", "uri", "modality", "status", "error", "doc_key"]


@dataclass(frozen=True, slots=True)
class FailedItem:
    """An item that could not be indexed, and why."""

    key: str
    path: str
    modality: str
    error: str


@dataclass(frozen=True, slots=True)
class CatalogSummary:
    """Counts over the latest row of every key."""

    ok: int
    failed: int
    images: int
    text_chunks: int
    shards: int


def latest_rows(log: ShardLog, columns: list[str] | None = None) -> pa.Table:
    """The rows of every item from the newest shard that holds it.

    An item is a document (all its chunks, keyed by ``doc_key``) or a single image, so a newer
    shard supersedes every row of the item in older shards, chunks that no longer exist included.
    """
    wanted = list(dict.fromkeys(["key", "doc_key", *(columns or CATALOG_COLUMNS)]))
    tables = [
        table.append_column("_seq", pa.array([ref.seq] * table.num_rows, type=pa.int64()))
        for ref, table in log.iter_tables(wanted)
    ]
    if not tables:
        return pa.table({name: pa.array([], type=pa.string()) for name in wanted})
    combined = pa.concat_tables(tables, promote_options="default")
    combined = combined.append_column("_item", pc.coalesce(combined.column("doc_key"), combined.column("key")))
    newest = combined.group_by("_item").aggregate([("_seq", "max")])
    joined = combined.join(newest, "_item")
    current = joined.filter(pc.equal(joined.column("_seq"), joined.column("_seq_max")))
    return current.drop_columns(["_seq", "_item", "_seq_max"]).sort_by("key")


def summarize(log: ShardLog) -> CatalogSummary:
    """Counts of indexed and failed items, by modality."""
    rows = latest_rows(log, ["status", "modality"])
    status = rows.column("status").to_pylist()
    modality = rows.column("modality").to_pylist()
    ok_rows = [m for s, m in zip(status, modality, strict=True) if s == STATUS_OK]
    return CatalogSummary(
        ok=len(ok_rows),
        failed=sum(1 for s in status if s == STATUS_FAILED),
        images=sum(1 for m in ok_rows if m == "image"),
        text_chunks=sum(1 for m in ok_rows if m == "text"),
        shards=len(log.shards()),
    )


def failed_items(log: ShardLog) -> list[FailedItem]:
    """Items whose latest row is a failure, with their reasons."""
    rows = latest_rows(log, ["path", "modality", "status", "error"]).to_pylist()
    return [
        FailedItem(row["key"], row["path"], row["modality"], row["error"] or "")
        for row in rows
        if row["status"] == STATUS_FAILED
    ]
