"""``mmindex``: the command line (Typer). Every command calls the same pipeline functions as the
Prefect flows; heavy imports (torch, open_clip, qdrant) happen inside the commands that need them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from .errors import MmindexError


err = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


class _UserErrorsAsOneLine(TyperGroup):
    """Turns an MmindexError from any command into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
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
    Path | None,
    typer.Option("--root", help="Index root (Parquet shards, embedded Qdrant, state). Env: MMINDEX_ROOT.", show_default=False),
]
QdrantUrlOpt = Annotated[
    str | None,
    typer.Option("--qdrant-url", help="Qdrant server/cluster URL (else embedded). Env: QDRANT_URL (+ QDRANT_API_KEY).", show_default=False),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(**flags: Any) -> Any:
    from pydantic import ValidationError  # noqa: PLC0415

    from ..schemas.config import load_settings  # noqa: PLC0415
    from .errors import ConfigError  # noqa: PLC0415

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
        from rich.progress import (  # noqa: PLC0415
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


@app.command()
def index(
    source: Annotated[Path, typer.Argument(help="Folder of images (jpg png webp gif bmp tiff) and texts (txt md).")],
    collection: CollectionOpt,
    root: RootOpt = None,
    model: Annotated[str | None, typer.Option("--model", help="open_clip architecture, or local-dir:/path (config + weights).", show_default=False)] = None,
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Weights tag (e.g. laion2b_s34b_b79k) or checkpoint file.", show_default=False)] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per forward pass (default 64).", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="Decode worker processes (default: spare cores).", show_default=False)] = None,
    qdrant_url: QdrantUrlOpt = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Glob on relative paths to include (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob on relative paths to exclude (repeatable).")] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    source_id: Annotated[str | None, typer.Option("--source-id", help="Stable source name for item keys (default: the folder's absolute path).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Embed every image and text under SOURCE into a collection.

    Example: mmindex index ~/photos --collection photos
    """
    from .ingest import IndexRequest, index_source  # noqa: PLC0415

    settings = _settings(
        root=root, model=model, pretrained=pretrained, device=device,
        batch_size=batch_size, workers=workers, qdrant_url=qdrant_url,
    )
    request = IndexRequest(
        source=source.expanduser(),
        collection=collection,
        include=tuple(include or ()),
        exclude=tuple(exclude or ()),
        include_hidden=hidden,
        source_id=source_id,
    )
    with _RichProgress(f"indexing {collection}") as progress:
        report = index_source(request, settings, progress)
    if as_json:
        _emit_json({
            "collection": report.collection, "embedder": report.embedder_id, "items": report.items_seen,
            "images": report.images, "text_chunks": report.text_chunks, "failed": report.failed,
            "points_upserted": report.points_upserted, "shards": report.shards_written,
            "seconds": round(report.seconds, 3), "items_per_second": round(report.items_per_second, 2),
            "failures": [{"path": path, "error": error} for path, error in report.failures],
        })
        return
    err.print(
        f"[green]indexed[/] {report.items_seen} items into [bold]{collection}[/]: {report.images} images, "
        f"{report.text_chunks} text chunks, {report.failed} failed "
        f"({report.items_per_second:,.1f} items/s, {report.seconds:.1f}s)"
    )
    for path, error in report.failures[:10]:
        err.print(f"  [yellow]failed[/] {path}: {error}")
    if report.failed > 10:
        err.print(f"  … and {report.failed - 10} more: mmindex info --collection {collection} --failed")


@app.command()
def query(
    collection: CollectionOpt,
    text: Annotated[str | None, typer.Argument(help="Text to search for.", show_default=False)] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Image file to search with.", show_default=False)] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="Filter: f=v, f!=v, f=a,b, f>=x, f<=x, f>x, f<x (repeatable, ANDed).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", min=1, help="Number of results.")] = 10,
    root: RootOpt = None,
    device: DeviceOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection by text, by image, or both.

    Examples: mmindex query "a dog on a beach" -c photos --limit 5;
    mmindex query --image cat.jpg -c photos --where modality=image --json
    """
    from .query import SearchQuery, search  # noqa: PLC0415

    settings = _settings(root=root, device=device, qdrant_url=qdrant_url)
    hits = search(SearchQuery(collection, text, image, tuple(where or ()), limit), settings)
    if as_json:
        _emit_json([hit.as_json() for hit in hits])
        return
    table = Table("#", "score", "modality", "key", "text / caption", box=None, pad_edge=False)
    table.columns[3].overflow = "fold"
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(str(hit.payload.get("text") or hit.payload.get("caption") or "").split())
        table.add_row(str(rank), f"{hit.score:.4f}", str(hit.payload.get("modality", "")), hit.key, snippet[:80])
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
    from .info import collection_failures, collection_infos  # noqa: PLC0415

    settings = _settings(root=root, qdrant_url=qdrant_url)
    if failed:
        from .errors import ConfigError  # noqa: PLC0415

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
        )


@app.command()
def models(
    architecture: Annotated[str | None, typer.Argument(help="Only tags of this architecture.", show_default=False)] = None,
) -> None:
    """List open_clip architectures and their pretrained weight tags."""
    import open_clip  # noqa: PLC0415

    for name, tag in open_clip.list_pretrained():
        if architecture is None or name == architecture:
            typer.echo(f"{name}\t{tag}")


@app.callback()
def _configure(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
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
