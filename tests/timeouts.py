"""Test helper: run something with a deadline instead of letting a hang stall the suite."""

from __future__ import annotations

import threading
from collections.abc import Callable


def finishes_within(seconds: float, fn: Callable[[], object]) -> object:
    """Run ``fn`` in a daemon thread; fail (instead of hanging) if it takes too long."""
    result: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds}s"
    if errors:
        raise errors[0]
    return result[0] if result else None
