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

from mmindex.pipeline.errors import SchemaMismatchError
from mmindex.pipeline.io.root import StoragePath, arrow_location, publish
from mmindex.schemas.items import SCHEMA_VERSION

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
    """The shards of one collection version (``IndexPaths.shard_log``: ``<root>/shards/<collection>/<version>/``)
    and where its materialized catalog lives (``catalog_path``)."""

    def __init__(self, directory: StoragePath, catalog_path: StoragePath) -> None:
        self.directory = directory
        self.catalog_path = catalog_path

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
        publish(final, sink.getvalue().to_pybytes())
        log.debug("committed shard %s (%d rows)", final.name, batch.num_rows)
        return ShardRef(seq, ref_id, final)

    def read(self, ref: ShardRef, columns: list[str] | None = None) -> pa.Table:
        """One shard as a table; its schema version must be one we understand."""
        where, filesystem = arrow_location(ref.path)
        table = pq.read_table(where, columns=columns, filesystem=filesystem)
        version = (table.schema.metadata or {}).get(b"mmindex.schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise SchemaMismatchError(f"shard {ref.path} has schema version {version}, expected {SCHEMA_VERSION}")
        return table

    def iter_tables(self, columns: list[str] | None = None) -> Iterator[tuple[ShardRef, pa.Table]]:
        """Every committed shard, oldest first."""
        for ref in self.shards():
            yield ref, self.read(ref, columns)
