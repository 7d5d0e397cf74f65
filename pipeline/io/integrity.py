"""Shard integrity: what each shard was when it was published, and checks against it
(docs/ARCHITECTURE.md §3, "Integrity").

``ShardWriter.close`` records every shard's size, row count and sha256 in its own small JSON file
beside the catalog (``<root>/catalog/<collection>/<physical>.shards/<shard name>.json``; one file
per shard, so shards written in parallel never contend for one record). Two checks read them:

- ``check_shards(log, full=True)`` (``mmindex verify``, ``repair``, ``rebuild``): every byte
  hashed, so a bit flip is found;
- ``check_shards(log, full=False)`` (every ``mmindex index`` run): size and the Parquet footer's
  row count only, so a no-op re-run stays fast while a truncated or lost shard is still noticed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from mmindex.pipeline.io.root import StoragePath, arrow_location, file_size, open_read, publish

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20

FindingKind = Literal["missing", "truncated", "size", "checksum", "unreadable", "rows", "unrecorded", "catalog",
                      "points"]
# Kinds that mean a shard's rows are lost: ``repair`` quarantines such shards.
DAMAGED_KINDS: frozenset[str] = frozenset({"missing", "truncated", "size", "checksum", "unreadable", "rows"})


class ShardRecord(BaseModel):
    """A shard as it was published."""

    name: str
    seq: int
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with a collection's durable store: its kind, the file, what was seen."""

    kind: FindingKind
    path: str
    detail: str
    seq: int | None = None

    @property
    def damaged(self) -> bool:
        """Whether the shard's rows are lost (as opposed to a missing record, a stale index)."""
        return self.kind in DAMAGED_KINDS


def record_for(name: str, seq: int, data: bytes, rows: int) -> ShardRecord:
    """The record of a shard about to be published with these bytes."""
    return ShardRecord(name=name, seq=seq, rows=rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def write_record(records_dir: StoragePath, record: ShardRecord) -> None:
    """Publish one shard's record (atomically)."""
    publish(records_dir / f"{record.name}.json", record.model_dump_json().encode("utf-8"), durable=False)


def remove_record(records_dir: StoragePath, name: str) -> None:
    """Forget a shard's record (its shard was quarantined)."""
    path = records_dir / f"{name}.json"
    if path.exists():
        path.unlink()


def read_records(records_dir: StoragePath) -> tuple[dict[str, ShardRecord], list[Finding]]:
    """Every shard record by shard name, and a finding for each record file that cannot be read."""
    records: dict[str, ShardRecord] = {}
    findings: list[Finding] = []
    if not records_dir.is_dir():
        return records, findings
    for path in records_dir.iterdir():
        if not path.name.endswith(".parquet.json"):
            continue
        try:
            record = ShardRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            findings.append(Finding("unrecorded", str(path), f"its integrity record cannot be read ({first_line(exc)})"))
            continue
        records[record.name] = record
    return records, findings


def file_sha256(path: StoragePath) -> str:
    """The sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open_read(path) as handle:
        for piece in iter(lambda: handle.read(_READ_CHUNK), b""):
            digest.update(piece)
    return digest.hexdigest()


def footer_rows(path: StoragePath) -> int:
    """The row count in a Parquet file's footer (reads the footer only)."""
    where, filesystem = arrow_location(path)
    return int(pq.read_metadata(where, filesystem=filesystem).num_rows)


def readable_rows(path: StoragePath) -> int:
    """Read a whole Parquet file (every page decoded) and return its row count."""
    where, filesystem = arrow_location(path)
    return int(pq.read_table(where, filesystem=filesystem).num_rows)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_shard(path: StoragePath, record: ShardRecord, full: bool) -> Finding | None:
    """Compare one shard file with its record: size, then the sha256 (``full``) or the footer's rows."""
    if not path.exists():
        return Finding("missing", str(path), "the shard file is gone", record.seq)
    size = file_size(path)
    if size != record.bytes:
        kind: FindingKind = "truncated" if size < record.bytes else "size"
        return Finding(kind, str(path), f"{size} bytes, {record.bytes} when written", record.seq)
    if full:
        digest = file_sha256(path)
        if digest != record.sha256:
            return Finding("checksum", str(path), f"sha256 {digest[:12]}…, {record.sha256[:12]}… when written", record.seq)
        return None
    try:
        rows = footer_rows(path)
    except (OSError, pa.ArrowInvalid) as exc:
        return Finding("unreadable", str(path), first_line(exc), record.seq)
    if rows != record.rows:
        return Finding("rows", str(path), f"{rows} rows in its footer, {record.rows} when written", record.seq)
    return None


def check_unrecorded(path: StoragePath, seq: int) -> Finding:
    """A shard with no record (written by an older mmindex, or a crash came between shard and
    record): readable in full, or not."""
    try:
        rows = readable_rows(path)
    except (OSError, pa.ArrowInvalid) as exc:
        return Finding("unreadable", str(path), f"{first_line(exc)} (no integrity record)", seq)
    return Finding("unrecorded", str(path), f"readable ({rows} rows) but it has no integrity record", seq)


def iter_shard_findings(
    directory: StoragePath, shards: list[tuple[int, StoragePath]], records_dir: StoragePath, full: bool
) -> Iterator[Finding]:
    """Findings over a version's shard folder (``(seq, path)`` of the shard files in it) and its records."""
    records, unreadable_records = read_records(records_dir)
    yield from unreadable_records
    present = {path.name: (seq, path) for seq, path in shards}
    for name, record in sorted(records.items(), key=lambda item: item[1].seq):
        if name in present:
            finding = check_shard(present[name][1], record, full)
        else:
            finding = Finding("missing", str(directory / name), "the shard file is gone", record.seq)
        if finding is not None:
            yield finding
    for name, (seq, path) in sorted(present.items(), key=lambda item: item[1][0]):
        if name in records:
            continue
        yield check_unrecorded(path, seq) if full else Finding("unrecorded", str(path), "it has no integrity record", seq)
