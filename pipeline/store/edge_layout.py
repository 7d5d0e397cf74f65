"""How new qdrant-edge shards lay out their segments, so that loading one stays small.

A shard is loaded for every unit of work (``edge_store``). qdrant-edge keeps the payload indexes
and the id tracker of an *appendable* segment in RAM, built from its files at every load: with
the 15 payload indexes of mmindex that is about 2 KiB of heap and 2.5 KiB of touched file pages
per point (measured: ~470 MiB RSS to load 100,000 points). A *sealed* (optimized) segment keeps
them in memory-mapped files instead (``Memory.Cold``): loading the same 100,000 points then
takes ~7 MiB of heap.

So a new collection seals its appendable segment once that holds more than ``SEAL_POINTS``
points (``shard.optimize()`` at the end of each write session; Qdrant counts the threshold in
KiB of vectors, so it is set from the collection's CLIP width). Qdrant only seals by "indexing";
a sealed segment here gets an HNSW index *without a graph* (``m=0``) and a full-scan threshold no
segment reaches, so every search stays the exact scan it was on an appendable segment, and
sealing costs a copy of the segment, not a graph build. Once a collection's vectors exceed the
store's indexing threshold, ``graph_config`` replaces that with Qdrant's default HNSW: the next
optimize builds real graphs, as on collections made before (which load unchanged: a shard keeps
the configuration it was created with).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from mmindex.schemas.payload import FieldType

# Seal the appendable segment once it holds this many points. Measured (15 payload indexes,
# ingest-like upserts of 1,000 points): at 90,000 512-d points, sealing every ~20,000 cut the
# upserts' time 46 -> 39 s, a fresh load + search 688 -> 435 ms and peak RSS 834 -> 470 MiB;
# sealing every 1,000 made upserts 3x slower and searches 3x slower (many small segments).
SEAL_POINTS = 16_384
# Sealed segments merged down to about this many (few merges: each merge copies its segments).
SEALED_SEGMENTS = 16
# Full-scan threshold (KiB) of graphless sealed segments: larger than any segment, so exact scans.
_NEVER_KB = 1 << 40
# Qdrant's default HNSW parameters (what collections made without an ``hnsw_config`` use).
_HNSW_M, _HNSW_EF_CONSTRUCT, _HNSW_FULL_SCAN_KB = 16, 100, 10_000
_COLD = qe.Memory.Cold


def index_params(kind: FieldType) -> Any:
    """Payload index parameters of a field: memory-mapped in sealed segments, same answers."""
    if kind is FieldType.KEYWORD:
        return qe.KeywordIndexParams(memory=_COLD)
    if kind is FieldType.INTEGER:
        return qe.IntegerIndexParams(lookup=True, range=True, memory=_COLD)
    return qe.FloatIndexParams(memory=_COLD)


def _sealed_hnsw() -> qe.HnswIndexConfig:
    return qe.HnswIndexConfig(m=0, ef_construct=_HNSW_EF_CONSTRUCT, full_scan_threshold=_NEVER_KB, payload_m=0)


def _default_hnsw() -> qe.HnswIndexConfig:
    return qe.HnswIndexConfig(m=_HNSW_M, ef_construct=_HNSW_EF_CONSTRUCT, full_scan_threshold=_HNSW_FULL_SCAN_KB)


def _dense_params(vectors: dict[str, tuple[int, qe.Distance]]) -> dict[str, qe.EdgeVectorParams]:
    """Memory-mapped storage for each named dense vector."""
    return {name: qe.EdgeVectorParams(size=size, distance=distance, memory=_COLD) for name, (size, distance) in vectors.items()}


def shard_config(
    vectors: dict[str, tuple[int, qe.Distance]], sparse: list[str], indexing_threshold_kb: int
) -> qe.EdgeConfig:
    """The configuration of a new shard: cold (memory-mapped) storage, sealing below the threshold.

    The first of ``vectors`` (CLIP) sets the sealing size (``seal_kb``). A threshold at or below
    it leaves sealing off: the appendable segment then grows until ``optimize`` builds the HNSW
    index of segments above the threshold, as before.
    """
    dense = _dense_params(vectors)
    sparse_params = {name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=_COLD) for name in sparse} or None
    seal_at = seal_kb(next(iter(vectors.values()))[0])
    seals = indexing_threshold_kb > seal_at
    optimizers = qe.EdgeOptimizersConfig(
        indexing_threshold=seal_at if seals else indexing_threshold_kb,
        default_segment_number=SEALED_SEGMENTS if seals else None,
    )
    return qe.EdgeConfig(vectors=dense, sparse_vectors=sparse_params, optimizers=optimizers,
                         hnsw_config=_sealed_hnsw() if seals else None, id_tracker_memory=_COLD)


def graph_config(vectors: dict[str, tuple[int, qe.Distance]], indexing_threshold_kb: int) -> qe.EdgeConfig:
    """What a sealing shard is loaded with once it outgrows the threshold: real HNSW graphs."""
    dense = _dense_params(vectors)
    return qe.EdgeConfig(vectors=dense, hnsw_config=_default_hnsw(),
                         optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb))


def seals(shard_path: Path) -> bool:
    """Whether the shard seals its segments without graphs (its persisted HNSW ``m`` is 0)."""
    try:
        config = json.loads((shard_path / "edge_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    hnsw = config.get("hnsw_config") if isinstance(config, dict) else None
    return isinstance(hnsw, dict) and hnsw.get("m") == 0


def seal_kb(dim: int) -> int:
    """The sealing size in KiB of ``dim``-wide vectors (``SEAL_POINTS`` of them), at least 1."""
    return max(1, vectors_kb(SEAL_POINTS, dim))


def vectors_kb(points: int, dim: int) -> int:
    """KiB of ``points`` float32 vectors of ``dim`` dimensions (how Qdrant measures its thresholds)."""
    return points * dim * 4 // 1024
