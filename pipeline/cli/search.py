"""``mmindex query`` and ``mmindex label``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mmindex.pipeline.cli.app import (
    CollectionOpt,
    DeviceOpt,
    JsonOpt,
    QdrantUrlOpt,
    RichProgress,
    RootOpt,
    command,
    emit_json,
    load_cli_settings,
)
from mmindex.pipeline.cli.terminal import cell, err, markup, out, path_cell
from mmindex.pipeline.search.limits import MAX_RESULTS, check_result_count
from mmindex.pipeline.search.retriever import RetrieveMode
from mmindex.schemas.state import LabelScoring

if TYPE_CHECKING:
    from mmindex.schemas.config import Settings

SNIPPET_CHARS = 80
@command()
def query(
    collection: CollectionOpt,
    text: Annotated[str | None, typer.Argument(metavar="TEXT", help="Text to search for.", show_default=False)] = None,
    more_texts: Annotated[
        list[str] | None, typer.Option("--text", help="Another text to fuse in (repeatable).", show_default=False)
    ] = None,
    image: Annotated[
        list[Path] | None, typer.Option("--image", help="Image file to search with (repeatable).", show_default=False)
    ] = None,
    like: Annotated[
        list[str] | None,
        typer.Option(
            "--like", help="More like this stored item: key, point id or indexed file; a document's path means its "
            "chunks (their mean vector). Repeatable; never returned.",
            show_default=False,
        ),
    ] = None,
    not_text: Annotated[
        list[str] | None, typer.Option("--not", help="Text to push away from (repeatable).", show_default=False)
    ] = None,
    not_image: Annotated[
        list[Path] | None, typer.Option("--not-image", help="Image file to push away from (repeatable).", show_default=False)
    ] = None,
    not_like: Annotated[
        list[str] | None, typer.Option("--not-like", help="Stored item to push away from (repeatable).", show_default=False)
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights", show_default=False,
            help="One weight per query part, comma-separated, in the order: texts, images, likes, --not, --not-image, "
            "--not-like (default 1 each, 0.5 for negatives).",
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            help="Filter: f=v, f!=v, f=a,b, f>=x, f<=x, f>x, f<x (repeatable, ANDed). modality=image|text, labels=cat, ...",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-k", help=f"Number of results (1-{MAX_RESULTS}).")] = 10,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many of the best results (paging).")] = 0,
    mmr: Annotated[bool, typer.Option("--mmr", help="Diversify results with Qdrant's MMR.")] = False,
    diversity: Annotated[
        float, typer.Option("--diversity", min=0.0, max=1.0, help="MMR diversity: 0 relevance only, 1 most diverse.")
    ] = 0.5,
    mmr_candidates: Annotated[
        int, typer.Option("--mmr-candidates", min=1, max=16384, help="Nearest candidates MMR re-ranks.")
    ] = 100,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Drop hits with a lower cosine similarity to the query.", show_default=False),
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Also write the results as a self-contained HTML gallery.", show_default=False)
    ] = None,
    mode: Annotated[
        RetrieveMode,
        typer.Option(
            "--mode",
            help="auto | clip | dense | sparse | hybrid. dense: text model; sparse: BM25; hybrid: both fused by RRF; "
            "clip: CLIP (finds images too). auto: hybrid over the text chunks for one plain text on a collection with "
            "a text model and chunks (even if it holds images too), else clip; --where modality=image also means clip.",
        ),
    ] = "auto",
    per_document: Annotated[
        int | None,
        typer.Option("--per-document", min=1, show_default=False,
                     help="RAG passages: at most N passages of one document (top-k then spans more documents)."),
    ] = None,
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

    check_result_count(limit, "--limit")  # before the collection is opened or a model loaded
    settings = load_cli_settings(root=root, device=device, qdrant_url=qdrant_url)
    plain_text = bool(text) and not (more_texts or image or like or not_text or not_image or not_like or weights
                                     or mmr or min_score is not None or html_out is not None or offset)
    if _query_passages(collection, text or "", where or [], limit, mode, plain_text, settings, as_json, per_document):
        return
    if per_document is not None:
        raise typer.BadParameter("applies to passage queries (--mode dense, sparse or hybrid)",
                                 param_hint="--per-document")
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
        mmr=MmrParams(diversity, mmr_candidates) if mmr else None, min_score=min_score, offset=offset,
    )
    result = search_result(request, settings)
    hits = result.hits
    if html_out is not None:
        from mmindex.pipeline.search.gallery import write_result_gallery

        written = write_result_gallery(html_out, result, settings)
        err.print(f"[green]wrote[/] gallery of {len(hits)} results to {markup(written)}")
    if as_json:  # the fused query's score is the cosine similarity of each hit to it
        emit_json([{**hit.as_json(), "mode": "clip", "score_kind": "cosine"} for hit in hits])
        return
    if len(result.fused.parts) > 1:
        out.print(f"query: {markup(result.describe_query())}")
    table = Table("#", "cosine", "modality", "key", "text / caption", "labels", box=None, pad_edge=False,
                  title=_mode_title("clip", len(hits)), title_justify="left")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join((hit.text or "").split())
        table.add_row(str(rank), f"{hit.score:.4f}", cell(hit.modality), path_cell(hit.key), cell(snippet[:SNIPPET_CHARS]),
                      cell(", ".join(hit.labels)))
    out.print(table if hits else f"no results ({_mode_title('clip', 0)})")


def _query_passages(
    collection: str, text: str, where: list[str], limit: int, mode: RetrieveMode, plain_text: bool, settings: Settings,
    as_json: bool, per_document: int | None = None,
) -> bool:
    """Answer ``mmindex query`` with RAG passages when ``--mode`` (or ``auto``) says so."""
    from mmindex.api import Index
    from mmindex.pipeline.search.retriever import passage_mode, score_kind

    with Index(collection, settings=settings) as index:
        chosen = passage_mode(mode, index.state, lambda: index.store, plain_text, where)
        if chosen is None:
            return False
        passages = index.retrieve(text, limit, where=where, mode=chosen, per_document=per_document)
    kind = score_kind(chosen)
    if as_json:
        emit_json([{**passage.as_json(), "mode": chosen, "score_kind": kind} for passage in passages])
        return True
    table = Table("#", kind, "source", "section", "text", box=None, pad_edge=False,
                  title=_mode_title(chosen, len(passages)), title_justify="left")
    for rank, passage in enumerate(passages, 1):
        snippet = " ".join(passage.text.split())
        table.add_row(str(rank), f"{passage.score:.4f}", path_cell(passage.source), cell(" > ".join(passage.heading_path)),
                      cell(snippet[:SNIPPET_CHARS]))
    out.print(table if passages else f"no results ({_mode_title(chosen, 0)})")
    return True


def _mode_title(mode: str, hits: int) -> str:
    """The line above a result table: which search ran (``mode hybrid``: passages fused by RRF)."""
    what = {"clip": "CLIP query over images and chunks", "dense": "text-model passages", "sparse": "BM25 passages",
            "hybrid": "text-model + BM25 passages fused by RRF"}[mode]
    return f"mode {mode}: {what}, {hits} result{'s' if hits != 1 else ''}"


@command()
def label(
    collection: CollectionOpt,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="Comma-separated labels, e.g. cat,dog,car (any language the model reads).", show_default=False
        ),
    ] = None,
    labels_file: Annotated[
        Path | None, typer.Option("--labels-file", help="UTF-8 file with one label per line (# comments).", show_default=False)
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(
            "--template", help="Prompt template with {} for the label (repeatable; default 'a photo of a {}.').",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", help="Keep labels scoring at least this (default: 0.5 softmax, 0.25 cosine).", show_default=False
        ),
    ] = None,
    scoring: Annotated[
        LabelScoring,
        typer.Option("--scoring", help="softmax: probability among the labels; cosine: raw similarity."),
    ] = "softmax",
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

    if labels is not None and labels_file is None:
        names = split_labels(labels)
    elif labels_file is not None and labels is None:
        names = read_labels_file(labels_file)
    else:
        raise ConfigError("give either --labels a,b,c or --labels-file FILE")
    settings = load_cli_settings(root=root, device=device, qdrant_url=qdrant_url)
    with RichProgress(f"labeling {collection}") as progress:
        report = apply_labels(
            settings, collection, names, tuple(template or DEFAULT_TEMPLATES), threshold, scoring=scoring, progress=progress,
        )
    if as_json:
        emit_json(report.as_json())
        return
    err.print(
        f"[green]labeled[/] {report.images} images of [bold]{markup(collection)}[/]: {report.labeled} with a label "
        f"({report.scoring} ≥ {report.threshold:g}, {report.seconds:.1f}s)"
    )
    table = Table("label", "images", box=None, pad_edge=False)
    for name, count in report.counts.items():
        table.add_row(cell(name), str(count))
    out.print(table)
