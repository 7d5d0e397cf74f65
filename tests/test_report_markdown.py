"""The Prefect artifact of a run (Markdown) shows file names and errors as text: a failed file
named like a Markdown link, or holding HTML, renders as no link and no tag."""

from __future__ import annotations

from pathlib import Path

from markdown_it import MarkdownIt

from mmindex.pipeline.ingest.report import index_report_markdown
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.schemas.config import Settings

HOSTILE = ["[x](javascript:alert(1)).jpg", "<img src=x onerror=alert(1)>.png", "**bold** `code` | pipe.jpg"]


def test_failed_file_names_render_as_literal_text(tmp_path: Path, tiny_local_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in HOSTILE:
        (corpus / name).write_bytes(b"not an image")
    settings = Settings(root=tmp_path / "root", model=f"local-dir:{tiny_local_dir}", pretrained=None, workers=0,
                        precision="fp32")
    report = index_source(IndexRequest(corpus, "c"), settings)
    assert report.counts.failed == len(HOSTILE)

    markdown = index_report_markdown(report, [])
    assert "alert(1)).jpg" in markdown  # only what Markdown reads is escaped: "(" after an escaped "]" is text
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<a " not in html and "<img" not in html and "<strong>" not in html and "<code>" not in html
    rows = [line for line in html.splitlines() if line.startswith("<td>") and "not an image" not in line]
    cells = "\n".join(rows)
    for name in HOSTILE:  # each name shows as itself (HTML-escaped by the renderer, nothing more)
        shown = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert shown in cells, (name, cells)
