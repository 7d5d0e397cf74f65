"""An embedded store that keeps its shards open between reads, for a long-running reader
(``mmindex serve``), and hands a shard over to any process that waits for it.

``EdgeStore`` loads a shard for every call, which costs a large collection most of a query's
time. ``HeldEdgeStore`` loads a collection's shard on its first read and keeps it loaded — and
the collection's file lock held — until someone else wants the lock: a watcher thread looks at
the collection's turnstile every ``HANDOVER_CHECK_S`` and, when another process (an ingest, a
``mmindex query``) waits there, closes the shard and lets the lock go. The next read queues at
the turnstile like any other process and loads the shard again, as the writer committed it: a
read sees the state before or after a writer's session, never a torn one. Writes from this store
release a held shard and run as ``EdgeStore``'s. All use of a held shard is serialized in-process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from filelock import FileLock

from mmindex.pipeline.errors import MmindexError, StoreUnavailableError
from mmindex.pipeline.store.edge_store import EdgeStore
from mmindex.pipeline.store.store import CollectionSpec

logger = logging.getLogger(__name__)

HANDOVER_CHECK_S = 0.05


@dataclass(slots=True)
class _HeldShard:
    shard: qe.EdgeShard
    spec: CollectionSpec
    lock: FileLock


class HeldEdgeStore(EdgeStore):
    """``EdgeStore`` whose reads keep the shard loaded until another process waits for it."""

    def __init__(self, directory: Path, lock_timeout: float = 30.0, check_s: float = HANDOVER_CHECK_S) -> None:
        super().__init__(directory, lock_timeout)
        self.check_s = check_s
        self._held: dict[str, _HeldShard] = {}
        self._mutex = threading.RLock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def held(self) -> list[str]:
        """The collections whose shard is loaded now."""
        with self._mutex:
            return sorted(self._held)

    @contextmanager
    def _open_shard(
        self, name: str, create_spec: CollectionSpec | None = None, write: bool = False,
        config: qe.EdgeConfig | None = None,
    ) -> Iterator[tuple[qe.EdgeShard, CollectionSpec]]:
        with self._mutex:
            if create_spec is not None or write or config is not None:
                self._let_go(name)
                with super()._open_shard(name, create_spec, write, config) as opened:
                    yield opened
                return
            held = self._held.get(name) or self._hold(name)
            try:
                yield held.shard, held.spec
            except MmindexError:
                raise
            except Exception as exc:  # qdrant-edge raises plain Exception for every failure
                raise StoreUnavailableError(f"embedded index shard {self.shard_path(name)}: {exc}") from exc

    def _hold(self, name: str) -> _HeldShard:
        lock = self._take_lock(name)
        try:
            shard, spec = self._load_shard(name)
        except BaseException:
            lock.release()
            raise
        held = self._held[name] = _HeldShard(shard, spec, lock)
        logger.debug("holding collection %r open", name)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="mmindex-shard-handover", daemon=True)
            self._watcher.start()
        return held

    def _let_go(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is None:
            return
        try:
            self._wrap(self.shard_path(name), "close", held.shard.close)
        finally:
            held.lock.release()
        logger.debug("handed collection %r over", name)

    def _watch(self) -> None:
        while not self._closed.wait(self.check_s):
            with self._mutex:
                for name in [name for name in self._held if self.has_waiter(name)]:
                    try:
                        self._let_go(name)
                    except StoreUnavailableError as exc:
                        logger.warning("%s", exc)

    def drop_collection(self, name: str) -> None:
        with self._mutex:
            self._let_go(name)
            super().drop_collection(name)

    def close(self) -> None:
        """Close every held shard and release its lock; stop the watcher."""
        self._closed.set()
        with self._mutex:
            for name in list(self._held):
                self._let_go(name)
        if self._watcher is not None:
            self._watcher.join(timeout=10 * self.check_s + 1)

    def __enter__(self) -> HeldEdgeStore:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
