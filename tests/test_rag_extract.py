"""Document text extraction (txt, md, html, pdf) and heading-aware chunking."""

from __future__ import annotations

import pytest
from helpers import make_pdf

from mmindex.pipeline.embed.chunking import (
    CONTEXT_MERGED,
    CONTEXT_NONE,
    CONTEXT_TITLE,
    CONTEXT_TITLE_PATH,
    ChunkContext,
    Heading,
    chunk_label,
    chunk_sections,
    common_path,
    context_label,
    heading_paths,
    reuse_key,
)
from mmindex.pipeline.embed.extract import document_title, extract_document, markdown_headings
from mmindex.pipeline.errors import DecodeError


def words(text: str) -> int:
    return len(text.split())


HTML = """<!doctype html><html><head><title>Doc</title><style>.x{color:red}</style>
<script>var secret = "tracking";</script></head>
<body><nav><a href="/">Home</a> <a href="/about">About menu</a></nav>
<h1>Billing guide</h1><p>Invoices are sent <b>monthly</b> by email.</p>
<div><h2>Refunds</h2><p>Refunds take five business days.</p><ul><li>first item</li><li>second item</li></ul></div>
<noscript>enable javascript</noscript><!-- a comment --></body></html>"""


def test_html_keeps_visible_text_and_headings() -> None:
    doc = extract_document(HTML.encode(), "html")
    assert doc.mime == "text/html"
    for gone in ("secret", "tracking", "Home", "About menu", "enable javascript", "a comment", "color:red"):
        assert gone not in doc.text
    assert "Invoices are sent monthly by email." in doc.text
    assert "first item\n\nsecond item" in doc.text
    assert [(h.level, h.title) for h in doc.headings] == [(1, "Billing guide"), (2, "Refunds")]
    for heading in doc.headings:
        assert doc.text[heading.start:].startswith(heading.title)


def test_markdown_headings_skip_code_fences() -> None:
    text = "# Top\n\nintro\n\n```\n# not a heading\n```\n\n## Sub ##\n\nbody\n"
    headings = markdown_headings(text)
    assert [(h.level, h.title) for h in headings] == [(1, "Top"), (2, "Sub")]
    assert text[headings[1].start:].startswith("## Sub")
    assert heading_paths(headings) == [("Top",), ("Top", "Sub")]


def test_pdf_pages_become_sections() -> None:
    data = make_pdf([["Alpha page text."], ["Beta page (two) text."]])
    doc = extract_document(data, "pdf")
    assert doc.mime == "application/pdf"
    assert "Alpha page text." in doc.text and "Beta page (two) text." in doc.text
    assert [h.title for h in doc.headings] == ["page 1", "page 2"]
    assert doc.text[doc.headings[1].start:].startswith("Beta")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"%PDF-1.4\n1 0 obj << /Type /Catalog", "unreadable PDF"),
        (make_pdf([["whole file"]])[:120], "unreadable PDF"),
        (b"not a pdf at all", "unreadable PDF"),
        (make_pdf([[]]), "no extractable text"),
    ],
)
def test_broken_pdfs_raise_decode_errors(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        extract_document(data, "pdf")


def test_chunks_never_span_sections_and_carry_heading_paths() -> None:
    text = "# A\n\n" + "alpha words here. " * 30 + "\n\n## B\n\nshort b section.\n\n# C\n\n" + "gamma text. " * 5
    headings = markdown_headings(text)
    chunks = chunk_sections(text, headings, words, max_tokens=40, overlap_tokens=5)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    starts = [h.start for h in headings]
    for chunk in chunks:
        assert text[chunk.char_start:chunk.char_end] == chunk.text
        assert words(chunk.text) <= 40
        inside = [s for s in starts if chunk.char_start < s < chunk.char_end]
        assert not inside, f"chunk {chunk.index} spans a heading"
    paths = [c.heading_path for c in chunks]
    assert paths[0] == ("A",) and ("A", "B") in paths and paths[-1] == ("C",)
    assert sum(1 for p in paths if p == ("A",)) >= 2  # the long section was split with overlap


def test_text_before_the_first_heading_has_no_path() -> None:
    text = "preface line.\n\n# H\n\nbody."
    chunks = chunk_sections(text, [Heading(15, 1, "H")], words, 50)
    assert [(c.text, c.heading_path) for c in chunks] == [("preface line.", ()), ("# H\n\nbody.", ("H",))]


def test_a_heading_without_body_joins_the_next_section() -> None:
    text = "# Title\n\n## Part one\n\nbody one.\n\n## Part two\n\nbody two."
    chunks = chunk_sections(text, markdown_headings(text), words, 50)
    assert [(c.text, c.heading_path) for c in chunks] == [
        ("# Title\n\n## Part one\n\nbody one.", ("Title", "Part one")),
        ("## Part two\n\nbody two.", ("Title", "Part two")),
    ]
    pdf = extract_document(make_pdf([["one line"], ["another line"]]), "pdf")  # page titles are not lines
    assert [c.heading_path for c in chunk_sections(pdf.text, pdf.headings, words, 50)] == [("page 1",), ("page 2",)]


def test_context_label_of_each_scheme() -> None:
    path = ("Backup policy", "Retention")
    assert context_label(CONTEXT_NONE, "Backup policy", path) == ""
    assert context_label(None, "Backup policy", path) == ""  # a version from before schemes
    assert context_label(CONTEXT_TITLE, "Backup policy", path) == "Backup policy"
    # The first heading equal to the title is not repeated; a title-less document keeps its path.
    assert context_label(CONTEXT_TITLE_PATH, "backup POLICY", path) == "backup POLICY > Retention"
    assert context_label(CONTEXT_TITLE_PATH, "notes", path) == "notes > Backup policy > Retention"
    assert context_label(CONTEXT_TITLE_PATH, None, path) == "Backup policy > Retention"
    with pytest.raises(ValueError, match="unknown chunk context scheme"):
        context_label("nope", "t", ())


def test_context_prefix_tokens_come_out_of_the_chunk_budget() -> None:
    text = "# Handbook\n\n## Travel\n\n" + "flights are economy class. " * 40
    context = ChunkContext(CONTEXT_TITLE_PATH, words, 40)
    chunks = chunk_sections(text, markdown_headings(text), words, 40, 5, reserve=context.reserve("Handbook"))
    assert len(chunks) > 2
    for chunk in chunks:
        embedded = context.embed_text("Handbook", chunk.heading_path, chunk.text)
        assert embedded == f"Handbook > Travel\n\n{chunk.text}"
        assert words(embedded) <= 40  # the prefix's 3 words were left free in every chunk
    assert max(words(c.text) for c in chunks) > 40 - 3 - 5  # and no more than that
    # A very long title is cut to a third of the budget, so a chunk always has room.
    long_title = " ".join(f"w{i}" for i in range(100))
    assert words(ChunkContext(CONTEXT_TITLE, words, 30).label(long_title, ())) == 10


def test_short_sections_merge_up_to_the_budget_under_the_merged_scheme() -> None:
    text = ("# Runbook\n\n## When\n\nfail over on lag.\n\n## Steps\n\npromote the standby.\n\n"
            "## Long\n\n" + "many words here. " * 20 + "\n\n## Tail\n\nthe end.\n\n## After\n\nreally the end.")
    headings = markdown_headings(text)
    context = ChunkContext(CONTEXT_MERGED, words, 30)
    assert context.merge_sections and not ChunkContext(CONTEXT_TITLE_PATH, words, 30).merge_sections
    merged = chunk_sections(text, headings, words, 30, 5, reserve=context.reserve("Runbook"), merge_sections=True)
    # The two short sections are one chunk with their common path; the long one is cut on its own
    # (never merged with a neighbour); the two short ones after it merge again.
    assert merged[0].text == "# Runbook\n\n## When\n\nfail over on lag.\n\n## Steps\n\npromote the standby."
    assert merged[0].heading_path == ("Runbook",)
    long_part = [c for c in merged if c.heading_path == ("Runbook", "Long")]
    assert len(long_part) >= 2 and all("many" in c.text for c in long_part)
    assert merged[-1].text == "## Tail\n\nthe end.\n\n## After\n\nreally the end." and merged[-1].heading_path == ("Runbook",)
    assert [c.index for c in merged] == list(range(len(merged)))
    for chunk in merged:
        assert text[chunk.char_start:chunk.char_end] == chunk.text
        assert words(context.embed_text("Runbook", chunk.heading_path, chunk.text)) <= 30
    # Without merging (the older schemes) every section stays its own chunk.
    plain = chunk_sections(text, headings, words, 30, 5, reserve=context.reserve("Runbook"))
    assert [c.heading_path for c in plain][:2] == [("Runbook", "When"), ("Runbook", "Steps")]
    # A budget too small for two sections keeps them apart.
    small = chunk_sections(text, headings, words, 9, 2, merge_sections=True)
    assert small[0].text == "# Runbook\n\n## When\n\nfail over on lag." and small[0].heading_path == ("Runbook", "When")


def test_common_path_and_the_merged_schemes_labels() -> None:
    assert common_path(("A", "B", "C"), ("A", "B", "D")) == ("A", "B")
    assert common_path(("A",), ("B",)) == () and common_path((), ("A",)) == ()
    assert context_label(CONTEXT_MERGED, "Runbook", ("Runbook", "Steps")) == "Runbook > Steps"
    # A chunk that starts with its document's title heading does not get the title again...
    assert chunk_label(CONTEXT_MERGED, "Runbook", ("Runbook",), "# runbook\n\n## When\n\nbody") == ""
    assert chunk_label(CONTEXT_MERGED, "Guide", ("Guide", "Install"), "# Guide\n\n## Install\n\nx") == "Install"
    assert chunk_label(CONTEXT_MERGED, "Guide", ("Guide", "Install"), "## Install\n\nx") == "Guide > Install"
    context = ChunkContext(CONTEXT_MERGED, words, 30)
    assert context.embed_text("Runbook", ("Runbook",), "# Runbook\n\nbody") == "# Runbook\n\nbody"
    assert context.embed_text("Runbook", ("Runbook",), "## Steps\n\nbody") == "Runbook\n\n## Steps\n\nbody"
    # ... while the older schemes keep embedding what they always did.
    assert chunk_label(CONTEXT_TITLE_PATH, "Runbook", ("Runbook",), "# Runbook\n\nbody") == "Runbook"
    assert ChunkContext(CONTEXT_TITLE, words, 30).embed_text("Runbook", (), "# Runbook") == "Runbook\n\n# Runbook"


def test_document_titles() -> None:
    html = extract_document(HTML.encode(), "html")
    assert html.title == "Doc" and document_title(html, "billing") == "Doc"
    md = extract_document(b"intro\n\n# First heading\n\nbody\n\n# Second\n\nmore", "md")
    assert document_title(md, "notes") == "First heading"
    assert document_title(extract_document(b"plain words", "txt"), "notes") == "notes"
    pdf = extract_document(make_pdf([["one line"]]), "pdf")
    assert document_title(pdf, "manual") == "manual"  # page sections are not titles


def test_reuse_keys_follow_what_the_scheme_embeds() -> None:
    assert reuse_key(None, "A", ("h",), "x") == reuse_key(None, "B", ("g",), "x") == ("x",)
    assert reuse_key(CONTEXT_TITLE, "A", ("h",), "x") == reuse_key(CONTEXT_TITLE, "A", ("g",), "x")
    assert reuse_key(CONTEXT_TITLE, "A", (), "x") != reuse_key(CONTEXT_TITLE, "B", (), "x")
    assert reuse_key(CONTEXT_TITLE_PATH, "A", ("h",), "x") != reuse_key(CONTEXT_TITLE_PATH, "A", ("g",), "x")
    assert reuse_key(CONTEXT_TITLE_PATH, "A", ("h", "x"), "y") != reuse_key(CONTEXT_TITLE_PATH, "A", ("h",), "x y")
