"""Units are committed (Parquet shard, upsert) on a background thread while the next unit embeds:
in order, one in flight, failures raised, nothing lost or doubled."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import scroll_all
from PIL import Image

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.errors import StoreUnavailableError
from mmindex.pipeline.ingest.commits import BackgroundCommits
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings

WAIT_S = 60  # a bound on waits that only a broken implementation reaches


def test_commits_run_in_order_one_at_a_time() -> None:
    events: list[str] = []
    running = threading.Lock()

    def commit(name: str) -> None:
        assert running.acquire(blocking=False), "two commits ran at once"
        try:
            events.append(name)
        finally:
            running.release()

    with BackgroundCommits() as commits:
        for index in range(20):
            commits.submit(lambda index=index: commit(f"unit{index}"))
    assert events == [f"unit{index}" for index in range(20)]


def test_a_commit_overlaps_the_caller_until_the_next_submit() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow() -> None:
        started.set()
        assert release.wait(WAIT_S)
        finished.append("slow")

    with BackgroundCommits() as commits:
        commits.submit(slow)
        assert started.wait(WAIT_S)
        assert finished == []  # the caller goes on while the commit runs
        release.set()
        commits.submit(lambda: finished.append("next"))  # waits for "slow" first
        assert finished[0] == "slow"
    assert finished == ["slow", "next"]


def test_a_failed_commit_is_raised_by_the_next_submit_and_on_exit() -> None:
    def failing() -> None:
        raise StoreUnavailableError("store went away")

    ran: list[str] = []
    with pytest.raises(StoreUnavailableError, match="went away"), BackgroundCommits() as commits:
        commits.submit(failing)
        commits.submit(lambda: ran.append("never"))
    assert ran == []
    with pytest.raises(StoreUnavailableError, match="went away"), BackgroundCommits() as commits:
        commits.submit(failing)


def test_an_error_in_the_block_still_finishes_the_commit_in_flight() -> None:
    release = threading.Event()
    finished: list[str] = []

    def slow() -> None:
        assert release.wait(WAIT_S)
        finished.append("committed")

    with pytest.raises(KeyError), BackgroundCommits() as commits:
        commits.submit(slow)
        release.set()
        raise KeyError("embedding failed")
    assert finished == ["committed"]


# -- in a run ------------------------------------------------------------------------------------



@pytest.fixture
def eight_photos(tmp_path: Path) -> Path:
    from skimage import data

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for index in range(8):
        Image.fromarray(photos[index % 4][index * 8 : index * 8 + 200, :200]).save(corpus / f"p{index}.jpg")
    return corpus


class _Recorder:
    """Wraps the embedder and the store: logs encodes and upserts, and holds the first upsert
    until the next unit has started encoding (so a serial loop would never get there)."""

    def __init__(self, embedder) -> None:
        self._embedder = embedder
        self.events: list[str] = []
        self.second_unit_encoding = threading.Event()
        self.overlapped = False

    def __getattr__(self, name: str):
        return getattr(self._embedder, name)

    def encode_images(self, pixels):
        self.events.append(f"encode {threading.current_thread().name}")
        if sum(event.startswith("encode") for event in self.events) == 2:
            self.second_unit_encoding.set()
        return self._embedder.encode_images(pixels)

    def wrap_upsert(self, store_class: type, monkeypatch: pytest.MonkeyPatch) -> None:
        original = store_class.upsert

        def upsert(store, name, points):
            first = not any(event.startswith("upsert") for event in self.events)
            self.events.append(f"upsert {threading.current_thread().name}")
            if first:
                self.overlapped = self.second_unit_encoding.wait(WAIT_S)
            return original(store, name, points)

        monkeypatch.setattr(store_class, "upsert", upsert)


@pytest.mark.parametrize("backend", ["edge", "qdrant-client"])
def test_unit_commits_overlap_the_next_units_embedding(
    eight_photos: Path, tiny_embedder, tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = None if backend == "edge" else f"local:{tmp_path / 'qdrant'}"
    settings = Settings(root=tmp_path / "root", workers=0, batch_size=2, shard_size=2, qdrant_url=url, text_model="none")
    recorder = _Recorder(tiny_embedder)
    store = open_store(settings)
    store_class = type(store)
    store.close()
    recorder.wrap_upsert(store_class, monkeypatch)
    report = index_source(IndexRequest(eight_photos, "c"), settings, embedder=recorder)  # type: ignore[arg-type]
    assert report.counts.images == 8 and report.counts.shards_written == 4
    assert recorder.overlapped, "unit 1 was upserted only after unit 2 had finished embedding"
    assert {event for event in recorder.events if event.startswith("upsert")} == {"upsert mmindex-commit_0"}
    store = open_store(settings)
    try:
        assert store.count(collection_state(settings, "c").current.physical_name) == 8
    finally:
        store.close()


def test_a_failed_commit_stops_the_run_and_the_next_run_is_exact(
    eight_photos: Path, tiny_embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmindex.pipeline.store.edge_store import EdgeStore

    settings = Settings(root=tmp_path / "root", workers=0, batch_size=2, shard_size=2, text_model="none")
    calls = {"n": 0}
    original = EdgeStore.upsert

    def flaky(self, name, points):
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreUnavailableError("the disk is gone")
        return original(self, name, points)

    monkeypatch.setattr(EdgeStore, "upsert", flaky)
    with pytest.raises(StoreUnavailableError, match="disk is gone"):
        index_source(IndexRequest(eight_photos, "c"), settings, embedder=tiny_embedder)
    monkeypatch.setattr(EdgeStore, "upsert", original)
    report = index_source(IndexRequest(eight_photos, "c"), settings, embedder=tiny_embedder)
    version = collection_state(settings, "c").current
    store = open_store(settings)
    points = scroll_all(store, version.physical_name, with_vectors=True)
    assert sorted(point.payload["path"] for point in points) == [f"p{index}.jpg" for index in range(8)]
    assert report.counts.failed == 0
    for point in points:  # every stored vector is a unit vector of the model's width
        assert point.vector is not None and point.vector.shape == (tiny_embedder.dim,)
        assert np.linalg.norm(point.vector) == pytest.approx(1.0, abs=1e-4)
