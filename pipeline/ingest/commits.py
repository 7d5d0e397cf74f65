"""Commit work units on a background thread while the next unit is embedded.

Writing a unit's shard and upserting it into the store do not need the model; the next unit's
decoding and encoding do not need the store. ``BackgroundCommits`` runs each commit on one worker
thread, so the two overlap, while keeping every guarantee of the serial loop: commits run in
submission order, one at a time, and at most one is in flight (a unit's commit has finished
before the commit of the unit after the next one is even submitted), so the applied marker
moves exactly as before and a crash leaves at most one prepared unit uncommitted (it is
prepared again on the next run). A commit's failure is raised by the next ``submit`` or on leaving
the block; leaving the block always waits for the commit in flight, even on an error.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class BackgroundCommits:
    """One background thread running commits in order, one in flight (a context manager)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmindex-commit")
        self._in_flight: Future[Any] | None = None

    def submit(self, commit: Callable[[], Any]) -> None:
        """Wait for the previous commit (raising its error), then start ``commit`` in the
        background, in this context (stage timers, Prefect run context)."""
        self.wait()
        self._in_flight = self._pool.submit(contextvars.copy_context().run, commit)

    def wait(self) -> None:
        """Block until the commit in flight is done; raise its error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def __enter__(self) -> BackgroundCommits:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if exc is None:
                self.wait()
            elif self._in_flight is not None:  # the block failed: still finish the commit in flight
                error = self._in_flight.exception()
                if error is not None:
                    log.error("a background commit failed too: %s", error)
        finally:
            self._pool.shutdown(wait=True)
