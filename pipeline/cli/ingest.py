"""``mmindex index`` and ``mmindex schedule``, and how a run's report reads for people."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mmindex.pipeline.cli.app import JsonOpt, RichProgress, command, emit_json, settings_of
from mmindex.pipeline.cli.options import with_options
from mmindex.pipeline.cli.terminal import err, markup
from mmindex.pipeline.ingest.options import IndexOptions

if TYPE_CHECKING:
    from rich.console import Console

    from mmindex.pipeline.ingest.run import IndexReport

SHOWN_PER_KIND = 10
SHOWN_FAILURES = 10


@command()
@with_options(IndexOptions)
def index(
    options: IndexOptions,
    list_all: Annotated[bool, typer.Option("--list", help="With --dry-run: list every planned item.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index SOURCE into a collection; re-runs only embed what changed.

    Example: mmindex index ~/photos --collection photos
    """
    from mmindex.pipeline.errors import ConfigError
    from mmindex.pipeline.ingest.report import index_report_json
    from mmindex.pipeline.ingest.run import index_source

    if list_all and not options.dry_run:
        raise ConfigError("--list goes with --dry-run")
    settings = settings_of(options)
    request = options.request()
    with RichProgress(f"indexing {options.collection}") as progress:
        report = index_source(request, settings, progress)
    if as_json:
        emit_json(index_report_json(report))
    else:
        print_index_report(err, report, list_all=list_all)


def print_index_report(console: Console, report: IndexReport, *, list_all: bool = False) -> None:
    """A short human summary of a run; a dry run lists the first items of each kind (all with ``list_all``)."""
    from mmindex.pipeline.ingest.report import plan_line

    counts = report.counts
    name = markup(report.collection)
    if report.dry_run:
        console.print(f"[bold]plan[/] for {name} ({report.items_seen} items): {plan_line(report.plan)}")
        if report.items is not None:
            for kind, lines in report.items.lines().items():
                shown = lines if list_all else lines[:SHOWN_PER_KIND]
                for line in shown:
                    console.print(f"  {kind:<8} {markup(line)}")
                if len(lines) > len(shown):
                    console.print(f"  {kind:<8} … and {len(lines) - len(shown)} more (--list shows all)")
        return
    console.print(
        f"[green]indexed[/] {report.items_seen} items into [bold]{name}[/]: {plan_line(report.plan)}; "
        f"embedded {counts.embedded}, reused {counts.reused}, {counts.failed} failed "
        f"({report.seconds:.1f}s)"
    )
    if counts.rechecked:
        console.print(f"  rechecked {counts.rechecked} URLs: {counts.recheck_not_modified} not modified, "
                      f"{counts.recheck_changed} changed (re-embedded), {counts.recheck_failed} failed (kept)")
    if report.replayed_shards:
        console.print(f"  re-applied {report.replayed_shards} shard(s) left by an interrupted run")
    if report.labeled:
        console.print(f"  labeled {report.labeled} images")
    if report.migrated_to:
        console.print(f"  collection now serves the new version {markup(report.migrated_to)}")
    for path, error in report.failures[:SHOWN_FAILURES]:
        console.print(f"  [yellow]failed[/] {markup(path)}: {markup(error)}")
    if counts.failed > SHOWN_FAILURES:
        console.print(f"  … and {counts.failed - SHOWN_FAILURES} more: mmindex info --collection {name} --failed")


@command()
@with_options(IndexOptions, exclude=frozenset({"dry_run"}))
def schedule(
    options: IndexOptions,
    cron: Annotated[
        str | None, typer.Option("--cron", help='Cron schedule, e.g. "0 * * * *" (hourly).', show_default=False)
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", min=1, help="Or: run every N seconds.", show_default=False)
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name (default: mmindex-COLLECTION).", show_default=False)
    ] = None,
    embed_deployment: Annotated[
        str | None,
        typer.Option(
            "--embed-deployment", show_default=False,
            help="Run shards as runs of this deployment (e.g. embed-shard/embed-shard on the gpu pool) instead of in-process.",
        ),
    ] = None,
) -> None:
    """Serve the Prefect ingest flow on a schedule (same options as `index`); runs until stopped.

    Needs the flows extra (pip install "mmindex\\[flows]") and a Prefect server (PREFECT_API_URL).
    Example: mmindex schedule ~/photos --collection photos --cron "0 * * * *"
    """
    from mmindex.pipeline.cli.serving import require_prefect_api, serve_until_stopped
    from mmindex.pipeline.errors import ConfigError
    from mmindex.pipeline.redact import redact_secrets
    from mmindex.pipeline.sources.resolve import is_url

    if (cron is None) == (interval is None):
        raise ConfigError("give either --cron EXPR or --interval SECONDS")
    settings = settings_of(options)  # validates the root and every setting like `index` does
    options.request()  # and every other option: checked here, once, rather than failing every scheduled run
    try:
        from prefect.runner import Runner

        from mmindex.flows.ingest import ingest_flow
        from mmindex.flows.params import check_no_credentials
    except ImportError as exc:
        raise ConfigError(f"mmindex schedule needs Prefect: pip install 'mmindex[flows]' ({exc})") from None
    for flag, value in (("SOURCE", options.source), ("--root", options.root), ("--qdrant-url", options.qdrant_url)):
        check_no_credentials(flag, value)  # the deployment would store them
    api_url = require_prefect_api()
    location = options.source if is_url(options.source) else Path(options.source).expanduser().resolve().as_posix()
    stored = options.model_copy(update={"source": location, "root": str(settings.root)})
    parameters: dict[str, object] = {"options": stored.given()}
    if embed_deployment:
        parameters["embed_deployment"] = embed_deployment
    deployment = name or f"mmindex-{options.collection}"
    runner = Runner(name=deployment, pause_on_shutdown=True)  # a stopped schedule makes no runs nobody serves
    runner.add_flow(
        ingest_flow, name=deployment, cron=cron, interval=interval, parameters=parameters,
        tags=["mmindex", f"collection:{options.collection}"],
        concurrency_limit=1,  # one run at a time: a run that outlasts the interval delays the next one
    )
    every = f"on cron {cron!r}" if cron is not None else f"every {interval:g} s"
    serve_until_stopped(runner, f"{markup(ingest_flow.name)}/{markup(deployment)} is being served {markup(every)} "
                                f"against {markup(redact_secrets(api_url))}; Ctrl-C or SIGTERM stops it")
