"""How run reports look: JSON for scripts and a Markdown artifact for Prefect (the CLI prints the
lines people read: ``pipeline/cli/ingest.py``)."""

from __future__ import annotations

import re
from typing import Any

from mmindex.pipeline.ingest.run import IndexReport
from mmindex.pipeline.ingest.units import UnitOutcome
from mmindex.schemas.state import PLAN_FIELDS as PLAN_ORDER


def index_report_json(report: IndexReport) -> dict[str, Any]:
    """The report of ``mmindex index --json``."""
    counts = report.counts
    return {
        "collection": report.collection,
        "embedder": report.embedder_id,
        "dry_run": report.dry_run,
        "items": report.items_seen,
        "plan": {name: report.plan.get(name, 0) for name in PLAN_ORDER},
        "embedded": counts.embedded,
        "embedded_keys": report.embedded_keys,
        "reused": counts.reused,
        "chunks_reused": counts.chunks_reused,
        "images": counts.images,
        "text_chunks": counts.text_chunks,
        "failed": counts.failed,
        "recheck": {"rechecked": counts.rechecked, "not_modified": counts.recheck_not_modified,
                    "changed": counts.recheck_changed, "failed": counts.recheck_failed},
        "points_upserted": counts.points_upserted,
        "points_deleted": counts.points_deleted,
        "shards": counts.shards_written,
        "replayed_shards": report.replayed_shards,
        "migrated_to": report.migrated_to,
        "labeled": report.labeled,
        "seconds": round(report.seconds, 3),
        "items_per_second": round(report.items_per_second, 2),
        "failures": [{"path": path, "error": error} for path, error in report.failures],
        **({"planned_items": report.items.as_json()} if report.items is not None else {}),
    }


def plan_line(plan: dict[str, int]) -> str:
    """``new=3 changed=1 renamed=0 deleted=2 unchanged=120 …``"""
    return " ".join(f"{name}={plan.get(name, 0)}" for name in PLAN_ORDER if plan.get(name, 0) or name != "retried")


def index_report_markdown(report: IndexReport, outcomes: list[UnitOutcome]) -> str:
    """A run as a Markdown table (the Prefect ingest flow's artifact): counts, throughput, the
    shards and which worker wrote each, and the first failures."""
    counts = report.counts
    rows = [
        ("items seen", report.items_seen),
        *((f"plan: {name}", report.plan.get(name, 0)) for name in PLAN_ORDER),
        ("embedded", counts.embedded),
        ("reused", counts.reused),
        ("images", counts.images),
        ("text chunks", counts.text_chunks),
        ("failed", counts.failed),
        ("points upserted", counts.points_upserted),
        ("points deleted", counts.points_deleted),
        ("shards written", counts.shards_written),
        ("shards re-applied from an interrupted run", report.replayed_shards),
        ("labeled", report.labeled),
        ("seconds", f"{report.seconds:.1f}"),
        ("items/s", f"{report.items_per_second:.1f}"),
    ]
    lines = [f"## mmindex ingest into {_cell(report.collection)}", "", f"embedder {_cell(report.embedder_id)}", "",
             "| | |", "|---|---:|", *(f"| {name} | {value} |" for name, value in rows)]
    if outcomes:
        lines += ["", "| shard | items | failed | seconds | worker |", "|---|---:|---:|---:|---|"]
        for outcome in outcomes:
            items = outcome.counts.images + outcome.counts.text_chunks + outcome.counts.failed
            lines.append(f"| {_cell(outcome.shard or '-')} | {items} | {outcome.counts.failed} | {outcome.seconds:.1f} "
                         f"| {_cell(outcome.worker)} |")
    if report.failures:
        lines += ["", "| failed item | reason |", "|---|---|"]
        lines += [f"| {_cell(path)} | {_cell(error)} |" for path, error in report.failures[:50]]
        if len(report.failures) > 50:
            lines.append(f"| … {len(report.failures) - 50} more | mmindex info -c {_cell(report.collection)} --failed |")
    return "\n".join(lines) + "\n"


# Characters with a meaning inside a line of (GitHub-flavoured) Markdown, and so in Prefect's
# artifact view: emphasis, code, links and images (``[``, ``]``: a ``(`` after an escaped ``]`` is
# text), raw HTML and autolinks, entities, strikethrough, cell separators. Block markers (``#``,
# ``-``, ``1.``) count only at a line's start, where no user data is written.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>|~&])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _cell(text: str) -> str:
    """User data (file names, error messages) as literal text in a Markdown table cell: every
    inline Markdown metacharacter backslash-escaped (so ``[x](javascript:…)`` is no link, ``<b>``
    no HTML), and line breaks and control characters folded to a space."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", _CONTROL.sub(" ", text))
