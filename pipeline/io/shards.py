"""Parquet shards: the durable log of embeddings (docs/ARCHITECTURE.md §3).

A shard is published whole (``root.publish``: on a local root written under a temporary name,
fsynced, then renamed; on an object store one PUT): a shard that exists under its final name is
complete (its appearance is the commit record). Readers use plain pyarrow.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.pipeline.errors import DamagedShardError, SchemaMismatchError
from mmindex.pipeline.io.integrity import Finding, first_line, iter_shard_findings, readable_rows, record_for, write_record
from mmindex.pipeline.io.root import StoragePath, arrow_location, open_read, publish
from mmindex.schemas.items import LATER_COLUMNS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_SHARD_NAME = re.compile(r"^(?P<seq>\d{8})-(?P<shard_id>[0-9a-f]{16})\.parquet$")


@dataclass(frozen=True, slots=True)
class ShardRef:
    """A committed shard file: its sequence number (order of writing) and id."""

    seq: int
    shard_id: str
    path: StoragePath


def shard_id_for(keys: list[str]) -> str:
    """Content-derived id of a shard: the hash of its item keys."""
    digest = hashlib.sha256("\n".join(keys).encode("utf-8"))
    return digest.hexdigest()[:16]


class ShardLog:
    """The shards of one collection version (``IndexPaths.shard_log``: ``<root>/shards/<collection>/<version>/``),
    where its materialized catalog lives (``catalog_path``) and its shards' integrity records
    (``records_dir``, see ``io/integrity.py``)."""

    def __init__(self, directory: StoragePath, catalog_path: StoragePath, records_dir: StoragePath) -> None:
        self.directory = directory
        self.catalog_path = catalog_path
        self.records_dir = records_dir

    @property
    def collection(self) -> str:
        """The collection name (the shard folder is ``shards/<collection>/<version>``)."""
        return self.directory.parent.name

    def shards(self) -> list[ShardRef]:
        """Committed shards in the order they were written (temporary files are ignored)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _SHARD_NAME.match(path.name)
            if match:
                found.append(ShardRef(int(match["seq"]), match["shard_id"], path))
        return sorted(found, key=lambda ref: ref.seq)

    def last_seq(self) -> int:
        """The sequence number of the newest committed shard (0 when there is none)."""
        existing = self.shards()
        return existing[-1].seq if existing else 0

    def find(self, seq: int) -> ShardRef | None:
        """The committed shard with this sequence number, if it exists."""
        return next((ref for ref in self.shards() if ref.seq == seq), None)

    def write(self, batch: pa.RecordBatch, seq: int | None = None) -> ShardRef:
        """Write one shard atomically and return its reference.

        ``seq`` is the sequence number a run plan assigned to this shard (so concurrent writers
        never pick the same one); without it the shard goes after the newest one.
        """
        keys = batch.column("key").to_pylist()
        ref_id = shard_id_for(keys)
        if seq is None:
            seq = self.last_seq() + 1
        final = self.directory / f"{seq:08d}-{ref_id}.parquet"
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, batch.schema, compression="zstd") as writer:
            writer.write_batch(batch)
        data = sink.getvalue().to_pybytes()
        publish(final, data)
        write_record(self.records_dir, record_for(final.name, seq, data, batch.num_rows))
        log.debug("committed shard %s (%d rows)", final.name, batch.num_rows)
        return ShardRef(seq, ref_id, final)

    def read(self, ref: ShardRef, columns: list[str] | None = None) -> pa.Table:
        """One shard as a table; its schema version must be one we understand. Of ``columns``, those
        an older shard predates (``LATER_COLUMNS``) read as null."""
        where, filesystem = arrow_location(ref.path)
        try:
            with pq.ParquetFile(where, filesystem=filesystem) as shard:
                names = shard.schema_arrow.names
                present = None if columns is None else [name for name in columns if name in names or name not in LATER_COLUMNS]
                table = shard.read(columns=present)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DamagedShardError(
                f"shard {ref.path} cannot be read ({first_line(exc)}): run `mmindex verify -c {self.collection}`, "
                f"then `mmindex repair -c {self.collection}`"
            ) from exc
        version = (table.schema.metadata or {}).get(b"mmindex.schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise SchemaMismatchError(f"shard {ref.path} has schema version {version}, expected {SCHEMA_VERSION}")
        if columns is not None and table.column_names != columns:
            for name in columns:
                if name in table.column_names:
                    continue
                if name not in LATER_COLUMNS:
                    raise DamagedShardError(f"shard {ref.path} has no column {name!r}: run `mmindex verify -c "
                                            f"{self.collection}`")
                table = table.append_column(name, pa.nulls(table.num_rows, LATER_COLUMNS[name]))
            table = table.select(columns)
        return table

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[tuple[ShardRef, pa.Table]]:
        """Every committed shard, oldest first."""
        for ref in self.shards():
            yield ref, self.read(ref, columns)

    def check(self, full: bool) -> list[Finding]:
        """What is wrong with the shards against their integrity records (``io/integrity.py``):
        every byte hashed when ``full``, else sizes and footers only (cheap, for every run)."""
        present = [(ref.seq, ref.path) for ref in self.shards()]
        return list(iter_shard_findings(self.directory, present, self.records_dir, full))

    def require_intact(self, full: bool, outcome: str) -> None:
        """``DamagedShardError`` naming the first lost or damaged shard (``check``), what the caller
        did not do (``outcome``) and that ``mmindex repair`` is the fix."""
        damaged = [finding for finding in self.check(full) if finding.damaged]
        if damaged:
            first = damaged[0]
            more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
            raise DamagedShardError(
                f"{outcome}: shard {first.path} is {first.kind} ({first.detail}){more}; run "
                f"`mmindex repair -c {self.collection}` (it re-queues the lost items for the next index run)"
            )

    def record_existing(self, ref: ShardRef) -> None:
        """Record a shard that has no record yet, after reading it whole (``repair``)."""
        with open_read(ref.path) as handle:
            data = handle.read()
        rows = readable_rows(ref.path)
        write_record(self.records_dir, record_for(ref.path.name, ref.seq, data, rows))
