"""``mmindex``: the command line (Typer). Every command calls the same pipeline functions as the
Prefect flows; heavy imports (torch, open_clip, qdrant) happen inside the commands that need them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from typer.core import TyperGroup

from mmindex.pipeline.errors import MmindexError

err = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


class _UserErrorsAsOneLine(TyperGroup):
    """Turns an MmindexError from any command into one line on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except MmindexError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_UserErrorsAsOneLine,
    name="mmindex",
    help="Index folders of images and texts with open_clip into Parquet + Qdrant, and search them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name (alias users query).")]
RootOpt = Annotated[
    str | None,
    typer.Option(
        "--root", help="Index root (Parquet shards, embedded Qdrant, state): a folder or an fsspec URL (s3://bucket/prefix). "
        "Env: MMINDEX_ROOT.", show_default=False,
    ),
]
QdrantUrlOpt = Annotated[
    str | None,
    typer.Option("--qdrant-url", help="Qdrant server/cluster URL (else embedded). Env: QDRANT_URL (+ QDRANT_API_KEY).", show_default=False),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="auto | fp32 | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPUs with AMX/AVX-512 BF16, else fp32).", show_default=False),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(**flags: Any) -> Any:
    from pydantic import ValidationError

    from mmindex.pipeline.errors import ConfigError
    from mmindex.schemas.config import load_settings

    try:
        return load_settings(**flags)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"invalid {where}: {first['msg']}") from None


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


class _RichProgress:
    """Rich progress bar with items/s (on stderr, so --json output stays clean)."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._description = description
        self._task: Any = None

    def __enter__(self) -> _RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def start(self, total_items: int) -> None:
        self._task = self._progress.add_task(self._description, total=total_items, rate="")

    def advance(self, items: int) -> None:
        self._progress.advance(self._task, items)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:,.1f} items/s" if speed else "")


def _label_config(labels: str | None, templates: list[str] | None, threshold: float | None) -> Any:
    """The ``--labels`` flags of ``index`` as a validated label configuration (or None)."""
    from mmindex.pipeline.ingest.run import label_config

    return label_config(labels, templates, threshold)


@app.command()
def index(
    source: Annotated[Path, typer.Argument(help="Folder of images (jpg png webp gif bmp tiff) and documents (txt md html pdf).")],
    collection: CollectionOpt,
    root: RootOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="open_clip architecture, or local-dir:/path (config + weights).", show_default=False)] = None,
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Weights tag (e.g. laion2b_s34b_b79k) or checkpoint file.", show_default=False)] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per forward pass (default 64).", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Decode worker processes (default: decode threads between forward passes on CPU, spare cores on GPU).", show_default=False)] = None,
    qdrant_url: QdrantUrlOpt = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Glob on relative paths to include (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob on relative paths to exclude (repeatable).")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    source_id: Annotated[str | None, typer.Option("--source-id", help="Stable source name for item keys (default: the folder's absolute path).", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (new/changed/renamed/deleted/unchanged) and change nothing.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry items that failed before even if their files did not change.")] = False,
    no_delete: Annotated[bool, typer.Option("--no-delete", help="Keep items whose files are gone (default: remove them).")] = False,
    labels: Annotated[str | None, typer.Option("--labels", help="Zero-shot label images with these comma-separated labels (see `mmindex label`).", show_default=False)] = None,
    label_template: Annotated[list[str] | None, typer.Option("--label-template", help="Prompt template for --labels (repeatable), default 'a photo of a {}.'.")] = None,
    label_threshold: Annotated[float | None, typer.Option("--label-threshold", help="Score a label needs (softmax default 0.5).", show_default=False)] = None,
    text_model: Annotated[str | None, typer.Option("--text-model", help="Text model of a new collection's chunks (RAG): all-MiniLM-L6-v2 (default), a sentence-transformers folder, or none. Env: MMINDEX_TEXT_MODEL.", show_default=False)] = None,
    max_document_bytes: Annotated[int | None, typer.Option("--max-document-bytes", min=1, help="Fail documents bigger than this with a reason (default 256 MiB). Env: MMINDEX_MAX_DOCUMENT_BYTES.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Index SOURCE into a collection; re-runs only embed what changed.

    Example: mmindex index ~/photos --collection photos
    """
    from mmindex.pipeline.ingest.report import index_report_json, print_index_report
    from mmindex.pipeline.ingest.run import IndexRequest, index_source

    settings = _settings(
        root=root, model=model, pretrained=pretrained, device=device, precision=precision,
        batch_size=batch_size, workers=workers, qdrant_url=qdrant_url, text_model=text_model,
        max_document_bytes=max_document_bytes,
    )
    request = IndexRequest(
        source=source.expanduser(),
        collection=collection,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        include_hidden=hidden,
        source_id=source_id,
        dry_run=dry_run,
        retry_failed=retry_failed,
        delete_missing=not no_delete,
        labels=_label_config(labels, label_template, label_threshold),
    )
    with _RichProgress(f"indexing {collection}") as progress:
        report = index_source(request, settings, progress)
    if as_json:
        _emit_json(index_report_json(report))
    else:
        print_index_report(err, report)


@app.command()
def query(
    collection: CollectionOpt,
    text: Annotated[str | None, typer.Argument(help="Text to search for.", show_default=False)] = None,
    more_texts: Annotated[list[str] | None, typer.Option("--text", help="Another text to fuse in (repeatable).", show_default=False)] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", help="Image file to search with (repeatable).", show_default=False)] = None,
    like: Annotated[list[str] | None, typer.Option("--like", help="More like this stored item: key, point id or indexed file (repeatable; never returned).", show_default=False)] = None,
    not_text: Annotated[list[str] | None, typer.Option("--not", help="Text to push away from (repeatable).", show_default=False)] = None,
    not_image: Annotated[list[Path] | None, typer.Option("--not-image", help="Image file to push away from (repeatable).", show_default=False)] = None,
    not_like: Annotated[list[str] | None, typer.Option("--not-like", help="Stored item to push away from (repeatable).", show_default=False)] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="One weight per query part, comma-separated, in the order: texts, images, likes, --not, --not-image, --not-like (default 1 each, 0.5 for negatives).", show_default=False)] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Filter: f=v, f!=v, f=a,b, f>=x, f<=x, f>x, f<x (repeatable, ANDed). modality=image|text, labels=cat, ...")] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, help="Number of results.")] = 10,
    mmr: Annotated[bool, typer.Option("--mmr", help="Diversify results with Qdrant's MMR.")] = False,
    diversity: Annotated[float, typer.Option("--diversity", min=0.0, max=1.0, help="MMR diversity: 0 relevance only, 1 most diverse.")] = 0.5,
    mmr_candidates: Annotated[int, typer.Option("--mmr-candidates", min=1, max=16384, help="Nearest candidates MMR re-ranks.")] = 100,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop hits with a lower cosine similarity to the query.", show_default=False)] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Also write the results as a self-contained HTML gallery.", show_default=False)] = None,
    mode: Annotated[str, typer.Option("--mode", help="auto | clip | dense | sparse | hybrid. dense: text model; sparse: BM25; hybrid: both fused by RRF; clip: CLIP (finds images too). auto: hybrid for one text on a document collection with a text model, else clip.")] = "auto",
    root: RootOpt = None,
    device: DeviceOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection by texts, images and stored items, fused into one query vector.

    RAG passages: mmindex query "how do I rotate the key?" -c docs --mode hybrid (or dense, sparse).

    Examples: mmindex query "a dog on a beach" -c photos --limit 5;
    mmindex query --image cat.jpg -c photos --where modality=text --json;
    mmindex query --image street.jpg --text "at night" --weights 0.7,0.3 --not blurry -c photos --html out.html;
    mmindex query --like ~/photos/cat.jpg -c photos --mmr
    """
    from mmindex.pipeline.search.fusion import parse_weights
    from mmindex.pipeline.search.query import SearchQuery, parts_from_flags, search_result
    from mmindex.pipeline.store.store import MmrParams

    settings = _settings(root=root, device=device, qdrant_url=qdrant_url)
    plain_text = bool(text) and not (more_texts or image or like or not_text or not_image or not_like or weights
                                     or mmr or min_score is not None or html_out is not None)
    if _query_passages(collection, text or "", where or [], limit, mode, plain_text, settings, as_json):
        return
    parts = parts_from_flags(
        texts=[t for t in (text, *(more_texts or ())) if t],
        images=image or (),
        likes=like or (),
        not_texts=not_text or (),
        not_images=not_image or (),
        not_likes=not_like or (),
        weights=None if weights is None else parse_weights(weights),
    )
    request = SearchQuery(
        collection, where=tuple(where or ()), limit=limit, parts=parts,
        mmr=MmrParams(diversity, mmr_candidates) if mmr else None, min_score=min_score,
    )
    result = search_result(request, settings)
    hits = result.hits
    if html_out is not None:
        from mmindex.pipeline.search.gallery import write_result_gallery

        written = write_result_gallery(html_out, result, settings.max_image_pixels)
        err.print(f"[green]wrote[/] gallery of {len(hits)} results to {written}", highlight=False, soft_wrap=True)
    if as_json:
        _emit_json([hit.as_json() for hit in hits])
        return
    if len(result.fused.parts) > 1:
        out.print(f"query: {result.describe_query()}")
    table = Table("#", "score", "modality", "key", "text / caption", "labels", box=None, pad_edge=False)
    table.columns[3].overflow = "fold"
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join((hit.text or "").split())
        table.add_row(str(rank), f"{hit.score:.4f}", hit.modality, hit.key, snippet[:80], ", ".join(hit.labels))
    out.print(table if hits else "no results")


def _query_passages(
    collection: str, text: str, where: list[str], limit: int, mode: str, plain_text: bool, settings: Any, as_json: bool
) -> bool:
    """Answer ``mmindex query`` with RAG passages when ``--mode`` (or ``auto``) says so."""
    from mmindex.pipeline.search.retriever import RETRIEVE_MODES, passage_mode

    if mode not in RETRIEVE_MODES:
        raise typer.BadParameter(f"use one of {', '.join(RETRIEVE_MODES)}", param_hint="--mode")
    from mmindex.api import Index

    with Index(collection, settings=settings) as index:
        chosen = passage_mode(mode, index.state, lambda: index.store, plain_text)
        if chosen is None:
            return False
        passages = index.retrieve(text, limit, where=where, mode=chosen)
    if as_json:
        _emit_json([passage.as_json() for passage in passages])
        return True
    table = Table("#", "score", "source", "section", "text", box=None, pad_edge=False)
    table.columns[2].overflow = "fold"
    for rank, passage in enumerate(passages, 1):
        snippet = " ".join(passage.text.split())
        table.add_row(str(rank), f"{passage.score:.4f}", passage.source, " > ".join(passage.heading_path), snippet[:80])
    out.print(table if passages else "no results")
    return True


@app.command()
def label(
    collection: CollectionOpt,
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated labels, e.g. cat,dog,car (any language the model reads).", show_default=False)] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="UTF-8 file with one label per line (# comments).", show_default=False)] = None,
    template: Annotated[list[str] | None, typer.Option("--template", help="Prompt template with {} for the label (repeatable; default 'a photo of a {}.').", show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Keep labels scoring at least this (default: 0.5 softmax, 0.25 cosine).", show_default=False)] = None,
    scoring: Annotated[str, typer.Option("--scoring", help="softmax: probability among the labels; cosine: raw similarity.")] = "softmax",
    root: RootOpt = None,
    device: DeviceOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Zero-shot label every image of a collection; labels are stored in the payload (--where labels=cat).

    Examples: mmindex label -c photos --labels cat,dog,car;
    mmindex label -c photos --labels-file labels.txt --template "a photo of a {}." --template "a drawing of a {}."
    """
    from mmindex.pipeline.errors import ConfigError
    from mmindex.pipeline.search.labels import DEFAULT_TEMPLATES, apply_labels, read_labels_file, split_labels

    if (labels is None) == (labels_file is None):
        raise ConfigError("give either --labels a,b,c or --labels-file FILE")
    if scoring not in ("softmax", "cosine"):
        raise ConfigError(f"--scoring must be softmax or cosine, not {scoring!r}")
    names = split_labels(labels) if labels is not None else read_labels_file(labels_file)  # type: ignore[arg-type]
    settings = _settings(root=root, device=device, qdrant_url=qdrant_url)
    with _RichProgress(f"labeling {collection}") as progress:
        report = apply_labels(
            settings, collection, names, tuple(template or DEFAULT_TEMPLATES), threshold,
            scoring=scoring,  # type: ignore[arg-type]
            progress=progress,
        )
    if as_json:
        _emit_json(report.as_json())
        return
    err.print(
        f"[green]labeled[/] {report.images} images of [bold]{collection}[/]: {report.labeled} with a label "
        f"({report.scoring} ≥ {report.threshold:g}, {report.seconds:.1f}s)"
    )
    table = Table("label", "images", box=None, pad_edge=False)
    for name, count in report.counts.items():
        table.add_row(name, str(count))
    out.print(table)


@app.command()
def info(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.", show_default=False)] = None,
    failed: Annotated[bool, typer.Option("--failed", help="List failed items with their reasons.")] = False,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show collections (points, failed items, embedder, root), or --failed items with reasons."""
    from mmindex.pipeline.manage.info import collection_failures, collection_infos

    settings = _settings(root=root, qdrant_url=qdrant_url)
    if failed:
        from mmindex.pipeline.errors import ConfigError

        if not collection:
            raise ConfigError("--failed needs --collection NAME")
        items = collection_failures(settings, collection)
        if as_json:
            _emit_json([{"key": item.key, "path": item.path, "modality": item.modality, "error": item.error} for item in items])
            return
        table = Table("path", "reason", box=None, pad_edge=False)
        for item in items:
            table.add_row(item.path, item.error)
        out.print(table if items else f"no failed items in {collection}")
        return
    infos = collection_infos(settings, collection)
    if as_json:
        _emit_json({"root": str(settings.root), "collections": [entry.as_json() for entry in infos]})
        return
    out.print(f"index root: {settings.root}")
    if not infos:
        out.print("no collections yet: mmindex index FOLDER --collection NAME")
    for entry in infos:
        out.print(
            f"[bold]{entry.name}[/]  points={entry.points}  failed={entry.failed}  images={entry.images}  "
            f"text_chunks={entry.text_chunks}  shards={entry.shards}\n"
            f"  embedder={entry.embedder_id}  dim={entry.dim}  backend={entry.backend}"
            + (f"\n  text model={entry.text_embedder_id} (+ BM25)" if entry.text_embedder_id else "")
        )
        if entry.last_run is not None:
            run = entry.last_run
            out.print(
                f"  last run {run.started_at:%Y-%m-%d %H:%M:%S}: new={run.new} changed={run.changed} "
                f"renamed={run.renamed} deleted={run.deleted} unchanged={run.unchanged} embedded={run.embedded} "
                f"failed={run.failed} ({run.seconds:.1f}s)"
            )


@app.command()
def rebuild(
    collection: CollectionOpt,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
) -> None:
    """Drop and rebuild the Qdrant collection from the Parquet shards alone (no model needed)."""
    from mmindex.pipeline.manage.maintenance import rebuild_collection

    settings = _settings(root=root, qdrant_url=qdrant_url)
    points = rebuild_collection(settings, collection)
    err.print(f"[green]rebuilt[/] {collection}: {points} points from Parquet")


@app.command()
def migrate(
    collection: CollectionOpt,
    model: Annotated[str, typer.Option("--model", help="New open_clip architecture or local-dir:/path.")],
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Weights tag or checkpoint file.", show_default=False)] = None,
    root: RootOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed every source of a collection with another model; queries keep using the old
    version until the new one is complete, then the collection name switches to it."""
    from mmindex.pipeline.embed.model import ModelSpec
    from mmindex.pipeline.ingest.report import index_report_json, print_index_report
    from mmindex.pipeline.manage.maintenance import migrate_collection

    settings = _settings(root=root, device=device, precision=precision, qdrant_url=qdrant_url)
    with _RichProgress(f"migrating {collection}") as progress:
        report = migrate_collection(settings, collection, ModelSpec(model, pretrained), progress)
    if as_json:
        _emit_json(index_report_json(report))
    else:
        print_index_report(err, report)


@app.command()
def versions(
    collection: CollectionOpt,
    drop: Annotated[str | None, typer.Option("--drop", help="Remove this previous version (Qdrant collection + shards).", show_default=False)] = None,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a collection's versions (current, building, previous), or --drop an old one."""
    from mmindex.pipeline.manage.maintenance import drop_version, list_versions

    settings = _settings(root=root, qdrant_url=qdrant_url)
    if drop:
        drop_version(settings, collection, drop)
        err.print(f"[green]dropped[/] {drop}")
        return
    found = list_versions(settings, collection)
    if as_json:
        _emit_json([vars_of(entry) for entry in found])
        return
    table = Table("role", "version", "embedder", "dim", "points", "shards", box=None, pad_edge=False)
    for entry in found:
        table.add_row(entry.role, entry.physical_name, entry.embedder_id, str(entry.dim), str(entry.points), str(entry.shards))
    out.print(table)


def vars_of(entry: Any) -> dict[str, Any]:
    """A slotted dataclass as a dict."""
    import dataclasses

    return dataclasses.asdict(entry)


@app.command()
def models(
    architecture: Annotated[str | None, typer.Argument(help="Only tags of this architecture.", show_default=False)] = None,
) -> None:
    """List open_clip architectures and their pretrained weight tags."""
    import open_clip

    for name, tag in open_clip.list_pretrained():
        if architecture is None or name == architecture:
            typer.echo(f"{name}\t{tag}")


@app.command()
def schedule(
    source: Annotated[Path, typer.Argument(help="Folder to index on every scheduled run.")],
    collection: CollectionOpt,
    cron: Annotated[str | None, typer.Option("--cron", help='Cron schedule, e.g. "0 * * * *" (hourly).', show_default=False)] = None,
    interval: Annotated[float | None, typer.Option("--interval", min=1, help="Or: run every N seconds.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="Deployment name (default: mmindex-COLLECTION).", show_default=False)] = None,
    embed_deployment: Annotated[str | None, typer.Option("--embed-deployment", help="Run shards as runs of this deployment (e.g. embed-shard/embed-shard on the gpu pool) instead of in-process.", show_default=False)] = None,
    root: RootOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="open_clip architecture, or local-dir:/path.", show_default=False)] = None,
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Weights tag or checkpoint file.", show_default=False)] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per forward pass.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Decode worker processes.", show_default=False)] = None,
    qdrant_url: QdrantUrlOpt = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Glob on relative paths to include (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob on relative paths to exclude (repeatable).")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    source_id: Annotated[str | None, typer.Option("--source-id", help="Stable source name for item keys.", show_default=False)] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry failed items on every run.")] = False,
    no_delete: Annotated[bool, typer.Option("--no-delete", help="Keep items whose files are gone.")] = False,
    labels: Annotated[str | None, typer.Option("--labels", help="Zero-shot labels (comma-separated).", show_default=False)] = None,
    label_template: Annotated[list[str] | None, typer.Option("--label-template", help="Prompt template for --labels (repeatable).")] = None,
    label_threshold: Annotated[float | None, typer.Option("--label-threshold", help="Score a label needs.", show_default=False)] = None,
    text_model: Annotated[str | None, typer.Option("--text-model", help="Text model of a new collection's chunks (as for `index`).", show_default=False)] = None,
) -> None:
    """Serve the Prefect ingest flow on a schedule (same options as `index`); runs until stopped.

    Needs the flows extra (pip install "mmindex[flows]") and a Prefect API (PREFECT_API_URL).
    Example: mmindex schedule ~/photos --collection photos --cron "0 * * * *"
    """
    from mmindex.pipeline.errors import ConfigError

    if (cron is None) == (interval is None):
        raise ConfigError("give either --cron EXPR or --interval SECONDS")
    try:
        from mmindex.flows.ingest import ingest_flow
    except ImportError as exc:
        raise ConfigError(f"mmindex schedule needs Prefect: pip install 'mmindex[flows]' ({exc})") from None
    settings = _settings(root=root)  # validates the root like `index` does
    parameters = {
        "source": source.expanduser().resolve().as_posix(), "collection": collection, "root": str(settings.root),
        "model": model, "pretrained": pretrained, "device": device, "precision": precision, "batch_size": batch_size,
        "workers": workers, "qdrant_url": qdrant_url, "include": include or [], "exclude": exclude or [],
        "hidden": hidden, "source_id": source_id, "retry_failed": retry_failed, "no_delete": no_delete,
        "labels": labels, "label_template": label_template or [], "label_threshold": label_threshold,
        "text_model": text_model, "embed_deployment": embed_deployment,
    }
    ingest_flow.serve(
        name=name or f"mmindex-{collection}", cron=cron, interval=interval,
        parameters={key: value for key, value in parameters.items() if value is not None},
        tags=["mmindex", f"collection:{collection}"],
        global_limit=1,  # one run at a time: a run that outlasts the interval delays the next one
    )


@app.callback()
def _configure(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    import warnings

    from PIL import Image

    # Decoding checks every image's pixel count against --max-pixels itself; Pillow's own
    # warning for large images would only repeat that as noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
