"""The --html result gallery: one self-contained page, rendered in headless Chromium.

Chromium (Debian package ``chromium``) loads the page from disk, dumps its DOM — one result card
per hit, each thumbnail an embedded JPEG — and takes a screenshot that must show the photos.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import COLLECTION, Indexed, run_cli
from PIL import Image

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.search.gallery import THUMBNAIL_PX, GalleryHeader, render_gallery, write_gallery
from mmindex.pipeline.search.query import QueryHit
from mmindex.schemas.config import ImageLimits

CHROMIUM = next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)
WINDOW = (1280, 1600)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)


class _Cards(HTMLParser):
    """Collects result cards (with their images and text) and every other ``<img>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, Any]] = []
        self.images_outside: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "article" and "card" in (attributes.get("class") or "").split():
            self.cards.append({"attrs": attributes, "images": [], "text": ""})
            self._depth = 1
        elif tag == "article" and self._depth:
            self._depth += 1
        if tag == "img":
            (self.cards[-1]["images"] if self._depth else self.images_outside).append(attributes.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "article" and self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.cards[-1]["text"] += data


def parse_cards(page: str) -> _Cards:
    parser = _Cards()
    parser.feed(page)
    return parser


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _decode_jpeg(source: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert source.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(source[len(prefix):])))
    image.load()
    assert image.format == "JPEG"
    return image


@needs_chromium
def test_gallery_renders_one_card_per_hit_in_headless_chromium(indexed: Indexed, tmp_path: Path) -> None:
    page = tmp_path / "out" / "gallery.html"
    rocket = indexed.corpus / "rocket.bmp"
    hits = indexed.query("a cat", "--image", str(rocket), "--not", "blurry", "--limit", "9", "--html", str(page))
    assert len(hits) == 9 and page.is_file()
    assert {hit["payload"]["modality"] for hit in hits} == {"image", "text"}

    dumped = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = parse_cards(dumped.stdout)
    assert len(dom.cards) == len(hits)
    assert "Query:" in dumped.stdout and "text 'a cat'" in dumped.stdout and "not text 'blurry'" in dumped.stdout
    assert len(dom.images_outside) == 1  # the query image, shown in the header
    for rank, (card, hit) in enumerate(zip(dom.cards, hits, strict=True), 1):
        assert card["attrs"]["data-rank"] == str(rank)
        assert card["attrs"]["data-modality"] == hit["payload"]["modality"]
        assert f"{hit['score']:.4f}" in card["text"]
        assert hit["payload"]["path"] in card["text"]
        if hit["payload"]["modality"] == "image":
            (source,) = card["images"]
            thumbnail = _decode_jpeg(source)
            assert max(thumbnail.size) == min(THUMBNAIL_PX, max(hit["payload"]["width"], hit["payload"]["height"]))
        else:
            assert card["images"] == []
            assert " ".join(hit["payload"]["text"].split())[:40] in " ".join(card["text"].split())

    shot = tmp_path / "gallery.png"
    taken = _chromium(tmp_path, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and picture.size == WINDOW
        colors = picture.convert("RGB").getcolors(maxcolors=1 << 24) or []
    assert len(colors) > 5000, "the screenshot shows the photo thumbnails, not a blank or text-only page"


def _hit(key: str, payload: dict[str, Any], score: float = 0.5) -> QueryHit:
    return QueryHit(key, score, "id-" + key, {"key": key, **payload})


def test_page_escapes_payload_text_and_handles_missing_images(tmp_path: Path) -> None:
    hits = [
        _hit("a", {"modality": "image", "uri": str(tmp_path / "gone.jpg"), "path": "gone.jpg",
                   "caption": "<script>alert('x')</script>", "labels": ["<b>cat</b>"], "label_scores": {"<b>cat</b>": 0.9}}),
        _hit("b", {"modality": "text", "path": "n.md", "text": "fish & <chips>", "chunk_index": 0}),
        _hit("c", {"modality": "image", "uri": "https://example.org/x.jpg", "path": "x.jpg"}),
    ]
    header = GalleryHeader(title="t <1>", query="text '<q>'", collection="c")
    page = render_gallery(header, hits, limits=ImageLimits(10_000_000))
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>" not in page
    assert "fish &amp; &lt;chips&gt;" in page
    dom = parse_cards(page)
    assert len(dom.cards) == 3
    assert "image unavailable" in dom.cards[0]["text"] and dom.cards[0]["images"] == []
    assert dom.cards[2]["images"] == []  # remote images only when asked for
    remote = GalleryHeader(title="t", query="q", collection="c", remote_images=True)
    assert parse_cards(render_gallery(remote, hits, limits=ImageLimits(10_000_000))).cards[2]["images"] == [
        "https://example.org/x.jpg"]
    empty = parse_cards(render_gallery(header, [], limits=ImageLimits(1)))
    assert empty.cards == [] and "No results." in render_gallery(header, [], limits=ImageLimits(1))


def test_only_files_under_the_source_roots_are_thumbnailed(tmp_path: Path) -> None:
    """A payload ``uri`` naming the viewer's own files (a hostile manifest row) embeds nothing;
    the page forbids scripts and loads images from data: only."""
    root, private = tmp_path / "corpus", tmp_path / "home"
    root.mkdir()
    private.mkdir()
    Image.new("RGB", (32, 32), "red").save(root / "in.png")
    Image.new("RGB", (32, 32), "blue").save(private / "secret.png")
    (root / "link.png").symlink_to(private / "secret.png")
    hits = [_hit(name, {"modality": "image", "uri": uri, "path": name}) for name, uri in [
        ("in", str(root / "in.png")), ("file-url", (private / "secret.png").as_uri()),
        ("outside", str(private / "secret.png")), ("link", str(root / "link.png")),
        ("dots", f"{root}/../home/secret.png")]]
    header = GalleryHeader(title="t", query="q", collection="c", source_roots=(str(root),))
    page = render_gallery(header, hits, limits=ImageLimits(10_000_000))
    cards = parse_cards(page).cards
    assert [bool(card["images"]) for card in cards] == [True, False, False, False, False]
    assert ('<meta http-equiv="Content-Security-Policy" content="default-src &#x27;none&#x27;; style-src '
            "&#x27;unsafe-inline&#x27;; img-src data:;") in page


def test_write_gallery_replaces_atomically_and_reports_bad_paths(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "g.html"
    assert write_gallery(target, "one") == target
    write_gallery(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["g.html"]
    with pytest.raises(ConfigError, match="is a directory"):
        write_gallery(tmp_path, "x")


def test_html_flag_with_json_keeps_stdout_clean(indexed: Indexed, tmp_path: Path) -> None:
    page = tmp_path / "g.html"
    code, stdout, stderr = run_cli("query", "-c", COLLECTION, "--like", indexed.key("rocket.bmp"), "--html", str(page),
                               "--json", *indexed.flags)
    assert code == 0, stderr
    assert len(json.loads(stdout)) == len(parse_cards(page.read_text(encoding="utf-8")).cards) > 0
    assert "wrote gallery" in stderr
