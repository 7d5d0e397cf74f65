"""``mmindex repair``: set a collection's durable store right after shards were lost or damaged
(docs/ARCHITECTURE.md §3, "Integrity").

Under the ingest lock, for every version: each damaged shard (what ``verify`` calls missing,
truncated, resized, bit-flipped, unreadable) is moved into ``<root>/quarantine/`` (never deleted)
and its record dropped; a readable shard without a record is recorded; the catalog is rebuilt from
the intact shards, so the items whose current rows were lost are no longer in it and the next
``mmindex index`` of their source embeds them again (an item with older intact rows falls back to
those, which the next index run compares with its source like any other). The current version's
vector store is rebuilt from the intact shards (``rebuild_version``: built aside, swapped in when
complete). The lost items are reported, with those whose source file is gone too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.ingest.apply import rebuild_version
from mmindex.pipeline.ingest.run import holding_ingest_lock
from mmindex.pipeline.io.catalog import CATALOG_THROUGH, write_catalog
from mmindex.pipeline.io.integrity import Finding, remove_record
from mmindex.pipeline.io.root import RemotePath, StoragePath, arrow_location
from mmindex.pipeline.io.shards import ShardLog
from mmindex.pipeline.manage.verify import check_points, versions_of
from mmindex.schemas.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LostItem:
    """An item whose current rows were in a damaged shard; ``source_gone`` when its file is gone too."""

    key: str
    uri: str
    source_id: str
    source_gone: bool


@dataclass(slots=True)
class RepairReport:
    """What ``repair_collection`` did."""

    collection: str
    quarantined: list[str] = field(default_factory=list)  # where each damaged shard now lies
    missing: list[str] = field(default_factory=list)  # shards that were gone already
    recorded: list[str] = field(default_factory=list)  # intact shards that had no record
    lost_items: list[LostItem] = field(default_factory=list)
    unknown_shards: int = 0  # damaged shards whose items the catalog did not name (lost or stale)
    points: int | None = None  # points in the rebuilt current vector store
    sources: list[str] = field(default_factory=list)  # what to index again

    @property
    def changed(self) -> bool:
        return bool(self.quarantined or self.missing or self.recorded or self.points is not None)


def _catalog_items(log_: ShardLog) -> tuple[pa.Table, int] | None:
    """The materialized catalog as last written (it names each item's shard) and the shard seq it is
    valid through, if it is readable."""
    if not log_.catalog_path.exists():
        return None
    where, filesystem = arrow_location(log_.catalog_path)
    try:
        items = pq.read_table(where, filesystem=filesystem, columns=["item_key", "uri", "source_id", "seq"])
    except (OSError, pa.ArrowInvalid):
        return None
    return items, int((items.schema.metadata or {}).get(CATALOG_THROUGH, b"-1"))


def _source_gone(uri: str) -> bool:
    """Whether a local item's file no longer exists (remote items are checked by the next index run)."""
    return "://" not in uri and not Path(uri).exists()


def _quarantine(path: StoragePath, into: StoragePath) -> str:
    """Move a damaged shard aside (a second one of the same name gets a time suffix)."""
    target = into / path.name
    if target.exists():
        target = into / f"{path.name}.{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    if isinstance(path, RemotePath) and isinstance(target, RemotePath):
        path.fs.mv(path.path, target.path)
    else:
        Path(str(into)).mkdir(parents=True, exist_ok=True)
        os.replace(str(path), str(target))
    return str(target)


def _repair_log(opened: Collection, log_: ShardLog, physical_name: str, report: RepairReport) -> bool:
    """Quarantine the damaged shards of one version and rebuild its catalog; whether any were damaged."""
    findings = log_.check(full=True)
    damaged: list[Finding] = [finding for finding in findings if finding.damaged]
    by_name = {ref.path.name: ref for ref in log_.shards()}
    for finding in findings:
        name = Path(finding.path).name
        if finding.kind == "unrecorded" and name in by_name:
            log_.record_existing(by_name[name])
            report.recorded.append(finding.path)
    if not damaged:
        return False
    catalog = _catalog_items(log_)
    lost_seqs = {finding.seq for finding in damaged if finding.seq is not None}
    items, through = catalog if catalog is not None else (None, -1)
    report.unknown_shards += sum(1 for seq in lost_seqs if seq > through)
    for row in items.to_pylist() if items is not None else []:
        if row["seq"] in lost_seqs:
            uri = row["uri"] or ""
            report.lost_items.append(LostItem(row["item_key"], uri, row["source_id"] or "", _source_gone(uri)))
    quarantine = opened.paths.quarantine_dir(opened.name, physical_name)
    for finding in damaged:
        name = Path(finding.path).name
        if name in by_name:
            report.quarantined.append(_quarantine(by_name[name].path, quarantine))
        else:
            report.missing.append(finding.path)
        remove_record(log_.records_dir, name)
        log.warning("%s: %s (%s)", finding.kind, finding.path, finding.detail)
    log_.catalog_path.unlink(missing_ok=True)
    write_catalog(log_)
    return True


def repair_collection(settings: Settings, collection: str) -> RepairReport:
    """Quarantine damaged shards, re-queue their items for the next index run, rebuild the store."""
    opened = Collection.open(settings, collection)
    report = RepairReport(collection)
    with holding_ingest_lock(settings, collection), opened:
        stale = False
        for version in versions_of(opened.entry):
            log_ = opened.paths.shard_log(collection, version.physical_name)
            damaged = _repair_log(opened, log_, version.physical_name, report)
            if version.physical_name == opened.version.physical_name:
                stale = damaged or check_points(opened, log_) is not None
        if stale:
            report.points = rebuild_version(settings, opened.store(), collection, opened.version, checked=True)
    if report.quarantined or report.missing:
        report.sources = [source.path for source in opened.entry.sources.values()]
    return report
