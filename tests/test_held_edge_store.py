"""``HeldEdgeStore``: reads keep the shard loaded and its lock held; a writer that waits for the
lock (another process's ``EdgeStore``; here another file descriptor, which flock treats alike)
gets it, and the next read sees what it committed."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock, Timeout
from helpers import WAIT_S, finishes_within

from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.held_edge_store import HeldEdgeStore
from mmindex.pipeline.store.store import CollectionSpec, PointBatch

NAME = "items"
DIM = 8


def _batch(start: int, count: int) -> PointBatch:
    vectors = np.random.default_rng(start).standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"item-{i}")) for i in range(start, start + count)]
    return PointBatch(ids, vectors, [{"key": f"item-{i}"} for i in range(start, start + count)])


def _lock_is_free(store: EdgeStore) -> bool:
    probe = FileLock(store.lock_path(NAME), thread_local=False)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return False
    probe.release()
    return True


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    writer = EdgeStore(tmp_path)
    writer.create_collection(NAME, CollectionSpec(dim=DIM))
    writer.upsert(NAME, _batch(0, 10))
    return tmp_path


def test_reads_keep_the_shard_open_and_close_lets_it_go(directory: Path) -> None:
    store = HeldEdgeStore(directory)
    assert store.count(NAME) == 10
    assert store.held == [NAME]
    assert not _lock_is_free(store)  # held between calls: the next read loads nothing
    assert len(store.search(NAME, _batch(0, 1).vectors[0], 3)) == 3
    store.close()
    assert store.held == []
    assert _lock_is_free(store)


def test_a_waiting_writer_gets_the_shard_and_the_next_read_sees_its_commit(directory: Path) -> None:
    with HeldEdgeStore(directory, check_s=0.01) as store:
        assert store.count(NAME) == 10
        writer = EdgeStore(directory, lock_timeout=WAIT_S)
        finishes_within(WAIT_S, lambda: writer.upsert(NAME, _batch(10, 5)))
        assert store.held == []  # handed over, not yet re-opened
        assert store.count(NAME) == 15
        assert store.held == [NAME]


def test_writes_through_the_held_store_release_the_shard_first(directory: Path) -> None:
    with HeldEdgeStore(directory) as store:
        assert store.count(NAME) == 10
        store.upsert(NAME, _batch(10, 3))  # would deadlock on its own held lock otherwise
        assert store.count(NAME) == 13
