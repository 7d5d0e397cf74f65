"""Text of a document file, with its headings: ``.txt``, ``.md``, ``.html``/``.htm``, ``.pdf``.

* txt: strict UTF-8 (``decode_text``); no headings.
* md: the text as written; ATX headings (``# Title``) outside fenced code blocks.
* html: the visible text (beautifulsoup4, stdlib parser) without script, style, nav, noscript,
  template, iframe and svg; one paragraph per block element; ``<h1>``..``<h6>`` are headings.
* pdf: pypdf's text of each page, pages as sections titled ``page N``; a broken, encrypted or
  text-less PDF fails its item with a reason, and so does one of more than ``MAX_PDF_PAGES``
  pages or whose text passes ``max_text_chars``.

HTML markup nested any depth is walked without recursion; markup bs4 rejects fails with a reason.

A file that cannot be read as its format raises ``DecodeError`` (the item becomes a failed row).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from mmindex.pipeline.embed.chunking import Heading
from mmindex.pipeline.embed.decode import decode_text, short_reason
from mmindex.pipeline.errors import DecodeError

log = logging.getLogger(__name__)

DOCUMENT_MIME = {"txt": "text/plain", "md": "text/markdown", "html": "text/html", "htm": "text/html",
                 "pdf": "application/pdf"}
_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_DROPPED_TAGS = ("script", "style", "nav", "noscript", "template", "iframe", "svg", "head")
_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
_BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "main", "header", "footer", "aside", "li", "ul", "ol", "dl", "dt", "dd",
    "table", "tr", "td", "th", "thead", "tbody", "pre", "blockquote", "figure", "figcaption", "br", "hr",
    "body", "html", "form", "fieldset", "details", "summary", "address",
})
_SPACE = re.compile(r"\s+")
_DONE = object()
# More pages than any book; a PDF claiming more is refused before any page is read.
MAX_PDF_PAGES = 10_000


@dataclass(frozen=True, slots=True)
class ExtractedText:
    """A document's text, its mime type, its headings (offsets into ``text``) and the title the
    format declares (HTML ``<title>``, a PDF's metadata title; None: none declared)."""

    text: str
    mime: str
    headings: list[Heading] = field(default_factory=list)
    title: str | None = None


# A declared title longer than this is cut (it goes ahead of every chunk the text model embeds).
MAX_TITLE_CHARS = 200


def _clean_title(value: object) -> str | None:
    title = _SPACE.sub(" ", str(value)).strip()[:MAX_TITLE_CHARS] if value else ""
    return title or None


def document_title(extracted: ExtractedText, stem: str) -> str:
    """A document's title: the one its format declares, else its first inline heading, else the
    file's stem (never its folder path, so a moved file keeps its title and its vectors)."""
    if extracted.title:
        return extracted.title
    heading = next((h.title for h in sorted(extracted.headings, key=lambda h: h.start) if h.inline), None)
    return _clean_title(heading) or stem


def extract_document(data: bytes, ext: str, max_text_chars: int | None = None) -> ExtractedText:
    """The text and headings of a document file of extension ``ext``.

    ``max_text_chars`` caps the text a PDF may expand to (its streams are compressed); a PDF also
    has at most ``MAX_PDF_PAGES`` pages. Run parsers (HTML, PDF) through ``sandbox`` for a time
    and memory budget.
    """
    ext = ext.lower()
    if ext == "pdf":
        return _pdf(data, max_text_chars)
    if ext in ("html", "htm"):
        return _html(decode_text(data))
    text = decode_text(data)
    if ext == "md":
        return ExtractedText(text, DOCUMENT_MIME["md"], markdown_headings(text))
    return ExtractedText(text, DOCUMENT_MIME["txt"])


def markdown_headings(text: str) -> list[Heading]:
    """ATX headings of Markdown text, skipping fenced code blocks."""
    headings: list[Heading] = []
    position, fenced = 0, False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            match = _MD_HEADING.match(line.rstrip("\n"))
            if match:
                headings.append(Heading(position, len(match.group(1)), match.group(2).strip()))
        position += len(line)
    return headings


class _HtmlText:
    """Accumulates paragraphs of visible text and the offsets of headings."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.buffer: list[str] = []
        self.headings: list[Heading] = []

    def flush(self) -> int | None:
        paragraph = _SPACE.sub(" ", "".join(self.buffer)).strip()
        self.buffer.clear()
        if not paragraph:
            return None
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        start = self.length
        self.parts.append(paragraph)
        self.length += len(paragraph)
        return start

    def walk(self, root: object) -> None:
        """Collect the text under ``root`` depth first, with an explicit stack (no recursion, so
        markup nested thousands deep is read like any other)."""
        from bs4 import Comment, NavigableString, Tag

        # Each entry: the children still to visit, or None for "a block element ends here".
        stack: list[Iterator[object] | None] = [iter(getattr(root, "children", ()))]
        while stack:
            children = stack[-1]
            if children is None:
                stack.pop()
                self.flush()
                continue
            child = next(children, _DONE)
            if child is _DONE:
                stack.pop()
            elif isinstance(child, Comment):
                continue
            elif isinstance(child, NavigableString):
                self.buffer.append(str(child))
            elif isinstance(child, Tag):
                if child.name in _HEADING_TAGS:
                    self.flush()
                    self.buffer.append(child.get_text(" "))
                    start = self.flush()
                    if start is not None:
                        self.headings.append(Heading(start, _HEADING_TAGS[child.name], self.parts[-1]))
                    continue
                if child.name in _BLOCK_TAGS:
                    self.flush()
                    stack.append(None)
                stack.append(iter(child.children))


def _html(markup: str) -> ExtractedText:
    try:
        from bs4 import BeautifulSoup
        from bs4.exceptions import ParserRejectedMarkup
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise DecodeError("cannot read HTML: beautifulsoup4 is not installed") from exc
    try:
        soup = BeautifulSoup(markup, "html.parser")
    except ParserRejectedMarkup as exc:
        raise DecodeError(f"unreadable HTML: the parser rejected the markup ({short_reason(exc)})") from exc
    title = _clean_title(soup.title.get_text(" ")) if soup.title is not None else None
    for tag in soup(list(_DROPPED_TAGS)):
        tag.decompose()
    collected = _HtmlText()
    collected.walk(soup)
    collected.flush()
    return ExtractedText("".join(collected.parts), DOCUMENT_MIME["html"], collected.headings, title)


def _pdf(data: bytes, max_text_chars: int | None) -> ExtractedText:
    try:
        from pypdf import PdfReader
    except ImportError as exc:
        raise DecodeError("cannot read PDF: pypdf is not installed (pip install 'mmindex[pdf]')") from exc
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DecodeError("encrypted PDF: cannot extract its text without the password")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise DecodeError(f"PDF too long: {len(reader.pages)} pages exceeds the limit of {MAX_PDF_PAGES}")
        title = _clean_title(reader.metadata.title) if reader.metadata is not None else None
        pages: list[str] = []
        characters = 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            characters += len(pages[-1])
            if max_text_chars is not None and characters > max_text_chars:
                raise DecodeError(f"PDF text too large: more than {max_text_chars} characters")
    except DecodeError:
        raise
    except Exception as exc:  # pypdf raises many exception types on malformed files
        raise DecodeError(f"unreadable PDF: {type(exc).__name__}: {short_reason(exc)}") from exc
    parts: list[str] = []
    headings: list[Heading] = []
    length = 0
    for number, page_text in enumerate(pages, start=1):
        cleaned = page_text.replace("\r\n", "\n").replace("\r", "\n").strip()
        if not cleaned:
            continue
        if parts:
            parts.append("\n\n")
            length += 2
        headings.append(Heading(length, 1, f"page {number}", inline=False))
        parts.append(cleaned)
        length += len(cleaned)
    if not parts:
        raise DecodeError("PDF has no extractable text (scanned images only?)")
    return ExtractedText("".join(parts), DOCUMENT_MIME["pdf"], headings, title)
