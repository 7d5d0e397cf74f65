"""Parquet shards: the durable log of embeddings (docs/ARCHITECTURE.md §3).

A shard is published whole: a ``ShardWriter`` writes its row groups one at a time to a temporary
file (on a local root in the shard folder, named ``.tmp-<seq>.…``; for an object store a local
temporary file), so a unit's rows are never all held in memory; ``close`` fsyncs it and renames it
to its final name (an object store: one upload). A shard that exists under its final name is
complete (its appearance is the commit record). Readers use plain pyarrow; ``iter_batches`` reads
a shard a row group at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.pipeline.errors import DamagedShardError, SchemaMismatchError
from mmindex.pipeline.io.atomic import TMP_PREFIX, fsync_dir
from mmindex.pipeline.io.integrity import (
    Finding,
    ShardRecord,
    first_line,
    iter_shard_findings,
    readable_rows,
    record_for,
    write_record,
)
from mmindex.pipeline.io.root import PRIVATE_FILE_MODE, RemotePath, StoragePath, arrow_location, has_rename, open_read
from mmindex.pipeline.io.space import disk_full
from mmindex.schemas.items import LATER_COLUMNS, SCHEMA_VERSION

log = logging.getLogger(__name__)

_SHARD_NAME = re.compile(r"^(?P<seq>\d{8})-(?P<shard_id>[0-9a-f]{16})\.parquet$")
_HASH_CHUNK = 1 << 20


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
        """Write one shard of one batch atomically and return its reference.

        ``seq`` is the sequence number a run plan assigned to this shard (so concurrent writers
        never pick the same one); without it the shard goes after the newest one.
        """
        writer = self.open_writer(batch.schema, self.last_seq() + 1 if seq is None else seq)
        try:
            writer.write(batch)
        except BaseException:
            writer.abort()
            raise
        return writer.close()

    def open_writer(self, schema: pa.Schema, seq: int) -> ShardWriter:
        """A writer of shard ``seq``, row group by row group (published by its ``close``)."""
        return ShardWriter(self, schema, seq)

    def read(self, ref: ShardRef, columns: list[str] | None = None) -> pa.Table:
        """One shard as a table; its schema version must be one we understand. Of ``columns``, those
        an older shard predates (``LATER_COLUMNS``) read as null."""
        where, filesystem = arrow_location(ref.path)
        try:
            with pq.ParquetFile(where, filesystem=filesystem) as shard:
                table = shard.read(columns=self._present(shard.schema_arrow.names, columns))
        except (OSError, pa.ArrowInvalid) as exc:
            raise self._damaged(ref, exc) from exc
        self._check_version(ref, table.schema)
        return self._with_columns(ref, table, columns)

    def iter_batches(self, ref: ShardRef, batch_size: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """One shard as tables of at most ``batch_size`` rows, read a row group at a time (a shard
        of one huge document is never decoded whole)."""
        where, filesystem = arrow_location(ref.path)
        try:
            parquet = pq.ParquetFile(where, filesystem=filesystem)
            self._check_version(ref, parquet.schema_arrow)
            present = self._present(parquet.schema_arrow.names, columns)
            for batch in parquet.iter_batches(batch_size=batch_size, columns=present):
                yield self._with_columns(ref, pa.Table.from_batches([batch]), columns)
        except (OSError, pa.ArrowInvalid) as exc:
            raise self._damaged(ref, exc) from exc

    def _damaged(self, ref: ShardRef, exc: BaseException) -> DamagedShardError:
        return DamagedShardError(
            f"shard {ref.path} cannot be read ({first_line(exc)}): run `mmindex verify -c {self.collection}`, "
            f"then `mmindex repair -c {self.collection}`"
        )

    @staticmethod
    def _check_version(ref: ShardRef, schema: pa.Schema) -> None:
        version = (schema.metadata or {}).get(b"mmindex.schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise SchemaMismatchError(f"shard {ref.path} has schema version {version}, expected {SCHEMA_VERSION}")

    def _with_columns(self, ref: ShardRef, table: pa.Table, columns: list[str] | None) -> pa.Table:
        """``table`` with exactly ``columns``: those an older shard predates (``LATER_COLUMNS``) as nulls."""
        if columns is None or table.column_names == columns:
            return table
        for name in columns:
            if name in table.column_names:
                continue
            if name not in LATER_COLUMNS:
                raise DamagedShardError(f"shard {ref.path} has no column {name!r}: run `mmindex verify -c "
                                        f"{self.collection}`")
            table = table.append_column(name, pa.nulls(table.num_rows, LATER_COLUMNS[name]))
        return table.select(columns)

    @staticmethod
    def _present(names: list[str], columns: list[str] | None) -> list[str] | None:
        """Of ``columns``, those to read from a shard with columns ``names`` (later ones it lacks are filled in)."""
        return None if columns is None else [name for name in columns if name in names or name not in LATER_COLUMNS]

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


class ShardWriter:
    """One shard written row group by row group to a temporary file, published whole by ``close``.

    On a local root (or a ``file://`` one) the temporary file is in the shard folder, created by
    ``mkstemp`` (``.tmp-<seq>.…``: listings skip it, and the next run under the ingest lock removes
    a crashed writer's, ``apply.discard_partial_shards``); ``close`` fsyncs it, hashes it, renames
    it to ``<seq>-<shard id>.parquet`` (the id is the hash of its keys, so it is known only at the
    end) and records it. For an object store the file is a local temporary one, uploaded once.
    Nothing is visible under a shard's name before ``close``; ``abort`` removes the file. A full
    file system is a ``DiskFullError``.
    """

    def __init__(self, log: ShardLog, schema: pa.Schema, seq: int) -> None:
        self._log, self.seq, self.rows = log, seq, 0
        self._keys, self._hashed = hashlib.sha256(), False
        directory = log.directory
        self._local_dir: Path | None = None
        if not isinstance(directory, RemotePath):
            self._local_dir = directory
        elif has_rename(directory.fs):
            self._local_dir = Path(directory.path)
        where = self._local_dir
        try:
            if where is not None:
                where.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{seq:08d}.", suffix=".parquet", dir=where)
        except OSError as exc:
            raise self._full(exc) from exc
        os.close(fd)
        self._tmp = Path(name)
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(str(self._tmp), schema, compression="zstd")
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _full(self, exc: OSError) -> BaseException:
        full = disk_full(exc, str(self._log.directory))
        return exc if full is None else full

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch`` as a row group."""
        if self._writer is None:
            raise ValueError(f"shard {self.seq} is already closed")
        for key in batch.column("key").to_pylist():  # ``shard_id_for`` of all its keys, streamed
            self._keys.update((b"\n" if self.rows or self._hashed else b"") + key.encode("utf-8"))
            self._hashed = True
        try:
            self._writer.write_batch(batch)
        except OSError as exc:
            raise self._full(exc) from exc
        self.rows += batch.num_rows

    @property
    def bytes_written(self) -> int:
        """The size of the temporary file so far (row groups already flushed)."""
        return self._tmp.stat().st_size if self._tmp.exists() else 0

    def close(self) -> ShardRef:
        """Finish the file and publish it under its final name; returns its reference."""
        if self._writer is None:
            raise ValueError(f"shard {self.seq} is already closed")
        log_ = self._log
        try:
            self._writer.close()
            self._writer = None
            size, sha256 = self._fsync_and_hash()
            final = log_.directory / f"{self.seq:08d}-{self._shard_id()}.parquet"
            os.chmod(self._tmp, PRIVATE_FILE_MODE)
            if self._local_dir is not None:
                os.replace(self._tmp, self._local_dir / final.name)
                fsync_dir(self._local_dir)
            else:
                assert isinstance(final, RemotePath)  # noqa: S101 - the directory is remote here
                final.fs.put_file(str(self._tmp), final.path)  # one upload: the object appears whole or not at all
                final._fresh()
        except OSError as exc:
            self.abort()
            raise self._full(exc) from exc
        except BaseException:
            self.abort()
            raise
        finally:
            if self._local_dir is None:
                self._tmp.unlink(missing_ok=True)
        write_record(log_.records_dir, ShardRecord(name=final.name, seq=self.seq, rows=self.rows, bytes=size,
                                                   sha256=sha256))
        log.debug("committed shard %s (%d rows)", final.name, self.rows)
        return ShardRef(self.seq, self._shard_id(), final)

    def abort(self) -> None:
        """Drop the shard: close the writer, remove the temporary file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:
                log.debug("closing the aborted shard %d: %s", self.seq, exc)
        self._tmp.unlink(missing_ok=True)

    def _shard_id(self) -> str:
        return self._keys.hexdigest()[:16]

    def _fsync_and_hash(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        with self._tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()
