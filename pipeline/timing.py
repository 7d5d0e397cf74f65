"""Where ingest time goes: per-stage timers that cost nothing unless someone is recording.

A recording is opened around a run (the benchmark does it)::

    with timing.recording() as times:
        index_source(...)
    times.seconds["encode"]

Library code marks stages with ``with timing.stage("crawl"): ...``; outside a recording
that is one context-variable lookup and a shared no-op context manager. Hot per-item code asks
for ``current()`` once per call and skips timing entirely when it is None.

Stages run on the calling thread add wall seconds. Per-item stages of decode threads (``read``,
``decode``, ``preprocess`` of each item) add their thread's seconds, so with N threads their sum
can exceed the wall time they took; ``decode_wait`` is the wall time the encoder waited for them.
A stage nested in itself on the same thread counts once, so instrumenting a function twice
(in the library and from a benchmark) never double-counts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

# The stages of an image ingest, in pipeline order (others may be recorded too).
STAGES: tuple[str, ...] = (
    "crawl", "plan", "read", "decode", "preprocess", "decode_wait", "h2d", "encode", "write", "upsert",
)
# Stages measured per item on decode threads (thread-seconds, not wall seconds).
THREAD_STAGES: frozenset[str] = frozenset({"read", "decode", "preprocess"})

_current: ContextVar[StageTimes | None] = ContextVar("mmindex_stage_times", default=None)
_NOOP = contextlib.nullcontext()
F = TypeVar("F", bound=Callable[..., Any])


class StageTimes:
    """Accumulated seconds and call counts per stage; safe to add to from several threads."""

    def __init__(self, synchronize: Callable[[], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.items: dict[str, int] = {}
        # Called before a stage's clock stops (e.g. torch.cuda.synchronize, so GPU work is counted).
        self.synchronize = synchronize
        self._lock = threading.Lock()
        self._active = threading.local()

    def add(self, stage: str, seconds: float, items: int = 0) -> None:
        """Add ``seconds`` (and ``items`` processed) to ``stage``."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.calls[stage] = self.calls.get(stage, 0) + 1
            if items:
                self.items[stage] = self.items.get(stage, 0) + items

    @contextlib.contextmanager
    def stage(self, name: str, items: int = 0) -> Iterator[None]:
        """Time the block as ``name`` (once, if already inside ``name`` on this thread)."""
        active: set[str] = self._active.__dict__.setdefault("names", set())
        if name in active:
            yield
            return
        active.add(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.synchronize is not None and name not in THREAD_STAGES:
                self.synchronize()
            self.add(name, time.perf_counter() - started, items)
            active.discard(name)

    def total(self, stages: tuple[str, ...] | None = None) -> float:
        """Sum of the seconds of ``stages`` (default: every stage recorded)."""
        names = self.seconds.keys() if stages is None else stages
        return sum(self.seconds.get(name, 0.0) for name in names)


def current() -> StageTimes | None:
    """The recording of this context, or None when nobody records."""
    return _current.get()


@contextlib.contextmanager
def recording(times: StageTimes | None = None) -> Iterator[StageTimes]:
    """Record stages of everything run in this context (threads get it passed explicitly)."""
    times = times if times is not None else StageTimes()
    token = _current.set(times)
    try:
        yield times
    finally:
        _current.reset(token)


def stage(name: str, items: int = 0) -> contextlib.AbstractContextManager[None]:
    """Time a block as stage ``name`` if a recording is open; a shared no-op otherwise."""
    times = _current.get()
    return _NOOP if times is None else times.stage(name, items)


def timed(name: str, function: F) -> F:
    """``function`` wrapped so each call is timed as stage ``name`` (when recording)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stage(name):
            return function(*args, **kwargs)

    wrapper.__wrapped__ = function  # type: ignore[attr-defined]
    wrapper.__name__ = getattr(function, "__name__", name)
    wrapper.__doc__ = function.__doc__
    return wrapper  # type: ignore[return-value]
