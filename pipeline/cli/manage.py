"""``mmindex info``, ``verify``, ``repair``, ``rebuild``, ``migrate``, ``versions``, ``delete`` and ``models``."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.table import Table

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
from mmindex.pipeline.cli.ingest import print_index_report
from mmindex.pipeline.cli.terminal import cell, cells, err, markup, out, path_cell

CLOSE_MODEL_NAMES = 5


@command()
def info(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.", show_default=False)] = None,
    failed: Annotated[bool, typer.Option("--failed", help="List failed items with their reasons.")] = False,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show collections (points, failed items, embedder, root), or --failed items with reasons."""
    from mmindex.pipeline.manage.info import collection_failures, collection_infos

    settings = load_cli_settings(root=root, qdrant_url=qdrant_url)
    if failed:
        from mmindex.pipeline.errors import ConfigError

        if not collection:
            raise ConfigError("--failed needs --collection NAME")
        items = collection_failures(settings, collection)
        if as_json:
            emit_json([{"key": item.key, "path": item.path, "modality": item.modality, "error": item.error} for item in items])
            return
        table = Table("path", "reason", box=None, pad_edge=False)
        for item in items:
            table.add_row(path_cell(item.path), cell(item.error))
        out.print(table if items else f"no failed items in {markup(collection)}")
        return
    infos = collection_infos(settings, collection)
    if as_json:
        emit_json({"root": str(settings.root), "collections": [entry.as_json() for entry in infos]})
        return
    out.print(f"index root: {markup(settings.root)}")
    if not infos:
        out.print("no collections yet: mmindex index FOLDER --collection NAME")
    for entry in infos:
        out.print(
            f"[bold]{markup(entry.name)}[/]  points={entry.points}  failed={entry.failed}  images={entry.images}  "
            f"text_chunks={entry.text_chunks}  shards={entry.shards}\n"
            f"  embedder={markup(entry.embedder_id)}  dim={entry.dim}  backend={markup(entry.backend)}"
            + (f"\n  text model={markup(entry.text_embedder_id)} (+ BM25)" if entry.text_embedder_id else "")
        )
        if entry.last_run is not None:
            run = entry.last_run
            out.print(
                f"  last run {run.started_at:%Y-%m-%d %H:%M:%S}: new={run.new} changed={run.changed} "
                f"renamed={run.renamed} deleted={run.deleted} unchanged={run.unchanged} embedded={run.embedded} "
                f"failed={run.failed} ({run.seconds:.1f}s)"
            )


@command()
def verify(
    collection: CollectionOpt,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every shard (sha256, size, rows) against what was recorded when it was written, the
    catalog and the vector store's point count; exit 1 with the findings, 0 when clean."""
    from mmindex.pipeline.collection import Collection
    from mmindex.pipeline.manage.verify import verify_collection

    settings = load_cli_settings(root=root, qdrant_url=qdrant_url)
    with Collection.open(settings, collection) as opened:
        report = verify_collection(opened)
    if as_json:
        emit_json(report.as_json())
    else:
        for finding in report.findings:
            out.print(f"[red]{finding.kind}[/]: {markup(finding.path)}: {markup(finding.detail)}")
        name = markup(collection)
        if report.clean:
            err.print(f"[green]ok[/] {name}: {report.shards_checked} shards verified")
        else:
            err.print(f"{len(report.findings)} finding(s) in {name} ({report.shards_checked} shards checked): "
                      f"run `mmindex repair -c {name}`")
    if not report.clean:
        raise typer.Exit(1)


@command()
def repair(
    collection: CollectionOpt,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quarantine damaged or lost shards (moved to <root>/quarantine, never deleted), re-queue their
    items for the next `mmindex index`, and rebuild the vector store from the intact shards."""
    from mmindex.pipeline.manage.repair import repair_collection

    settings = load_cli_settings(root=root, qdrant_url=qdrant_url)
    report = repair_collection(settings, collection)
    if as_json:
        emit_json(dataclasses.asdict(report))
        return
    name = markup(collection)
    if not report.changed:
        err.print(f"[green]ok[/] {name}: nothing to repair")
        return
    for path in report.quarantined:
        err.print(f"quarantined {markup(path)}")
    for path in report.missing:
        err.print(f"lost {markup(path)}")
    for path in report.recorded:
        err.print(f"recorded {markup(path)} (it had no integrity record)")
    gone = [item for item in report.lost_items if item.source_gone]
    for item in gone:
        err.print(f"  [yellow]source gone too[/]: {markup(item.uri)} cannot be re-embedded")
    if report.points is not None:
        err.print(f"[green]rebuilt[/] {name}: {report.points} points from the intact shards")
    if report.quarantined or report.missing:
        unknown = f" (and the items of {report.unknown_shards} shard(s) the catalog did not name)" if report.unknown_shards else ""
        err.print(f"{len(report.lost_items) - len(gone)} lost item(s){unknown} are re-embedded by the next index run:")
        for source in report.sources:
            err.print(f"  mmindex index {markup(source)} -c {name}")


@command()
def rebuild(
    collection: CollectionOpt,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
) -> None:
    """Rebuild the Qdrant collection from the Parquet shards alone, never leaving it worse.

    The shards are checked first (nothing changes if one is damaged: see `mmindex repair`); the
    new collection is built aside and replaces the old one only once complete, so a failed
    rebuild leaves the old one serving. A damaged embedded store is replaced the same way.

    Remembered labels are applied again from the stored image vectors (that loads the model's
    text tower; without it the labels are left to re-apply with `mmindex label`).
    """
    from mmindex.pipeline.manage.maintenance import rebuild_collection

    settings = load_cli_settings(root=root, qdrant_url=qdrant_url)
    report = rebuild_collection(settings, collection)
    name = markup(collection)
    err.print(f"[green]rebuilt[/] {name}: {report.points} points from Parquet")
    if report.labeled is not None:
        err.print(f"  labeled {report.labeled} images again with the remembered labels")
    if report.labels_not_reapplied is not None:
        err.print(f"  [yellow]labels not re-applied[/] ({markup(report.labels_not_reapplied)}): "
                  f"run `mmindex label -c {name} --labels ...` once the model is available")


@command()
def migrate(
    collection: CollectionOpt,
    model: Annotated[str, typer.Option("--model", help="New open_clip architecture or local-dir:/path.")],
    pretrained: Annotated[
        str | None, typer.Option("--pretrained", help="Weights tag or checkpoint file.", show_default=False)
    ] = None,
    root: RootOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-embed every source of a collection with another model.

    Queries keep using the old version until the new one is complete, then the collection name
    switches to it.
    """
    from mmindex.pipeline.embed.model import ModelSpec
    from mmindex.pipeline.ingest.report import index_report_json
    from mmindex.pipeline.manage.maintenance import migrate_collection

    settings = load_cli_settings(root=root, device=device, precision=precision, qdrant_url=qdrant_url)
    with RichProgress(f"migrating {collection}") as progress:
        report = migrate_collection(settings, collection, ModelSpec(model, pretrained), progress)
    if as_json:
        emit_json(index_report_json(report))
    else:
        print_index_report(err, report)


@command()
def versions(
    collection: CollectionOpt,
    drop: Annotated[
        str | None, typer.Option("--drop", help="Remove this previous version (Qdrant collection + shards).", show_default=False)
    ] = None,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a collection's versions (current, building, previous), or --drop an old one."""
    from mmindex.pipeline.manage.maintenance import drop_version, list_versions

    settings = load_cli_settings(root=root, qdrant_url=qdrant_url)
    if drop:
        drop_version(settings, collection, drop)
        err.print(f"[green]dropped[/] {markup(drop)}")
        return
    found = list_versions(settings, collection)
    if as_json:
        emit_json([dataclasses.asdict(entry) for entry in found])
        return
    table = Table("role", "version", "embedder", "dim", "points", "shards", "provenance", box=None, pad_edge=False)
    for entry in found:
        table.add_row(*cells((entry.role, entry.physical_name, entry.embedder_id, entry.dim, entry.points, entry.shards,
                              entry.provenance or "")))
    out.print(table)


@command()
def delete(
    collection: CollectionOpt,
    source: Annotated[
        str | None,
        typer.Option(
            "--source", show_default=False,
            help="Remove only this source's items (its folder or --source-id); the collection stays.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    root: RootOpt = None,
    qdrant_url: QdrantUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a collection (every version: points, shards, catalog, runs), or one --source's items.

    Examples: mmindex delete -c photos; mmindex delete -c photos --source ~/photos/2019 --yes
    """
    from mmindex.pipeline.collection import collection_state
    from mmindex.pipeline.ingest.report import index_report_json
    from mmindex.pipeline.manage.delete import delete_collection, delete_source, source_id_of

    settings = load_cli_settings(root=root, qdrant_url=qdrant_url)
    state = collection_state(settings, collection)  # an unknown collection fails before the question
    name = markup(collection)
    if source is not None:
        what = f"every item of source {markup(source_id_of(state, source))} from collection {name}"
    else:
        what = f"collection {name} with all its versions, shards and points"
    if not yes and not typer.confirm(f"Delete {what}?", default=False, err=True):
        err.print("not deleted")
        raise typer.Exit(1)
    if source is not None:
        report = delete_source(settings, collection, source)
        if as_json:
            emit_json(index_report_json(report))
            return
        err.print(f"[green]deleted[/] {report.plan.get('deleted', 0)} items ({report.counts.points_deleted} points) "
                  f"of source {markup(source)} from {name}")
        return
    deleted = delete_collection(settings, collection)
    if as_json:
        emit_json(dataclasses.asdict(deleted))
        return
    err.print(f"[green]deleted[/] collection {name}: {len(deleted.versions)} version(s), {deleted.points} points")


@command()
def models(
    architecture: Annotated[
        str | None, typer.Argument(metavar="ARCHITECTURE", help="Only tags of this architecture.", show_default=False)
    ] = None,
) -> None:
    """List open_clip architectures and their pretrained weight tags."""
    import difflib

    import open_clip

    from mmindex.pipeline.errors import ConfigError

    found = [(name, tag) for name, tag in open_clip.list_pretrained() if architecture is None or name == architecture]
    if architecture is not None and not found:
        known = open_clip.list_models()
        if architecture not in known:
            close = difflib.get_close_matches(architecture, known, n=CLOSE_MODEL_NAMES, cutoff=0.6)
            hint = f"; close names: {', '.join(close)}" if close else "; `mmindex models` lists them all"
            raise ConfigError(f"unknown open_clip architecture {architecture!r}{hint}")
        raise ConfigError(f"{architecture} has no pretrained weight tags (use --pretrained FILE or a local-dir: model)")
    for name, tag in found:
        typer.echo(f"{name}\t{tag}")
