"""``mmindex verify``: check a collection's durable store against what was recorded when it was
written (docs/ARCHITECTURE.md §3, "Integrity").

Every shard of every version is hashed and compared with its integrity record (missing,
truncated, resized, bit-flipped, unreadable, unrecorded); the materialized catalog must be
readable; and, when the current version's shards are intact, the Qdrant collection must hold
exactly one point per current ok row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.errors import MmindexError
from mmindex.pipeline.io.catalog import latest_rows
from mmindex.pipeline.io.integrity import Finding, first_line
from mmindex.pipeline.io.root import arrow_location
from mmindex.pipeline.io.shards import ShardLog
from mmindex.schemas.items import STATUS_OK
from mmindex.schemas.state import CollectionState, CollectionVersion


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_collection`` checked and found."""

    collection: str
    shards_checked: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {"collection": self.collection, "clean": self.clean, "shards_checked": self.shards_checked,
                "findings": [asdict(finding) for finding in self.findings]}


def versions_of(entry: CollectionState) -> list[CollectionVersion]:
    """Every version of a collection: current, building, previous."""
    return [entry.current, *([entry.building] if entry.building is not None else []), *entry.previous]


def check_catalog(log: ShardLog) -> Finding | None:
    """The materialized catalog, if there is one, must be a readable Parquet file (it is rebuilt from
    the shards when it is lost, so a missing one is no finding)."""
    if not log.catalog_path.exists():
        return None
    where, filesystem = arrow_location(log.catalog_path)
    try:
        pq.read_table(where, filesystem=filesystem)
    except (OSError, pa.ArrowInvalid) as exc:
        return Finding("catalog", str(log.catalog_path), f"the catalog cannot be read ({first_line(exc)})")
    return None


def expected_points(log: ShardLog) -> int:
    """How many points the current rows of the shard log make (one per current ok row)."""
    rows = latest_rows(log, ["status"])
    return int(pc.sum(pc.equal(rows.column("status"), STATUS_OK)).as_py() or 0)


def check_points(opened: Collection, log: ShardLog) -> Finding | None:
    """The current version's Qdrant collection holds exactly the points its shards make."""
    name = opened.version.physical_name
    try:
        store = opened.store()
        points = store.count(name) if store.collection_exists(name) else None
    except MmindexError as exc:
        return Finding("points", name, f"the vector store cannot be read ({first_line(exc)})")
    wanted = expected_points(log)
    if points is None:
        return Finding("points", name, f"the vector store has no collection {name} ({wanted} points expected)")
    if points != wanted:
        return Finding("points", name, f"the vector store holds {points} points, the shards make {wanted}")
    return None


def verify_collection(opened: Collection) -> VerifyReport:
    """Every finding on the collection's shards, records, catalogs and current vector store."""
    findings: list[Finding] = []
    checked = 0
    for version in versions_of(opened.entry):
        log = opened.paths.shard_log(opened.name, version.physical_name)
        shard_findings = log.check(full=True)
        checked += len(log.shards())
        findings += shard_findings
        catalog = check_catalog(log)
        if catalog is not None:
            findings.append(catalog)
        if version.physical_name == opened.version.physical_name and not any(f.damaged for f in shard_findings):
            points = check_points(opened, log)
            if points is not None:
                findings.append(points)
    return VerifyReport(opened.name, checked, findings)
