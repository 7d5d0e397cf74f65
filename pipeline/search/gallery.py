"""Result gallery: one self-contained HTML page of search hits (``mmindex query --html out.html``).

The page needs nothing else: CSS is inline and local images are embedded as small base64 JPEG
thumbnails. Only files under the collection's recorded folder roots are thumbnailed (a payload
``uri`` such as ``file:///home/u/x.png`` from a manifest row is not); remote ``http(s)`` items are
linked only when remote images are asked for. A Content-Security-Policy meta tag allows no
scripts, inline styles, and images from ``data:`` only (plus http/https with remote images). One ``<article class="card">`` per hit shows
the rank, score, thumbnail or chunk text, key payload fields and each query part's
contribution; the header shows the query, the collection and how the store was asked.
Every string from a payload is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mmindex.pipeline.errors import ConfigError, DecodeError
from mmindex.pipeline.io.atomic import write_atomic
from mmindex.pipeline.search.fusion import Contribution
from mmindex.pipeline.search.query import QueryHit, SearchResult
from mmindex.pipeline.sources.local import GENERATED_PAGE_MARKER
from mmindex.schemas.config import ImageLimits, Settings

THUMBNAIL_PX = 256
JPEG_QUALITY = 80
MAX_SOURCE_BYTES = 256 << 20
_TEXT_CHARS = 600

_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6472; --line: #d9dee7; --accent: #2f6fdf; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       background: #f4f6fa; }
header { padding: 20px 28px 12px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 6px; font-size: 20px; }
.query { font-size: 16px; margin: 4px 0; }
.query .part { display: inline-block; margin: 2px 6px 2px 0; padding: 2px 8px; border-radius: 12px;
               background: #e8f0fe; }
.query .part.negative { background: #fde8e8; }
.query img { height: 40px; vertical-align: middle; border-radius: 4px; margin-right: 4px; }
.facts { color: var(--muted); font-size: 12px; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 16px; padding: 20px 28px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; overflow: hidden;
        display: flex; flex-direction: column; }
.media { height: 200px; background: #eef1f6; display: flex; align-items: center; justify-content: center; }
.media img { max-width: 100%; max-height: 200px; object-fit: contain; display: block; }
.media.text { align-items: flex-start; justify-content: flex-start; padding: 12px; overflow: hidden;
              font-size: 13px; background: #fbfbf7; }
.media.missing { color: var(--muted); font-style: italic; }
.meta { padding: 10px 12px 12px; }
.score { font-weight: 600; }
.score .rank { color: var(--muted); margin-right: 6px; }
.key { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; color: var(--muted);
       word-break: break-all; margin: 4px 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 8px; margin: 6px 0 0; font-size: 12px; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-word; }
.labels span { display: inline-block; background: #eef7ee; border-radius: 8px; padding: 0 6px; margin: 0 4px 2px 0; }
table.why { width: 100%; border-collapse: collapse; font-size: 11px; margin-top: 6px; }
table.why td { border-top: 1px solid var(--line); padding: 2px 4px; }
table.why td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.empty { padding: 28px; color: var(--muted); }
"""


@dataclass(frozen=True, slots=True)
class GalleryHeader:
    """What the page says about the query."""

    title: str
    query: str
    collection: str
    facts: str = ""
    query_images: tuple[Path, ...] = ()
    negative_images: tuple[Path, ...] = ()
    # Folders whose files may be thumbnailed (the collection's folder sources), and whether the
    # page may load http(s) images.
    source_roots: tuple[str, ...] = ()
    remote_images: bool = False

    def content_policy(self) -> str:
        """The page's Content-Security-Policy."""
        images = "data: http: https:" if self.remote_images else "data:"
        return f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; base-uri 'none'; form-action 'none'"

    def may_thumbnail(self, path: str) -> bool:
        """Whether a local file lies (after resolving links) under one of the source roots."""
        return under_roots(path, self.source_roots)


def under_roots(path: str, roots: tuple[str, ...]) -> bool:
    """Whether a local file lies (after resolving links) under one of ``roots``."""
    real = os.path.realpath(path)
    return any(real.startswith(os.path.join(os.path.realpath(root), "")) for root in roots)


def thumbnail_jpeg(path: str | Path, limits: ImageLimits, size: int = THUMBNAIL_PX) -> bytes | None:
    """A JPEG thumbnail of a local image (at most ``size`` px a side), or ``None`` if it can't be read."""
    from mmindex.pipeline.embed.decode import decode_image, read_regular_file

    try:
        # A JPEG decodes at reduced scale (1/2 .. 1/8) down to the thumbnail's size.
        image = decode_image(read_regular_file(path, MAX_SOURCE_BYTES), limits, min_side=size).image
    except (DecodeError, OSError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def thumbnail_data_uri(path: str | Path, limits: ImageLimits, size: int = THUMBNAIL_PX) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of a local image, or ``None`` if it can't be read."""
    jpeg = thumbnail_jpeg(path, limits, size)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _image_source(hit: QueryHit, limits: ImageLimits, header: GalleryHeader) -> str | None:
    uri = str(hit.payload.get("uri") or "")
    if uri.startswith(("http://", "https://")):
        return uri if header.remote_images else None
    if not uri.startswith("/") or not header.may_thumbnail(uri):
        return None
    return thumbnail_data_uri(uri, limits)


def _media(hit: QueryHit, limits: ImageLimits, header: GalleryHeader) -> str:
    if hit.modality == "image":
        source = _image_source(hit, limits, header)
        if source is None:
            return '<div class="media missing">image unavailable</div>'
        alt = html.escape(str(hit.payload.get("path") or hit.key))
        return f'<div class="media"><img src="{html.escape(source)}" alt="{alt}" loading="lazy"></div>'
    text = hit.text or ""
    clipped = text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS].rstrip() + "…"
    return f'<div class="media text"><p>{html.escape(clipped)}</p></div>'


def _facts(hit: QueryHit) -> str:
    payload = hit.payload
    rows: list[tuple[str, str]] = [("modality", hit.modality)]
    if payload.get("width") and payload.get("height"):
        rows.append(("size", f"{payload['width']}×{payload['height']}"))
    if payload.get("caption"):
        rows.append(("caption", str(payload["caption"])))
    if payload.get("chunk_index") is not None:
        rows.append(("chunk", str(payload["chunk_index"])))
    if payload.get("meta"):
        rows.append(("meta", ", ".join(f"{k}={v}" for k, v in payload["meta"].items())))
    cells = "".join(f"<dt>{html.escape(name)}</dt><dd>{html.escape(value)}</dd>" for name, value in rows)
    if hit.labels:
        scores = payload.get("label_scores") or {}
        tags = "".join(
            f'<span title="{float(scores.get(label, 0.0)):.3f}">{html.escape(label)}</span>' for label in hit.labels
        )
        cells += f'<dt>labels</dt><dd class="labels">{tags}</dd>'
    return f"<dl>{cells}</dl>"


def _part_label(term: Contribution) -> str:
    part = term.part
    if part.kind != "image":
        return part.describe()
    return f"{'not ' if part.negative else ''}image {Path(part.value).name}"  # type: ignore[arg-type]


def _why(hit: QueryHit) -> str:
    if len(hit.contributions) < 2:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(_part_label(term))}</td><td class=\"num\">{term.contribution:+.4f}</td></tr>"
        for term in hit.contributions
    )
    return f'<table class="why" aria-label="score contributions">{rows}</table>'


def _card(rank: int, hit: QueryHit, limits: ImageLimits, header: GalleryHeader) -> str:
    location = str(hit.payload.get("path") or hit.key)
    return (
        f'<article class="card" data-rank="{rank}" data-modality="{html.escape(hit.modality)}">'
        f"{_media(hit, limits, header)}"
        f'<div class="meta"><div class="score"><span class="rank">#{rank}</span>{hit.score:.4f}</div>'
        f'<div class="key" title="{html.escape(hit.key)}">{html.escape(location)}</div>'
        f"{_facts(hit)}{_why(hit)}</div></article>"
    )


def _query_images(paths: Sequence[Path], negative: bool, limits: ImageLimits) -> str:
    chips = []
    for path in paths:
        source = thumbnail_data_uri(path.expanduser(), limits, size=96)
        image = f'<img src="{source}" alt="">' if source else ""
        kind = "part negative" if negative else "part"
        chips.append(f'<span class="{kind}">{image}{html.escape(path.name)}</span>')
    return "".join(chips)


def render_gallery(header: GalleryHeader, hits: Sequence[QueryHit], limits: ImageLimits) -> str:
    """The whole page as a string."""
    cards = "\n".join(_card(rank, hit, limits, header) for rank, hit in enumerate(hits, 1))
    images = _query_images(header.query_images, False, limits) + _query_images(
        header.negative_images, True, limits
    )
    body = cards or '<p class="empty">No results.</p>'
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{GENERATED_PAGE_MARKER}'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(header.content_policy())}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(header.title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(header.title)}</h1>"
        f'<div class="query"><strong>Query:</strong> {html.escape(header.query)} {images}</div>'
        f'<div class="facts">{html.escape(header.facts)}</div></header>'
        f'<main id="results" data-count="{len(hits)}">\n{body}\n</main></body></html>\n'
    )


def header_for(result: SearchResult, source_roots: tuple[str, ...] = (), remote_images: bool = False) -> GalleryHeader:
    """The page header of a search result (thumbnails only from ``source_roots``)."""
    query = result.query
    parts = [embedded.part for embedded in result.fused.parts]
    facts = [f"collection {query.collection}", f"{len(result.hits)} results", f"method {result.method}"]
    if query.where:
        facts.append("where " + " and ".join(query.where))
    if query.min_score is not None:
        facts.append(f"min score {query.min_score:g}")
    facts.append(datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    return GalleryHeader(
        title=f"mmindex · {query.collection}",
        query=result.describe_query(),
        collection=query.collection,
        facts=" · ".join(facts),
        query_images=tuple(Path(p.value) for p in parts if p.kind == "image" and not p.negative),  # type: ignore[arg-type]
        negative_images=tuple(Path(p.value) for p in parts if p.kind == "image" and p.negative),  # type: ignore[arg-type]
        source_roots=source_roots,
        remote_images=remote_images,
    )


def write_gallery(path: Path, page: str) -> Path:
    """Write the page atomically (a ``mkstemp`` file + rename, owner-only); returns the absolute path."""
    target = path.expanduser().absolute()
    if target.is_dir():
        raise ConfigError(f"--html {path}: is a directory")
    try:
        write_atomic(target, page.encode("utf-8"), durable=False)  # 0600: the page shows indexed data
    except OSError as exc:
        raise ConfigError(f"cannot write --html {path}: {exc.strerror or exc}") from exc
    return target


def folder_roots(settings: Settings, collection: str) -> tuple[str, ...]:
    """The folders a collection was indexed from (the only files its gallery thumbnails)."""
    from mmindex.pipeline.collection import collection_state

    return tuple(spec.path for spec in collection_state(settings, collection).sources.values() if spec.kind == "folder")


def write_result_gallery(path: Path, result: SearchResult, settings: Settings, *, remote_images: bool = False) -> Path:
    """Render ``result`` and write it to ``path`` (thumbnails from the collection's folders only)."""
    header = header_for(result, folder_roots(settings, result.query.collection), remote_images)
    return write_gallery(path, render_gallery(header, result.hits, settings.image_limits))
