"""Every path under an index root, named once (the layout of docs/ARCHITECTURE.md §3).

```
<root>/state.json                                  IndexPaths.state_file (+ state.json.lock)
<root>/shards/<collection>/<physical>/             IndexPaths.shards_dir
<root>/catalog/<collection>/<physical>.parquet     IndexPaths.catalog_file
<root>/catalog/<collection>/<physical>.shards/     IndexPaths.shard_records_dir (integrity records)
<root>/quarantine/<collection>/<physical>/         IndexPaths.quarantine_dir (damaged shards, by repair)
<root>/runs/<collection>/<run_id>/                 IndexPaths.runs_dir / run_dir
<root>/locks/<collection>.ingest.lock              IndexPaths.ingest_lock_file
<root>/qdrant/                                     IndexPaths.qdrant_dir (the embedded store)
<root>/models/<collection>/                        IndexPaths.models_dir (fine-tuned models, local roots only)
```

Nothing else joins names onto a root; modules ask this object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.io.shards import ShardLog
from mmindex.schemas.root import RemotePath, StoragePath

STATE_FILE = "state.json"


@dataclass(frozen=True, slots=True)
class IndexPaths:
    """The paths of one index root (a local ``Path`` or a ``RemotePath``)."""

    root: StoragePath

    @property
    def state_file(self) -> StoragePath:
        """``state.json``: collections, versions, sources, labels, last run."""
        return self.root / STATE_FILE

    @property
    def state_lock_file(self) -> Path:
        """The inter-process lock of ``state.json`` edits (local roots only)."""
        return self.local_root / f"{STATE_FILE}.lock"

    def collection_shards(self, collection: str) -> StoragePath:
        """The shard logs of every version of a collection."""
        return self.root / "shards" / collection

    def collection_catalogs(self, collection: str) -> StoragePath:
        """The catalogs of every version of a collection."""
        return self.root / "catalog" / collection

    def shards_dir(self, collection: str, physical_name: str) -> StoragePath:
        """The Parquet shard log of one collection version."""
        return self.collection_shards(collection) / physical_name

    def catalog_file(self, collection: str, physical_name: str) -> StoragePath:
        """The materialized catalog of a version (outside its shard folder, so that folder stays a
        plain Parquet dataset)."""
        return self.collection_catalogs(collection) / f"{physical_name}.parquet"

    def shard_records_dir(self, collection: str, physical_name: str) -> StoragePath:
        """The integrity records of a version's shards (one JSON file per shard: size, rows, sha256)."""
        return self.collection_catalogs(collection) / f"{physical_name}.shards"

    def quarantine_dir(self, collection: str, physical_name: str) -> StoragePath:
        """Where ``mmindex repair`` moves a version's damaged shards (kept, never deleted)."""
        return self.root / "quarantine" / collection / physical_name

    def shard_log(self, collection: str, physical_name: str) -> ShardLog:
        """The shard log of a version, with its catalog file and its shards' integrity records."""
        return ShardLog(self.shards_dir(collection, physical_name), self.catalog_file(collection, physical_name),
                        self.shard_records_dir(collection, physical_name))

    def runs_dir(self, collection: str) -> StoragePath:
        """The run plans of a collection, one folder per run (run ids sort by time)."""
        return self.root / "runs" / collection

    def run_dir(self, collection: str, run_id: str) -> StoragePath:
        """One run plan: ``run.json``, ``units/<seq>.json``, ``done/<seq>.json``."""
        return self.runs_dir(collection) / run_id

    def ingest_lock_file(self, collection: str) -> Path:
        """The lock that keeps ingests into one collection apart.

        A local root holds it in ``<root>/locks``. An object store cannot hold a file lock: for
        such a root it is in this machine's cache folder (named after the root's URL), which keeps
        ingests from this machine apart; across machines the deployments' concurrency limit of 1
        does (README, "Deploying with Prefect")."""
        if isinstance(self.root, RemotePath):
            from platformdirs import user_cache_path

            digest = hashlib.sha256(str(self.root).encode("utf-8")).hexdigest()[:16]
            locks = user_cache_path("mmindex", appauthor=False) / "locks" / digest
        else:
            locks = self.root / "locks"
        return locks / f"{collection}.ingest.lock"

    @property
    def qdrant_dir(self) -> Path:
        """Where the embedded qdrant-edge shards live (a local root only)."""
        return self.local_root / "qdrant"

    def models_dir(self, collection: str) -> Path:
        """The fine-tuned models of a collection (``mmindex finetune``'s default output), under a
        local root only (open_clip loads ``local-dir:`` folders); ``ConfigError`` otherwise."""
        return self.local_root / "models" / collection

    @property
    def local_root(self) -> Path:
        """The root as a local directory; ``ConfigError`` for an object-storage root."""
        if isinstance(self.root, RemotePath):
            raise ConfigError(f"the index root {self.root} is object storage, not a local directory")
        return self.root
