"""Reading and atomically rewriting ``<root>/state.json``.

On a local root every edit holds an inter-process file lock. An object store has no such lock:
there ``state.json`` has one writer at a time by rule, the ingest's planning and finalize steps
(the ingest flow holds a Prefect concurrency limit of 1 per root across them, see
``flows.ingest.one_writer_per_root``); shard workers never write it there (see
``apply.mark_applied_next``). Every write publishes the whole file at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from filelock import FileLock, Timeout
from pydantic import ValidationError

from mmindex.pipeline.errors import IndexBusyError, SchemaMismatchError
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import StoragePath, ensure_private_root, is_remote, publish
from mmindex.schemas.state import IndexState

LOCK_SECONDS = 30.0


def read_state(root: StoragePath) -> IndexState:
    """The root's state; an empty state when the root is new."""
    return _load(IndexPaths(root).state_file)


def _load(path: StoragePath) -> IndexState:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return IndexState()
    try:
        return IndexState.model_validate_json(text)
    except ValidationError as exc:
        raise SchemaMismatchError(f"{path} is not a valid mmindex state file: {exc.errors()[0]['msg']}") from exc


@contextlib.contextmanager
def edit_state(root: StoragePath) -> Iterator[IndexState]:
    """Lock, read, let the caller change the state, then write it back atomically."""
    paths = IndexPaths(root)
    if is_remote(root):
        state = _load(paths.state_file)
        yield state
        publish(paths.state_file, state.model_dump_json(indent=2).encode("utf-8"))
        return
    ensure_private_root(root)
    lock = FileLock(str(paths.state_lock_file))
    try:
        lock.acquire(timeout=LOCK_SECONDS)
    except Timeout as exc:
        raise IndexBusyError(f"timed out waiting for the state lock of {root}") from exc
    try:
        state = _load(paths.state_file)
        yield state
        publish(paths.state_file, state.model_dump_json(indent=2).encode("utf-8"), durable=False)
    finally:
        lock.release()
