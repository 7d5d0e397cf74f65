"""Helpers of the query-feature tests: an indexed photo corpus per backend, and a NumPy reference.

The reference reads every stored vector straight from the Parquet shards (not from Qdrant), and
ranks by brute force; expected fused vectors are computed here with plain NumPy, independently
of ``mmindex.pipeline.search.fusion``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmindex.pipeline.cli import app

COLLECTION = "photos"
BACKENDS = ("edge", "qdrant-client")
SCORE_TOL = 2e-4


# fp32 everywhere the tests compute expectations: on CPUs with bf16 matrix units ``auto`` means
# bf16, whose results depend on batch shapes at the 1e-3 level.
PRECISION = "fp32"


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI (in fp32): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, list(args), env={"MMINDEX_PRECISION": PRECISION})
    return result.exit_code, result.stdout, result.stderr


@dataclass(frozen=True)
class Reference:
    """Every indexed point as read from the Parquet shards."""

    keys: list[str]
    vectors: np.ndarray
    modality: list[str]
    rows: list[dict[str, Any]]

    def index_of(self, key: str) -> int:
        return self.keys.index(key)

    def vector(self, key: str) -> np.ndarray:
        return self.vectors[self.index_of(key)]

    def ranking(
        self, query: np.ndarray, allowed: Callable[[int], bool] = lambda _i: True, min_score: float | None = None
    ) -> list[tuple[str, float]]:
        """Brute-force cosine ranking of the allowed points, best first."""
        q = np.asarray(query, dtype=np.float64)
        scores = self.vectors.astype(np.float64) @ (q / np.linalg.norm(q))
        order = [int(i) for i in np.argsort(-scores, kind="stable") if allowed(int(i))]
        ranked = [(self.keys[i], float(scores[i])) for i in order]
        if min_score is not None:
            ranked = [(key, score) for key, score in ranked if score >= min_score]
        return ranked


def read_reference(root: Path) -> Reference:
    """The latest ``ok`` row of every key in the root's shards."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "shards").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            latest[row["key"]] = row
    rows = [row for row in latest.values() if row["status"] == "ok"]
    vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Reference([row["key"] for row in rows], vectors, [row["modality"] for row in rows], rows)


def fused(parts: Sequence[tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
    """``Σ w_i e_i / ‖Σ w_i e_i‖`` (signed weights) with NumPy, and the norm before normalizing."""
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float64))
    for vector, weight in parts:
        v = np.asarray(vector, dtype=np.float64)
        total += weight * v / np.linalg.norm(v)
    norm = float(np.linalg.norm(total))
    return total / norm, norm


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def assert_hits(hits: list[dict[str, Any]], ranking: list[tuple[str, float]], k: int) -> None:
    """The hits are the top ``k`` of ``ranking``: same scores rank by rank, each hit's own reference
    score equal to its rank's (the corpus holds identical text chunks, whose order is a tie)."""
    expected = ranking[:k]
    assert len(hits) == len(expected), ([h["key"] for h in hits], expected)
    np.testing.assert_allclose([hit["score"] for hit in hits], [score for _, score in expected], atol=SCORE_TOL)
    reference = dict(ranking)
    keys = [hit["key"] for hit in hits]
    assert len(set(keys)) == len(keys)
    for key, (expected_key, score) in zip(keys, expected, strict=True):
        assert key in reference and abs(reference[key] - score) <= SCORE_TOL, (key, expected_key)


@dataclass(frozen=True)
class Indexed:
    """An indexed corpus: where it lives, the CLI flags that reach it, the reference."""

    backend: str
    root: Path
    corpus: Path
    flags: list[str]
    qdrant_url: str | None
    reference: Reference

    def query(self, *args: str) -> list[dict[str, Any]]:
        code, stdout, stderr = run("query", "--collection", COLLECTION, *args, *self.flags, "--device", "cpu", "--json")
        assert code == 0, stderr
        return json.loads(stdout)

    def query_fails(self, *args: str) -> str:
        code, stdout, stderr = run("query", "--collection", COLLECTION, *args, *self.flags)
        assert code != 0, stdout
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
        return stderr

    def key(self, relative: str) -> str:
        return f"{self.corpus.resolve().as_posix()}/{relative}"

    def settings(self) -> Any:
        from mmindex.schemas.config import load_settings

        return load_settings(root=self.root, qdrant_url=self.qdrant_url, device="cpu", precision=PRECISION)


def index_corpus(backend: str, base: Path, corpus: Path, local_dir: Path) -> Indexed:
    """Index ``corpus`` into ``photos`` under ``base`` with the tiny model on ``backend``."""
    root = base / "root"
    qdrant_url = f"local:{base / 'qdrant-client'}" if backend == "qdrant-client" else None
    backend_flags = ["--qdrant-url", qdrant_url] if qdrant_url else []
    code, _, stderr = run(
        "index", str(corpus), "--collection", COLLECTION, "--root", str(root),
        "--model", f"local-dir:{local_dir}", "--workers", "0", *backend_flags,
    )
    assert code == 0, stderr
    return Indexed(backend, root, corpus, ["--root", str(root), *backend_flags], qdrant_url, read_reference(root))


@pytest.fixture(scope="module", params=BACKENDS)
def indexed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, photo_corpus: Path, tiny_local_dir: Path
) -> Iterator[Indexed]:
    """The photo corpus indexed once per backend and module (tests must not change it)."""
    yield index_corpus(request.param, tmp_path_factory.mktemp(request.param), photo_corpus, tiny_local_dir)


@pytest.fixture(scope="session")
def tiny_embedder(tiny_local_dir: Path) -> Any:
    """The tiny model in fp32, for computing expected query vectors."""
    from mmindex.pipeline.embed.model import ModelSpec, load_embedder

    return load_embedder(ModelSpec(f"local-dir:{tiny_local_dir}"), "cpu", PRECISION)


def image_vector(embedder: Any, path: Path) -> np.ndarray:
    """A query image's vector as the query path computes it (one image, the model's own preprocessing).

    Stored image vectors come from batched ingest, possibly at another precision than a query,
    so tests expect a query image's vector from this, not from the stored one.
    """
    from mmindex.pipeline.search.query import image_query_vector

    return image_query_vector(embedder, path, 10**9)
