"""What a flow run's caller may point a worker at (issue: flow parameters are trusted).

Whoever can reach the Prefect API can start a flow run with any parameters, so a worker checks the
paths it is given against its own allow-list before touching them: ``MMINDEX_ALLOWED_PREFIXES``
in the worker's environment, separated by ``,``; each entry is a local folder (``/data``) or a URL
prefix with its scheme (``s3://bucket/mmindex``). Unset, nothing is restricted (a single-user
machine); the compose file and the guide set it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.redact import redact_secrets

if TYPE_CHECKING:
    from mmindex.pipeline.ingest.options import IndexOptions

ALLOWED_PREFIXES_ENV = "MMINDEX_ALLOWED_PREFIXES"


def _allowed() -> list[str]:
    return [entry.strip() for entry in os.environ.get(ALLOWED_PREFIXES_ENV, "").split(",") if entry.strip()]


def _inside(value: str, prefix: str) -> bool:
    if "://" in prefix or "://" in value:
        return "://" in prefix and (value == prefix.rstrip("/") or value.startswith(prefix.rstrip("/") + "/"))
    return Path(os.path.realpath(Path(value).expanduser())).is_relative_to(os.path.realpath(prefix))


def check_allowed(what: str, value: str | None) -> None:
    """Refuse ``value`` (a path or URL given as a flow parameter) outside the worker's allow-list."""
    allowed = _allowed()
    if value is None or not allowed:
        return
    if not any(_inside(value, prefix) for prefix in allowed):
        raise ConfigError(f"{what} {value!r} is outside this worker's {ALLOWED_PREFIXES_ENV} ({', '.join(allowed)})")


def check_no_credentials(what: str, value: str | None) -> None:
    """Refuse a URL parameter that carries credentials (``user:key@``, a token or signature in its
    query): Prefect stores and shows every flow and shard run's parameters, so a key travels in the
    worker's environment (``QDRANT_API_KEY``, the object store's own variables) instead. The
    message shows the URL redacted."""
    if value is not None and redact_secrets(value) != value:
        raise ConfigError(f"{what} {redact_secrets(value)!r} carries credentials, which Prefect would store with "
                          "the run's parameters: give the worker its keys in its environment instead "
                          "(QDRANT_API_KEY; AWS_* or the storage's own variables)")


def check_flow_options(options: IndexOptions) -> None:
    """What an ingest flow's options point a worker at: the source, the root and the model's own
    files (a ``local-dir:`` folder, a ``--pretrained`` checkpoint path) inside the worker's
    allow-list, and no credentials in any URL among them (Prefect stores the parameters)."""
    model = options.model or ""
    model_folder = model[len(LOCAL_DIR_PREFIX):] if model.startswith(LOCAL_DIR_PREFIX) else None
    pretrained = options.pretrained
    checkpoint = pretrained if pretrained and ("/" in pretrained or pretrained.startswith(("~", "."))) else None
    for what, value in (("source", options.source), ("root", options.root), ("model folder", model_folder),
                        ("pretrained checkpoint", checkpoint)):
        check_allowed(what, value)
    for what, value in (("source", options.source), ("root", options.root), ("qdrant_url", options.qdrant_url)):
        check_no_credentials(what, value)
