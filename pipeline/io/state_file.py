"""Reading and atomically rewriting ``<root>/state.json`` under an inter-process lock."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import ValidationError

from ...schemas.state import IndexState
from ..errors import IndexBusyError, SchemaMismatchError

STATE_FILE = "state.json"
LOCK_SECONDS = 30.0


def read_state(root: Path) -> IndexState:
    """The root's state; an empty state when the root is new."""
    path = root / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return IndexState()
    try:
        return IndexState.model_validate_json(text)
    except ValidationError as exc:
        raise SchemaMismatchError(f"{path} is not a valid mmindex state file: {exc.errors()[0]['msg']}") from exc


@contextlib.contextmanager
def edit_state(root: Path) -> Iterator[IndexState]:
    """Lock, read, let the caller change the state, then write it back atomically."""
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f"{STATE_FILE}.lock"))
    try:
        lock.acquire(timeout=LOCK_SECONDS)
    except Timeout as exc:
        raise IndexBusyError(f"timed out waiting for the state lock of {root}") from exc
    try:
        state = read_state(root)
        yield state
        tmp = root / f".{STATE_FILE}.tmp{os.getpid()}"
        tmp.write_text(state.model_dump_json(indent=2), encoding="utf-8")
        os.replace(tmp, root / STATE_FILE)
    finally:
        lock.release()
