"""The catalog: the current rows of every item, a view over the shard log (DESIGN §3).

An item is an image (rows keyed by ``key``) or a document (all its chunk rows share ``doc_key``).
The newest shard that mentions an item holds its complete current state, so older rows of that
item (chunks that no longer exist included) are superseded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...schemas.items import STATUS_DELETED, STATUS_FAILED, STATUS_OK, ItemRecord, batch_embeddings, batch_to_records
from .shards import ShardLog

ITEM_COLUMNS = ["key", "doc_key", "source_id", "modality", "uri", "path", "ext", "status", "error",
                "sha256", "bytes", "mtime_ns", "sidecar_sig"]


@dataclass(frozen=True, slots=True)
class FailedItem:
    """An item that could not be indexed, and why."""

    key: str
    path: str
    modality: str
    error: str


@dataclass(frozen=True, slots=True)
class CatalogSummary:
    """Counts over the current rows of every item."""

    ok: int
    failed: int
    images: int
    text_chunks: int
    shards: int


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """The current state of one item, as the planner needs it."""

    item_key: str
    source_id: str
    modality: str
    uri: str
    path: str
    ext: str
    status: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    sidecar_sig: str | None
    seq: int
    live_keys: tuple[str, ...]

    @property
    def is_live(self) -> bool:
        """Ok or failed: the item exists in the source as far as the catalog knows."""
        return self.status != STATUS_DELETED


def latest_rows(log: ShardLog, columns: list[str] | None = None) -> pa.Table:
    """Every item's rows from the newest shard that mentions it, with that shard's ``seq``."""
    wanted = list(dict.fromkeys(["key", "doc_key", *(columns or ITEM_COLUMNS)]))
    tables = [
        table.append_column("seq", pa.array([ref.seq] * table.num_rows, type=pa.int64()))
        for ref, table in log.iter_tables(wanted)
    ]
    if not tables:
        empty = {name: pa.array([], type=pa.string()) for name in wanted}
        empty["seq"] = pa.array([], type=pa.int64())
        return pa.table(empty)
    combined = pa.concat_tables(tables, promote_options="default")
    combined = combined.append_column("_item", pc.coalesce(combined.column("doc_key"), combined.column("key")))
    newest = combined.group_by("_item").aggregate([("seq", "max")])
    # Align each row with its item's newest seq (a join can't carry the embedding column).
    position = pc.index_in(combined.column("_item"), value_set=newest.column("_item"))
    newest_seq = pc.take(newest.column("seq_max"), position)
    current = combined.filter(pc.equal(combined.column("seq"), newest_seq))
    return current.drop_columns(["_item"]).sort_by("key")


def load_catalog(log: ShardLog) -> dict[str, CatalogItem]:
    """Current state of every item ever indexed in this collection version, by item key."""
    rows = latest_rows(log, ITEM_COLUMNS)
    columns = {name: rows.column(name).to_pylist() for name in [*ITEM_COLUMNS, "seq"]}
    grouped: dict[str, list[int]] = defaultdict(list)
    for index, (key, doc_key) in enumerate(zip(columns["key"], columns["doc_key"], strict=True)):
        grouped[doc_key or key].append(index)
    catalog: dict[str, CatalogItem] = {}
    for item_key, indexes in grouped.items():
        statuses = {columns["status"][i] for i in indexes}
        status = STATUS_OK if STATUS_OK in statuses else STATUS_FAILED if STATUS_FAILED in statuses else STATUS_DELETED
        first = indexes[0]
        catalog[item_key] = CatalogItem(
            item_key=item_key,
            source_id=columns["source_id"][first],
            modality=columns["modality"][first],
            uri=columns["uri"][first],
            path=columns["path"][first],
            ext=columns["ext"][first],
            status=status,
            sha256=columns["sha256"][first],
            size=columns["bytes"][first],
            mtime_ns=columns["mtime_ns"][first],
            sidecar_sig=columns["sidecar_sig"][first],
            seq=columns["seq"][first],
            live_keys=tuple(columns["key"][i] for i in indexes if columns["status"][i] == STATUS_OK),
        )
    return catalog


def read_item_rows(log: ShardLog, items: Iterable[CatalogItem]) -> dict[str, tuple[list[ItemRecord], np.ndarray]]:
    """The stored ok rows and embeddings of the given items, read from the shards that hold them."""
    by_seq: dict[int, set[str]] = defaultdict(set)
    for item in items:
        by_seq[item.seq].add(item.item_key)
    refs = {ref.seq: ref for ref in log.shards()}
    found: dict[str, tuple[list[ItemRecord], np.ndarray]] = {}
    for seq, keys in by_seq.items():
        table = log.read(refs[seq])
        item_column = pc.coalesce(table.column("doc_key"), table.column("key"))
        mask = pc.and_(pc.is_in(item_column, pa.array(sorted(keys))), pc.equal(table.column("status"), STATUS_OK))
        selected = table.filter(mask)
        records = batch_to_records(selected)
        embeddings = batch_embeddings(selected)
        rows: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(records):
            rows[record.doc_key or record.key].append(index)
        for item_key, indexes in rows.items():
            found[item_key] = ([records[i] for i in indexes], embeddings[indexes])
    return found


def summarize(log: ShardLog) -> CatalogSummary:
    """Counts of indexed and failed items, by modality (tombstones are not counted)."""
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
    """Items whose current row is a failure, with their reasons."""
    rows = latest_rows(log, ["path", "modality", "status", "error"]).to_pylist()
    return [
        FailedItem(row["key"], row["path"], row["modality"], row["error"] or "")
        for row in rows
        if row["status"] == STATUS_FAILED
    ]
