"""``mmindex index`` and ``mmindex schedule``, and how a run's report reads for people."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mmindex.pipeline.cli.app import (
    CollectionOpt,
    DeviceOpt,
    JsonOpt,
    PrecisionOpt,
    QdrantUrlOpt,
    RichProgress,
    RootOpt,
    command,
    emit_json,
    load_cli_settings,
)
from mmindex.pipeline.cli.terminal import err, markup

if TYPE_CHECKING:
    from rich.console import Console

    from mmindex.pipeline.ingest.run import IndexReport

SHOWN_PER_KIND = 10
SHOWN_FAILURES = 10

SourceArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE", show_default=False,
        help="Folder of images (jpg png webp gif bmp tiff) and documents (txt md html pdf); a URL manifest "
        "(.csv .tsv .jsonl .json .parquet, optionally .gz); an object-storage prefix (s3://bucket/photos/); "
        "WebDataset tars (x.tar, shards/{000000..000099}.tar). Paths or fsspec URLs.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="open_clip architecture, or local-dir:/path (config + weights).", show_default=False),
]
PretrainedOpt = Annotated[
    str | None,
    typer.Option("--pretrained", help="Weights tag (e.g. laion2b_s34b_b79k) or checkpoint file.", show_default=False),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Images per forward pass (default 64).", show_default=False)
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", min=0, show_default=False,
        help="Decode worker processes (default: decode threads between forward passes on CPU, spare cores on GPU).",
    ),
]
ShardSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--shard-size", min=1, max=65536, show_default=False,
        help="Items per shard, the unit of work, retry and (with Prefect workers) distribution (default 1024). "
        "Env: MMINDEX_SHARD_SIZE.",
    ),
]
IncludeOpt = Annotated[list[str] | None, typer.Option("--include", help="Glob on relative paths to include (repeatable).")]
ExcludeOpt = Annotated[list[str] | None, typer.Option("--exclude", help="Glob on relative paths to exclude (repeatable).")]
HiddenOpt = Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")]
SourceIdOpt = Annotated[
    str | None,
    typer.Option(
        "--source-id", help="Stable source name for item keys (default: the folder's absolute path).", show_default=False
    ),
]
NoDeleteOpt = Annotated[bool, typer.Option("--no-delete", help="Keep items whose files are gone (default: remove them).")]
LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels", help="Zero-shot label images with these comma-separated labels (see `mmindex label`).",
        show_default=False,
    ),
]
LabelTemplateOpt = Annotated[
    list[str] | None,
    typer.Option("--label-template", help="Prompt template for --labels (repeatable), default 'a photo of a {}.'."),
]
LabelThresholdOpt = Annotated[
    float | None, typer.Option("--label-threshold", help="Score a label needs (softmax default 0.5).", show_default=False)
]
TextModelOpt = Annotated[
    str | None,
    typer.Option(
        "--text-model", show_default=False,
        help="Text model of a new collection's chunks (RAG): all-MiniLM-L6-v2 (default), a sentence-transformers "
        "folder, or none. Env: MMINDEX_TEXT_MODEL.",
    ),
]
MaxDocumentBytesOpt = Annotated[
    int | None,
    typer.Option(
        "--max-document-bytes", min=1, show_default=False,
        help="Fail documents bigger than this with a reason (default 256 MiB). Env: MMINDEX_MAX_DOCUMENT_BYTES.",
    ),
]


# -- Source options (sources beyond a folder): the kind of SOURCE, a manifest's columns, fetching. --
# One block, mirrored by `schedule` and the ingest flow's parameters; see sources/resolve.py.
FormatOpt = Annotated[
    str | None, typer.Option("--format", show_default=False,
                              help="Force the kind of SOURCE: folder, manifest, prefix (fsspec URL) or webdataset.")
]
UrlColumnOpt = Annotated[
    str | None, typer.Option("--url-column", help="Manifest column of URLs (default: url, URL or image_url).",
                             show_default=False)
]
CaptionColumnOpt = Annotated[
    str | None, typer.Option("--caption-column", help="Manifest column of captions (default: caption, TEXT or text).",
                             show_default=False)
]
KeyColumnOpt = Annotated[
    str | None, typer.Option("--key-column", help="Manifest column of item keys (default: the normalized URL).",
                             show_default=False)
]
FetchTimeoutOpt = Annotated[
    float | None, typer.Option("--fetch-timeout", help="Total seconds per fetched item, body included (default 30).",
                               show_default=False)
]
MaxBytesOpt = Annotated[
    int | None, typer.Option("--max-bytes", help="Largest body fetched, in bytes (default 50000000).",
                             show_default=False)
]
FetchConcurrencyOpt = Annotated[
    int | None, typer.Option("--fetch-concurrency", help="Fetches in flight (default 16).", show_default=False)
]
FetchPerHostOpt = Annotated[
    int | None, typer.Option("--fetch-per-host", help="Fetches in flight per host (default 8).", show_default=False)
]
FetchRetriesOpt = Annotated[
    int | None, typer.Option("--fetch-retries", help="Retries of transient failures (default 2).", show_default=False)
]
AllowPrivateOpt = Annotated[
    bool, typer.Option("--allow-private-network", help="Let manifest URLs reach loopback/private/link-local addresses.")
]
AllowNetworkOpt = Annotated[
    list[str] | None, typer.Option("--allow-network", help="Let manifest URLs reach this CIDR (repeatable).")
]
FollowLinksOpt = Annotated[
    bool, typer.Option("--follow-links-outside", help="Also follow links that leave the folder (default: skip them).")
]
UserAgentTokenOpt = Annotated[
    str | None, typer.Option("--user-agent-token", help="Our name in X-Robots-Tag opt-outs (`NAME: noai`).",
                             show_default=False)
]


@command()
def index(
    source: SourceArg,
    collection: CollectionOpt,
    root: RootOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    hidden: HiddenOpt = False,
    source_id: SourceIdOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (new/changed/renamed/deleted/unchanged, the first 10 items of each) and change nothing.",
        ),
    ] = False,
    list_all: Annotated[bool, typer.Option("--list", help="With --dry-run: list every planned item.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry items that failed before even if their files did not change.")
    ] = False,
    no_delete: NoDeleteOpt = False,
    labels: LabelsOpt = None,
    label_template: LabelTemplateOpt = None,
    label_threshold: LabelThresholdOpt = None,
    text_model: TextModelOpt = None,
    max_document_bytes: MaxDocumentBytesOpt = None,
    shard_size: ShardSizeOpt = None,
    as_json: JsonOpt = False,
    # -- source options (see the block above) --
    format: FormatOpt = None,
    url_column: UrlColumnOpt = None,
    caption_column: CaptionColumnOpt = None,
    key_column: KeyColumnOpt = None,
    fetch_timeout: FetchTimeoutOpt = None,
    max_bytes: MaxBytesOpt = None,
    fetch_concurrency: FetchConcurrencyOpt = None,
    fetch_per_host: FetchPerHostOpt = None,
    fetch_retries: FetchRetriesOpt = None,
    allow_private_network: AllowPrivateOpt = False,
    allow_network: AllowNetworkOpt = None,
    user_agent_token: UserAgentTokenOpt = None,
    follow_links_outside: FollowLinksOpt = False,
) -> None:
    """Index SOURCE into a collection; re-runs only embed what changed.

    Example: mmindex index ~/photos --collection photos
    """
    from mmindex.pipeline.errors import ConfigError
    from mmindex.pipeline.ingest.report import index_report_json
    from mmindex.pipeline.ingest.run import IndexRequest, index_source, label_config
    from mmindex.pipeline.sources.resolve import source_options

    if list_all and not dry_run:
        raise ConfigError("--list goes with --dry-run")
    settings = load_cli_settings(
        root=root, model=model, pretrained=pretrained, device=device, precision=precision,
        batch_size=batch_size, workers=workers, qdrant_url=qdrant_url, text_model=text_model, shard_size=shard_size,
        max_document_bytes=max_document_bytes,
    )
    request = IndexRequest(
        source=source,
        collection=collection,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        include_hidden=hidden,
        source_id=source_id,
        dry_run=dry_run,
        retry_failed=retry_failed,
        delete_missing=not no_delete,
        labels=label_config(labels, label_template, label_threshold),
        source_options=source_options(
            format=format, url_column=url_column, caption_column=caption_column, key_column=key_column,
            fetch_timeout=fetch_timeout, max_bytes=max_bytes, fetch_concurrency=fetch_concurrency,
            fetch_per_host=fetch_per_host, fetch_retries=fetch_retries, allow_private_network=allow_private_network,
            allow_network=allow_network, user_agent_token=user_agent_token, follow_links_outside=follow_links_outside,
        ),
    )
    with RichProgress(f"indexing {collection}") as progress:
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
def schedule(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Folder or manifest to index on every scheduled run.",
                                          show_default=False)],
    collection: CollectionOpt,
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
    root: RootOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    hidden: HiddenOpt = False,
    source_id: SourceIdOpt = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry failed items on every run.")] = False,
    no_delete: NoDeleteOpt = False,
    labels: LabelsOpt = None,
    label_template: LabelTemplateOpt = None,
    label_threshold: LabelThresholdOpt = None,
    text_model: TextModelOpt = None,
    max_document_bytes: MaxDocumentBytesOpt = None,
    shard_size: ShardSizeOpt = None,
    # -- source options (see the block above) --
    format: FormatOpt = None,
    url_column: UrlColumnOpt = None,
    caption_column: CaptionColumnOpt = None,
    key_column: KeyColumnOpt = None,
    fetch_timeout: FetchTimeoutOpt = None,
    max_bytes: MaxBytesOpt = None,
    fetch_concurrency: FetchConcurrencyOpt = None,
    fetch_per_host: FetchPerHostOpt = None,
    fetch_retries: FetchRetriesOpt = None,
    allow_private_network: AllowPrivateOpt = False,
    allow_network: AllowNetworkOpt = None,
    user_agent_token: UserAgentTokenOpt = None,
    follow_links_outside: FollowLinksOpt = False,
) -> None:
    """Serve the Prefect ingest flow on a schedule (same options as `index`); runs until stopped.

    Needs the flows extra (pip install "mmindex\\[flows]") and a Prefect server (PREFECT_API_URL).
    Example: mmindex schedule ~/photos --collection photos --cron "0 * * * *"
    """
    from mmindex.pipeline.cli.serving import require_prefect_api, serve_until_stopped
    from mmindex.pipeline.errors import ConfigError
    from mmindex.pipeline.sources.resolve import is_url, source_options

    if (cron is None) == (interval is None):
        raise ConfigError("give either --cron EXPR or --interval SECONDS")
    try:
        from mmindex.flows.ingest import ingest_flow
    except ImportError as exc:
        raise ConfigError(f"mmindex schedule needs Prefect: pip install 'mmindex[flows]' ({exc})") from None
    require_prefect_api()
    settings = load_cli_settings(root=root)  # validates the root like `index` does
    source_parameters = {
        "format": format, "url_column": url_column, "caption_column": caption_column, "key_column": key_column,
        "fetch_timeout": fetch_timeout, "max_bytes": max_bytes, "fetch_concurrency": fetch_concurrency,
        "fetch_per_host": fetch_per_host, "fetch_retries": fetch_retries,
        "allow_private_network": allow_private_network, "allow_network": allow_network or [],
        "user_agent_token": user_agent_token, "follow_links_outside": follow_links_outside,
    }
    source_options(  # validated here, once, rather than failing every scheduled run
        format=format, url_column=url_column, caption_column=caption_column, key_column=key_column,
        fetch_timeout=fetch_timeout, max_bytes=max_bytes, fetch_concurrency=fetch_concurrency,
        fetch_per_host=fetch_per_host, fetch_retries=fetch_retries, allow_private_network=allow_private_network,
        allow_network=allow_network, user_agent_token=user_agent_token, follow_links_outside=follow_links_outside,
    )
    location = source if is_url(source) else Path(source).expanduser().resolve().as_posix()
    parameters = {
        "source": location, "collection": collection, "root": str(settings.root),
        "model": model, "pretrained": pretrained, "device": device, "precision": precision, "batch_size": batch_size,
        "workers": workers, "qdrant_url": qdrant_url, "include": include or [], "exclude": exclude or [],
        "hidden": hidden, "source_id": source_id, "retry_failed": retry_failed, "no_delete": no_delete,
        "labels": labels, "label_template": label_template or [], "label_threshold": label_threshold,
        "text_model": text_model, "max_document_bytes": max_document_bytes, "shard_size": shard_size,
        "embed_deployment": embed_deployment, **source_parameters,
    }
    serve_until_stopped(lambda: ingest_flow.serve(
        name=name or f"mmindex-{collection}", cron=cron, interval=interval,
        parameters={key: value for key, value in parameters.items() if value is not None},
        tags=["mmindex", f"collection:{collection}"],
        global_limit=1,  # one run at a time: a run that outlasts the interval delays the next one
    ))
