"""Crash safety (SIGKILL mid-ingest, then re-run) and zero-downtime model migration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import BlockingEmbedder
from PIL import Image

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.embed.model import ModelSpec, load_embedder
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.manage.maintenance import drop_version, list_versions
from mmindex.pipeline.search.query import SearchQuery, search
from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings

IMAGES = 36
DEADLINE_S = 120


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("many")
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(7)
    for index in range(IMAGES):
        photo = photos[index % len(photos)]
        top, left = rng.integers(0, 64, size=2)
        Image.fromarray(photo[top : top + 256, left : left + 256]).save(root / f"img{index:03d}.jpg")
    return root


@pytest.fixture(params=["edge", "qdrant-client"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    return None if request.param == "edge" else f"local:{tmp_path / 'qdrant-client'}"


def _shards(root: Path) -> dict[str, tuple[int, int]]:
    """Committed shard files with (size, mtime_ns): they must never be rewritten."""
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in _shard_files(root)}


def _shard_files(root: Path) -> list[Path]:
    shards = root / "shards"
    return list(shards.glob("*/*/[0-9]*.parquet")) if shards.is_dir() else []


def _start_ingest(corpus: Path, root: Path, model_dir: Path, backend: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MMINDEX_SHARD_SIZE": "2", "MMINDEX_BATCH_SIZE": "2", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "-c", "c", "--root", str(root),
            "--model", f"local-dir:{model_dir}", "--workers", "0"]
    if backend:
        args += ["--qdrant-url", backend]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_after_shards(process: subprocess.Popen[bytes], root: Path, shards: int) -> bool:
    """SIGKILL the ingest once ``shards`` shard files exist; False if it finished first."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if len(_shard_files(root)) >= shards:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            return True
        time.sleep(0.005)
    process.kill()
    raise AssertionError("ingest made no progress before the deadline")


def test_sigkill_at_any_moment_then_rerun_is_exact(many_images: Path, tiny_local_dir: Path, tmp_path: Path, backend: str | None) -> None:
    root = tmp_path / "root"
    killed = 0
    for target in (2, 5, 9):
        process = _start_ingest(many_images, root, tiny_local_dir, backend)
        killed += _kill_after_shards(process, root, target)
    assert killed >= 1, "every ingest finished before it could be killed"
    committed = _shards(root)

    settings = Settings(root=root, qdrant_url=backend, workers=0, shard_size=2, batch_size=2)
    report = index_source(IndexRequest(many_images, "c"), settings)
    assert report.counts.failed == 0
    rows_committed = 2 * len(committed)  # each committed shard holds two images
    assert len(report.embedded_keys) == IMAGES - rows_committed  # only work that was in flight
    for name, stat in committed.items():
        assert _shards(root)[name] == stat, f"finished shard {name} was rewritten"

    version = collection_state(settings, "c").current
    store = open_store(settings)
    try:
        assert store.count(version.physical_name) == IMAGES
        keys = {hit.payload["key"] for hit in store.search(version.physical_name, np.ones(32, np.float32), limit=1000)}
    finally:
        store.close()
    assert keys == {f"{many_images.resolve().as_posix()}/img{index:03d}.jpg" for index in range(IMAGES)}
    again = index_source(IndexRequest(many_images, "c"), settings)
    assert again.embedded_keys == [] and again.counts.shards_written == 0


def test_migration_serves_the_old_version_until_complete(
    photo_corpus: Path, tiny_checkpoint: Path, tiny_model_config: str, tmp_path: Path, backend: str | None
) -> None:
    import torch

    settings = Settings(root=tmp_path / "root", qdrant_url=backend, workers=0)
    old_model = ModelSpec(tiny_model_config, str(tiny_checkpoint))
    index_source(IndexRequest(photo_corpus, "photos", model=old_model), settings)
    old_version = collection_state(settings, "photos").current

    weights = torch.load(tiny_checkpoint)
    weights["visual.proj"] = weights["visual.proj"].flip(0)
    new_checkpoint = tmp_path / "new.pt"
    torch.save(weights, new_checkpoint)
    new_model = ModelSpec(tiny_model_config, str(new_checkpoint))
    blocking = BlockingEmbedder(load_embedder(new_model, "cpu"))
    outcome: dict[str, object] = {}

    def migrate() -> None:
        try:
            outcome["report"] = index_source(IndexRequest(photo_corpus, "photos", model=new_model), settings, embedder=blocking)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=migrate)
    worker.start()
    try:
        assert blocking.blocked.wait(timeout=DEADLINE_S)
        building = collection_state(settings, "photos")
        assert building.current == old_version and building.building is not None
        if backend is None:
            # qdrant-client's local mode admits one client per folder (a server admits many), so the
            # concurrent query runs on the embedded backend, whose lock lets it interleave.
            during = search(SearchQuery("photos", text="a cat", limit=5), settings)
            assert during and {hit.payload["embedder"] for hit in during} == {old_version.embedder_id}
    finally:
        blocking.release.set()
        worker.join(timeout=DEADLINE_S)
    assert "error" not in outcome, outcome.get("error")
    state = collection_state(settings, "photos")
    assert state.current.embedder_id == blocking.embedder_id != old_version.embedder_id
    after = search(SearchQuery("photos", text="a cat", limit=5), settings)
    assert {hit.payload["embedder"] for hit in after} == {blocking.embedder_id}

    versions = list_versions(settings, "photos")
    assert [(v.role, v.physical_name) for v in versions] == [("current", state.current.physical_name), ("previous", old_version.physical_name)]
    assert versions[0].points == versions[1].points > 0
    drop_version(settings, "photos", old_version.physical_name)
    assert [v.role for v in list_versions(settings, "photos")] == ["current"]
