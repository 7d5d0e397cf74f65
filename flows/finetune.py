"""The Prefect fine-tuning flow: ``mmindex finetune`` as a task on the ``gpu`` pool, the evaluation
as a Markdown artifact, and the migration to the new model as its follow-up (docs/ARCHITECTURE.md §8).

The output folder is written under the index root by default, where every worker of the
collection reads it (``local-dir:<root>/models/<collection>/...``). A retried or re-run flow
resumes training from the last epoch checkpoint, and a finished job is reused, not retrained.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mmindex.flows.params import check_allowed, check_no_credentials
from mmindex.pipeline.ingest.report import index_report_json
from mmindex.pipeline.train.finetune import FinetuneReport, FinetuneRequest, finetune_collection, finetune_request, migrate_to_finetuned
from mmindex.schemas.config import Settings, load_settings


@task(name="finetune", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def finetune_task(settings: Settings, request: FinetuneRequest) -> FinetuneReport:
    """Train, evaluate and write the output (a retry resumes from the epoch checkpoint)."""
    return finetune_collection(settings, request)


@task(name="migrate", cache_policy=NO_CACHE)
def migrate_task(settings: Settings, collection: str, report: FinetuneReport) -> dict[str, Any]:
    """Migrate the collection to the fine-tuned model (queries keep answering meanwhile)."""
    return index_report_json(migrate_to_finetuned(settings, collection, report))


def _artifact_key(collection: str) -> str:
    return "mmindex-finetune-" + re.sub(r"[^a-z0-9-]+", "-", collection.lower()).strip("-")


@flow(name="mmindex-finetune")
def finetune_flow(
    collection: str,
    root: str | None = None,
    qdrant_url: str | None = None,
    device: str | None = None,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-5,
    warmup: int | None = None,
    lock_image: bool = False,
    lock_text: bool = False,
    unlock_last: int | None = None,
    wise_alpha: str = "1",
    holdout: float = 0.2,
    output: str | None = None,
    migrate: bool = False,
    precision: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """``mmindex finetune`` as a flow (same parameters). Returns ``mmindex finetune --json``, plus
    the migration's report under ``migration`` when ``migrate``.

    The root and the output must lie under the worker's ``MMINDEX_ALLOWED_PREFIXES`` (when set),
    and a Qdrant URL must carry no credentials (``flows/params.py``), as in every flow.
    """
    check_allowed("root", root)
    check_allowed("output", output)
    check_no_credentials("qdrant_url", qdrant_url)
    logger = get_run_logger()
    settings = load_settings(root=root, device=device, qdrant_url=qdrant_url)
    request = finetune_request(
        collection, epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, lock_image=lock_image, lock_text=lock_text,
        unlock_last=unlock_last, wise_alpha=wise_alpha, holdout=holdout, output=Path(output) if output else None,
        device=settings.device, precision=precision, seed=seed,
    )
    report = finetune_task(settings, request)
    create_markdown_artifact(key=_artifact_key(collection), markdown=report.markdown(),
                             description=f"mmindex fine-tuning of {collection}")
    logger.info("fine-tuned %s: %s", collection, report.model)
    result: dict[str, Any] = {"model": report.model, **report.as_json()}
    if migrate:
        result["migration"] = migrate_task(settings, collection, report)
    return result
