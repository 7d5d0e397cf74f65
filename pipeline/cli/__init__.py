"""``mmindex``: the command line (Typer). Every command calls the same pipeline functions as the
Prefect flows and the Python API; the commands live in one module per group (``ingest``: index,
schedule; ``search``: query, label; ``serve``: serve; ``manage``: info, rebuild, migrate, versions, delete, models;
``finetune``), and everything they print about user data goes through ``terminal``.
"""

from __future__ import annotations

from mmindex.pipeline.cli import finetune, ingest, manage, search, serve
from mmindex.pipeline.cli.app import app

__all__ = ["app", "finetune", "ingest", "main", "manage", "search", "serve"]


def main() -> None:
    """Console entry point."""
    app()
