"""How many results one query may ask for: every hit is fetched with its vector and payload, so
an unbounded ``--limit`` (or the API's ``limit``/``k``) would make one request read the whole
collection into memory. Page with ``--where`` filters, or export with ``mmindex info``, instead."""

from __future__ import annotations

from mmindex.pipeline.errors import ConfigError

MAX_RESULTS = 1000


def check_result_count(value: int, name: str) -> int:
    """``value`` when it is between 1 and ``MAX_RESULTS``; else a ``ConfigError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not 1 <= value <= MAX_RESULTS:
        raise ConfigError(f"{name} must be between 1 and {MAX_RESULTS}, got {value}")
    return value
