"""Reading and atomically rewriting ``<root>/state.json``.

On a local root every edit holds an inter-process file lock. An object store has no such lock:
there ``state.json`` has one writer at a time by rule, the ingest's planning and finalize steps
(the ingest flow holds a Prefect concurrency limit of 1 per root across them, see
``flows.ingest.one_writer_per_root``); shard workers never write it there (see
``apply.mark_applied_next``). Every write publishes the whole file at once, after keeping the file it replaces as
``state.json.prev`` (the previous generation): a torn or corrupt ``state.json`` is read from
there with a warning, and is repaired by the next edit; when both are unreadable the error names
the files and the command that recovers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from filelock import FileLock, Timeout
from pydantic import ValidationError

from mmindex.pipeline.errors import IndexBusyError, SchemaMismatchError
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import StoragePath, ensure_private_root, is_remote, publish
from mmindex.schemas.state import IndexState

LOCK_SECONDS = 30.0
log = logging.getLogger(__name__)


def previous_generation(state_file: StoragePath) -> StoragePath:
    """Where the state file an edit replaced is kept."""
    return state_file.with_name(state_file.name + ".prev")


def read_state(root: StoragePath) -> IndexState:
    """The root's state; an empty state when the root is new."""
    return _load(IndexPaths(root).state_file)


def _parse(path: StoragePath) -> IndexState:
    try:
        return IndexState.model_validate_json(path.read_bytes())
    except (ValidationError, UnicodeDecodeError) as exc:
        reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else "not UTF-8 text"
        raise SchemaMismatchError(f"{path} is not a valid mmindex state file: {reason}") from exc


def _load(path: StoragePath) -> IndexState:
    if not path.exists():
        return IndexState()
    try:
        return _parse(path)
    except SchemaMismatchError as damaged:
        backup = previous_generation(path)
        if not backup.exists():
            raise SchemaMismatchError(f"{damaged}; no previous generation ({backup.name}) to recover from") from damaged
        try:
            state = _parse(backup)
        except SchemaMismatchError:
            raise SchemaMismatchError(f"{damaged}; its previous generation {backup} is damaged too") from damaged
        log.warning("%s; read its previous generation %s instead (the next change rewrites it; "
                    "to restore it now: cp %s %s)", damaged, backup.name, backup, path)
        return state


def _write(path: StoragePath, state: IndexState, durable: bool) -> None:
    if path.exists():
        try:
            current = path.read_bytes()
            _parse(path)
        except SchemaMismatchError:
            pass  # never keep a damaged file as the previous generation
        else:
            publish(previous_generation(path), current, durable=durable)
    publish(path, state.model_dump_json(indent=2).encode("utf-8"), durable=durable)


@contextlib.contextmanager
def edit_state(root: StoragePath) -> Iterator[IndexState]:
    """Lock, read, let the caller change the state, then write it back atomically."""
    paths = IndexPaths(root)
    if is_remote(root):
        state = _load(paths.state_file)
        yield state
        _write(paths.state_file, state, durable=True)
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
        _write(paths.state_file, state, durable=False)
    finally:
        lock.release()
