"""The catalog: the current rows of every item, a view over the shard log (docs/ARCHITECTURE.md §3).

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
import pyarrow.parquet as pq

from mmindex.pipeline.io.root import arrow_location, publish
from mmindex.pipeline.io.shards import ShardLog, ShardRef
from mmindex.schemas.items import STATUS_DELETED, STATUS_FAILED, STATUS_OK, ItemRecord, batch_embeddings, batch_to_records

_EMPTY_TYPES = {"bytes": pa.int64(), "mtime_ns": pa.int64(), "width": pa.int32(), "height": pa.int32(),
                "chunk_index": pa.int32(), "char_start": pa.int32(), "char_end": pa.int32()}
ITEM_COLUMNS = ["key", "doc_key", "source_id", "modality", "uri", "path", "ext", "status", "error",
                "sha256", "bytes", "mtime_ns", "sidecar_sig", "etag", "last_modified"]


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
    # The HTTP validators of a fetched item's stored body (``index --recheck`` sends them).
    etag: str | None = None
    last_modified: str | None = None

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
        empty = {name: pa.array([], type=_EMPTY_TYPES.get(name, pa.string())) for name in wanted}
        empty["seq"] = pa.array([], type=pa.int64())
        return pa.table(empty)
    combined = pa.concat_tables(tables, promote_options="default")
    combined = combined.append_column("_item", pc.coalesce(combined.column("doc_key"), combined.column("key")))
    newest = combined.group_by("_item").aggregate([("seq", "max")])
    # Align each row with its item's newest seq (a join can't carry the embedding column).
    position = pc.index_in(combined.column("_item"), value_set=newest.column("_item"))
    newest_seq = pc.take(newest.column("seq_max"), position)
    current = combined.filter(pc.equal(combined.column("seq"), newest_seq))
    return current.drop_columns(["_item"])


_ITEM_FIELDS = ["source_id", "modality", "uri", "path", "ext", "sha256", "bytes", "mtime_ns", "sidecar_sig", "etag",
                "last_modified", "seq"]
CATALOG_THROUGH = b"mmindex.catalog_through"  # schema metadata: the shard seq a catalog file is valid through


def items_from_rows(rows: pa.Table) -> pa.Table:
    """One row per item from the current rows of the items (see ``latest_rows``)."""
    item = pc.coalesce(rows.column("doc_key"), rows.column("key"))
    flags = rows.append_column("_item", item)
    flags = flags.append_column("_ok", pc.equal(rows.column("status"), STATUS_OK))
    flags = flags.append_column("_failed", pc.equal(rows.column("status"), STATUS_FAILED))
    grouped = flags.group_by("_item", use_threads=False).aggregate(
        [(name, "first") for name in _ITEM_FIELDS] + [("_ok", "max"), ("_failed", "max")]
    )
    ok, failed = grouped.column("_ok_max"), grouped.column("_failed_max")
    status = pc.if_else(ok, STATUS_OK, pc.if_else(failed, STATUS_FAILED, STATUS_DELETED))
    columns = {"item_key": grouped.column("_item"), "status": status}
    columns.update({name: grouped.column(f"{name}_first") for name in _ITEM_FIELDS})
    return pa.table(columns)


class Catalog:
    """Current state of every item of a collection version, columnar (one row per item).

    Whole-catalog questions (which crawled items are unchanged, which items vanished) are
    answered with vectorized Arrow compute, so a no-op re-run of a large corpus builds no Python
    object per item; ``item_at`` builds a ``CatalogItem`` only for the items a plan looks at.
    """

    def __init__(self, items: pa.Table, log: ShardLog | None = None) -> None:
        self.items = items
        self._log = log
        self._shard_keys: dict[int, pa.Table] = {}
        self._refs: dict[int, ShardRef] | None = None  # listed once: a listing is a request on object storage

    @classmethod
    def empty(cls) -> Catalog:
        """The catalog of a version nothing was written to yet."""
        columns = {name: pa.array([], type=_EMPTY_TYPES.get(name, pa.string())) for name in ITEM_COLUMNS}
        columns["seq"] = pa.array([], type=pa.int64())
        return cls(items_from_rows(pa.table(columns)))

    def __len__(self) -> int:
        return self.items.num_rows

    def positions(self, keys: pa.Array) -> pa.Array:
        """Each key's row in ``items`` (null where the catalog never saw the key)."""
        return pc.index_in(keys, value_set=self.items.column("item_key"))

    def _live_keys(self, item_key: str, seq: int) -> tuple[str, ...]:
        """Keys of the item's ok rows, read from the one shard that holds its current rows."""
        if self._log is None:
            return ()
        if seq not in self._shard_keys:
            if self._refs is None or seq not in self._refs:
                self._refs = {ref.seq: ref for ref in self._log.shards()}
            ref = self._refs[seq]
            table = self._log.read(ref, ["key", "doc_key", "status"])
            self._shard_keys[seq] = table.append_column("_item", pc.coalesce(table.column("doc_key"), table.column("key")))
        table = self._shard_keys[seq]
        rows = table.filter(pc.and_(pc.equal(table.column("_item"), item_key), pc.equal(table.column("status"), STATUS_OK)))
        return tuple(rows.column("key").to_pylist())

    def item_at(self, position: int) -> CatalogItem:
        """The item at one row of ``items``."""
        row = {name: self.items.column(name)[position].as_py() for name in self.items.column_names}
        return CatalogItem(
            item_key=row["item_key"], source_id=row["source_id"], modality=row["modality"], uri=row["uri"],
            path=row["path"], ext=row["ext"], status=row["status"], sha256=row["sha256"], size=row["bytes"],
            mtime_ns=row["mtime_ns"], sidecar_sig=row["sidecar_sig"], seq=row["seq"],
            live_keys=self._live_keys(row["item_key"], row["seq"]) if row["status"] == STATUS_OK else (),
            etag=row["etag"], last_modified=row["last_modified"],
        )

    def lookup_positions(self, positions: pa.Array) -> pa.Table:
        """The catalog columns at ``positions`` (from ``positions``; null rows where one is null)."""
        return pa.table({name: pc.take(self.items.column(name), positions) for name in self.items.column_names})

    def items_where(self, mask: pa.Array) -> list[CatalogItem]:
        """The items for which ``mask`` (aligned with ``self.items``) is true."""
        positions = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
        return [self.item_at(position) for position in positions]


def current_items(log: ShardLog, base: pa.Table | None = None, base_through: int = -1) -> pa.Table:
    """One row per item (``items_from_rows``) from the newest shard that mentions it.

    Shards are read one at a time, newest first, and an item's rows are taken from the first
    shard that has it: memory holds one shard's item columns and the result, never every row of
    the collection at once (materializing 100,000 items that way peaked ~300 MiB higher). With a
    ``base`` catalog valid through shard ``base_through``, only the shards after it are read and
    the base's other items are kept: a run that wrote a few shards reads only those.
    """
    wanted = list(dict.fromkeys(["key", "doc_key", *ITEM_COLUMNS]))
    seen: set[str] = set()
    parts: list[pa.Table] = []
    for ref in reversed([ref for ref in log.shards() if ref.seq > base_through]):
        rows = log.read(ref, wanted)
        items = items_from_rows(rows.append_column("seq", pa.repeat(pa.scalar(ref.seq, pa.int64()), rows.num_rows)))
        keys = items.column("item_key").to_pylist()
        parts.append(items.filter(pa.array([key not in seen for key in keys], type=pa.bool_())))
        seen.update(keys)
    if base is not None:
        keys = base.column("item_key").to_pylist()
        parts.append(base.filter(pa.array([key not in seen for key in keys], type=pa.bool_())))
    if not parts:
        return Catalog.empty().items
    return pa.concat_tables(parts, promote_options="default")


def _materialized(log: ShardLog) -> tuple[pa.Table, int] | None:
    """The catalog file and the shard seq it is valid through, or None (missing or unreadable)."""
    try:
        where, filesystem = arrow_location(log.catalog_path)
        items = pq.read_table(where, filesystem=filesystem)
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    through = int((items.schema.metadata or {}).get(CATALOG_THROUGH, b"-1"))
    if not set(_ITEM_FIELDS) <= set(items.column_names):  # written before a column existed: build it again
        return None
    return items.replace_schema_metadata(None), through


def _current_catalog(log: ShardLog, last_seq: int) -> tuple[pa.Table, bool]:
    """The catalog valid through shard ``last_seq``, and whether it is the file already written:
    the materialized one when current, else brought forward from it, else built from the shards."""
    materialized = _materialized(log)
    if materialized is not None and materialized[1] == last_seq:
        return materialized[0], True
    if materialized is not None and materialized[1] < last_seq:
        return current_items(log, *materialized), False
    return current_items(log), False


def write_catalog(log: ShardLog) -> None:
    """Materialize the catalog beside the shards (atomically), valid through the last shard; a
    catalog valid through an earlier shard is brought forward by reading only the shards after it."""
    shards = log.shards()
    if not shards:
        return
    items, written = _current_catalog(log, shards[-1].seq)
    if written:
        return
    items = items.replace_schema_metadata({CATALOG_THROUGH: str(shards[-1].seq).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(items, sink)
    del items
    publish(log.catalog_path, sink.getvalue().to_pybytes(), durable=False)
    del sink
    # Reading shards' item columns took memory that Arrow's allocator (mimalloc) keeps after the
    # tables are gone; give it back, or a large ingest's peak RSS carries it along.
    pa.default_memory_pool().release_unused()


def load_catalog(log: ShardLog) -> Catalog:
    """The catalog of a collection version: the materialized one when it is current, else
    brought forward from it (or built) from the shards (after a crash, or by an older writer)."""
    shards = log.shards()
    if not shards:
        return Catalog.empty()
    return Catalog(_current_catalog(log, shards[-1].seq)[0], log)


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
    rows = latest_rows(log, ["path", "modality", "status", "error"]).sort_by("key").to_pylist()
    return [
        FailedItem(row["key"], row["path"], row["modality"], row["error"] or "")
        for row in rows
        if row["status"] == STATUS_FAILED
    ]
