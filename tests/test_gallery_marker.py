"""A result gallery written inside an indexed folder is not indexed on the next run: the page
carries ``<meta name="generator" content="mmindex">`` and the crawler skips such pages."""

from __future__ import annotations

import os
from pathlib import Path

from mmindex.pipeline.search.gallery import GalleryHeader, render_gallery, write_gallery
from mmindex.pipeline.sources.local import GENERATED_PAGE_MARKER, crawl_local
from mmindex.schemas.config import ImageLimits


def test_the_crawler_skips_galleries_and_keeps_other_pages(tmp_path: Path) -> None:
    header = GalleryHeader(title="mmindex · c", query="text 'a cat'", collection="c", facts="", query_images=(),
                           negative_images=())
    page = render_gallery(header, [], limits=ImageLimits(1_000_000))
    assert GENERATED_PAGE_MARKER in page[:300]
    write_gallery(tmp_path / "out page.html", page)
    (tmp_path / "notes.html").write_text("<html><head><title>notes</title></head><body>a cat</body></html>")
    (tmp_path / "mentions.htm").write_text(f"<html><body><pre>{GENERATED_PAGE_MARKER.replace('<', '&lt;')}</pre></body></html>")
    os.mkfifo(tmp_path / "pipe.html")  # never read (a FIFO is not a regular file), so the crawl cannot hang
    paths = sorted(ref.path for ref in crawl_local(tmp_path, source_id="s"))
    assert paths == ["mentions.htm", "notes.html", "pipe.html"]
