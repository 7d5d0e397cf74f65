"""Loaded at start-up by the child processes of some tests (``PYTHONPATH`` holds this folder;
nothing else imports it).

With ``MMINDEX_TEST_HOLD_DIR`` set (the flow scale test's workers), the first process that
embeds a batch after the test arms the hold (creates ``<dir>/armed``) claims it, writes
``<dir>/held-<pid>`` with its flow run id and stops there, mid-shard, until the test kills it
(or, bounded, until ``<dir>/released`` appears).

With ``MMINDEX_TEST_ROW_GROUP_ROWS`` set (the killed-mid-document test), a unit's shard is
written a row group of that many rows at a time, so a small document already spans several.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

HOLD_LIMIT_S = 300.0


def _hold_once(hold_dir: Path) -> None:
    claimed = hold_dir / f"held-{os.getpid()}"
    try:
        os.rename(hold_dir / "armed", claimed)  # atomic: exactly one process wins the hold
    except FileNotFoundError:
        return
    from prefect.runtime import flow_run

    claimed.write_text(str(flow_run.id), encoding="utf-8")
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not (hold_dir / "released").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never killed or released the held shard")
        time.sleep(0.05)  # waiting for the test's kill; the test itself synchronises on the held file


def _install(hold_dir: Path) -> None:
    from mmindex.pipeline.embed.model import Embedder

    for name in ("encode_images", "encode_texts"):
        original = getattr(Embedder, name)

        def held(self: Embedder, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            _hold_once(hold_dir)
            return _original(self, *args, **kwargs)

        setattr(Embedder, name, held)


if os.environ.get("MMINDEX_TEST_HOLD_DIR"):
    _install(Path(os.environ["MMINDEX_TEST_HOLD_DIR"]))

if os.environ.get("MMINDEX_TEST_ROW_GROUP_ROWS"):
    from mmindex.pipeline.ingest import execute

    execute.ROW_GROUP_ROWS = int(os.environ["MMINDEX_TEST_ROW_GROUP_ROWS"])
