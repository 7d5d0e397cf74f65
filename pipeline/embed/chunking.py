"""Split documents into chunks that fit a text encoder's context, counted in its own tokens.

Words are packed greedily up to ``max_tokens``; a chunk that must be cut prefers to end at a
paragraph break, then at a sentence end, in its second half. Consecutive chunks overlap by about
``overlap_tokens`` tokens so a phrase cut at a boundary is still whole in one chunk. A chunk also
holds at most ``max_chunk_chars`` characters, and a run of characters without spaces is cut into
pieces of ``MAX_WORD_CHARS``, so no input makes one giant chunk. Chunks are made one at a time
(``iter_chunks``), holding about one chunk's words: memory does not grow with the document.

``chunk_sections`` first cuts a document at its headings (Markdown ``#``, HTML ``<h1>``..), so no
chunk spans two sections, and gives each chunk its heading path (``("Guide", "Install")``); with
``merge_sections`` (the ``title-path-merged-v1`` scheme) adjacent short sections that fit one chunk
together become one chunk, its path the common start of theirs.

Chunk context (``context_prefix``): what the text model embeds for a chunk is its document's title
and heading path ahead of the chunk text (``"Backup policy > Retention\n\n<chunk>"``), so a chunk
far down a document still says which document it belongs to; the stored ``text`` stays the chunk.
The prefix's tokens count against the chunk's budget (``iter_section_chunks(reserve=...)``). A
scheme is named (``CONTEXT_SCHEMES``) and recorded by each collection version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"\S+")
_NON_SPACE = re.compile(r"\S")
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*$")
# A run of more non-space characters than this is cut by characters before it is tokenized:
# MiniLM's tokenizer counts any word over 100 characters as one [UNK], so a run of letters would
# otherwise stay one "word" (and one chunk) whatever its length, and tokenizing costs grow with it.
MAX_WORD_CHARS = 100
# A chunk holds at most this many characters per token of its budget (natural text has 3-6).
MAX_CHARS_PER_TOKEN = 8


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A chunk of a document: its text and character span in the document."""

    index: int
    text: str
    char_start: int
    char_end: int
    heading_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Heading:
    """A heading of a document: where its line starts, its level (1 = top) and its title."""

    start: int
    level: int
    title: str
    # False for a section title that is not a line of the text (a PDF's "page 3").
    inline: bool = True


@dataclass(frozen=True, slots=True)
class _Word:
    start: int
    end: int
    tokens: int


def max_chunk_chars(max_tokens: int) -> int:
    """The character cap of a chunk of ``max_tokens`` tokens (generous for any natural text)."""
    return max_tokens * MAX_CHARS_PER_TOKEN


def _split_long_word(start: int, end: int, tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut a word longer than a chunk into character pieces that each fit."""
    pieces = -(-tokens // max_tokens) * 2  # generous: token density varies along the word
    step = max(1, -(-(end - start) // pieces))
    return [(position, min(position + step, end)) for position in range(start, end, step)]


def _iter_words(
    text: str, span: tuple[int, int], count_tokens: Callable[[str], int], max_tokens: int, max_chars: int
) -> Iterator[_Word]:
    """The words of ``text[span[0]:span[1]]`` with their token counts, one at a time.

    A run of more than ``MAX_WORD_CHARS`` non-space characters is first cut by characters, whatever
    its token count (a tokenizer may count a whole run as one unknown token); a piece that still
    has more tokens than a chunk is cut again by its token count.
    """
    counter = lru_cache(maxsize=65536)(count_tokens)
    piece_chars = max(1, min(MAX_WORD_CHARS, max_chars))
    for match in _WORD.finditer(text, *span):
        word_start, word_end = match.span()
        for start in range(word_start, word_end, piece_chars):
            end = min(start + piece_chars, word_end)
            tokens = counter(text[start:end])
            if tokens <= max_tokens:
                yield _Word(start, end, tokens)
                continue
            for piece_start, piece_end in _split_long_word(start, end, tokens, max_tokens):
                yield _Word(piece_start, piece_end, min(counter(text[piece_start:piece_end]), max_tokens))


class _WordWindow:
    """The words of a text read lazily, indexed from the start, holding only those not yet dropped
    (so chunking holds about one chunk's words whatever the length of the text)."""

    def __init__(self, words: Iterator[_Word]) -> None:
        self._source = words
        self._held: list[_Word] = []
        self._base = 0

    def has(self, index: int) -> bool:
        """Whether the text has a word ``index`` (reading up to it)."""
        while index >= self._base + len(self._held):
            word = next(self._source, None)
            if word is None:
                return False
            self._held.append(word)
        return True

    def __getitem__(self, index: int) -> _Word:
        return self._held[index - self._base]

    def drop_before(self, index: int) -> None:
        """Forget the words before ``index`` (they are never looked at again)."""
        del self._held[: index - self._base]
        self._base = index


def _boundary_score(text: str, word: _Word, span_end: int) -> int:
    following = text[word.end : min(word.end + 2, span_end)]
    if following.startswith("\n\n") or following == "\n" or word.end == span_end:
        return 2
    return 1 if _SENTENCE_END.search(text[word.start : word.end]) else 0


@dataclass(frozen=True, slots=True)
class _Limits:
    max_tokens: int
    max_chars: int
    span_end: int


def _chunk_end(text: str, words: _WordWindow, first: int, limits: _Limits, min_end: int) -> int:
    """Index one past the last word of the chunk that starts at ``first``; more than ``min_end``
    whenever the greedy fill gets past it (so every chunk moves the text forward)."""
    total, last = 0, first
    chunk_start = words[first].start
    while (words.has(last) and total + words[last].tokens <= limits.max_tokens
           and words[last].end - chunk_start <= limits.max_chars):
        total += words[last].tokens
        last += 1
    if not words.has(last):
        return last
    last = max(last, first + 1)
    half = max(first + (last - first) // 2, min_end)
    for wanted in (2, 1):
        for candidate in range(last - 1, half - 1, -1):
            if _boundary_score(text, words[candidate], limits.span_end) >= wanted:
                return candidate + 1
    return last


def _next_start(words: _WordWindow, first: int, end: int, overlap_tokens: int) -> int:
    start, carried = end, 0
    while start - 1 > first and carried + words[start - 1].tokens <= overlap_tokens:
        start -= 1
        carried += words[start].tokens
    return start


def iter_chunks(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 16,
    span: tuple[int, int] | None = None,
    max_chars: int | None = None,
) -> Iterator[TextChunk]:
    """Chunks of ``text`` (or of ``text[span[0]:span[1]]``, spans still counted in ``text``) of at
    most ``max_tokens`` tokens and ``max_chars`` characters (default ``max_chunk_chars``) each,
    made one at a time in memory bounded by a chunk's words. Indices start at 0."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    begin, finish = span if span is not None else (0, len(text))
    limits = _Limits(max_tokens, max(1, max_chars if max_chars is not None else max_chunk_chars(max_tokens)), finish)
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    words = _WordWindow(_iter_words(text, (begin, finish), count_tokens, max_tokens, limits.max_chars))
    index, first, previous_end = 0, 0, 0
    while words.has(first):
        end = _chunk_end(text, words, first, limits, previous_end)
        if end <= previous_end:  # the overlap left no room to advance: start fresh after it
            first = previous_end
            end = _chunk_end(text, words, first, limits, previous_end)
        start_char, end_char = words[first].start, words[end - 1].end
        yield TextChunk(index, text[start_char:end_char], start_char, end_char)
        index += 1
        if not words.has(end):
            return
        first, previous_end = _next_start(words, first, end, overlap_tokens), end
        words.drop_before(first)


def chunk_text(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 16,
    max_chars: int | None = None,
) -> list[TextChunk]:
    """Chunks of ``text`` of at most ``max_tokens`` tokens each (empty text gives none)."""
    return list(iter_chunks(text, count_tokens, max_tokens, overlap_tokens, max_chars=max_chars))


# Chunk context schemes (what the text model embeds ahead of a chunk); a collection version records
# its scheme, and a version that records none (built before schemes existed) embeds the bare chunk.
CONTEXT_NONE = "none"
CONTEXT_TITLE = "title-v1"
CONTEXT_TITLE_PATH = "title-path-v1"
# The title and heading path, and adjacent short sections of a document merged into one chunk up to
# the chunk's budget (``iter_section_chunks(merge_sections=True)``): the scheme names how the
# chunks are cut too, so a collection built with another one keeps its chunks until migrated.
CONTEXT_MERGED = "title-path-merged-v1"
CONTEXT_SCHEMES = (CONTEXT_NONE, CONTEXT_TITLE, CONTEXT_TITLE_PATH, CONTEXT_MERGED)
_MERGING_SCHEMES = frozenset({CONTEXT_MERGED})
# Chosen on both evaluation sets of benchmarks/rag_eval.py (see its README figures).
DEFAULT_CONTEXT = CONTEXT_TITLE_PATH
# A prefix holds at most this share of a chunk's token budget (a very long title is cut).
MAX_CONTEXT_SHARE = 3


def context_label(scheme: str | None, title: str | None, heading_path: Sequence[str]) -> str:
    """The context line of a chunk under ``scheme``: ``""`` (none), the title, or the title and the
    heading path joined by `` > `` (a first heading equal to the title is not repeated)."""
    if scheme is None or scheme == CONTEXT_NONE:
        return ""
    if scheme not in CONTEXT_SCHEMES:
        raise ValueError(f"unknown chunk context scheme {scheme!r}: use one of {', '.join(CONTEXT_SCHEMES)}")
    parts = [title.strip()] if title and title.strip() else []
    if scheme in (CONTEXT_TITLE_PATH, CONTEXT_MERGED):
        path = [heading.strip() for heading in heading_path if heading.strip()]
        if parts and path and path[0].casefold() == parts[0].casefold():
            path = path[1:]
        parts.extend(path)
    return " > ".join(parts)


def _first_line(text: str) -> str:
    """The first non-blank line of ``text`` without its Markdown heading marks."""
    stripped = text.lstrip()
    newline = stripped.find("\n")
    return (stripped if newline == -1 else stripped[:newline]).lstrip("#").strip()


def unrepeated_label(scheme: str | None, label: str, title: str | None, text: str) -> str:
    """``label`` as it goes ahead of ``text``: under ``CONTEXT_MERGED`` a chunk whose first line is
    its document's title (the chunk at the top of the document) does not get the title again, only
    the rest of the path; the other schemes always keep the whole label."""
    name = title.strip() if title else ""
    if scheme not in _MERGING_SCHEMES or not label or not name or _first_line(text).casefold() != name.casefold():
        return label
    if label == name:
        return ""
    return label[len(name) + 3 :] if label.startswith(f"{name} > ") else label


def chunk_label(scheme: str | None, title: str | None, heading_path: Sequence[str], text: str) -> str:
    """The (unfitted) context line ahead of chunk ``text`` under ``scheme`` (what BM25 reads)."""
    return unrepeated_label(scheme, context_label(scheme, title, heading_path), title, text)


def merges_sections(scheme: str | None) -> bool:
    """Whether chunks under ``scheme`` merge adjacent short sections (see ``CONTEXT_MERGED``)."""
    return scheme in _MERGING_SCHEMES


def fit_context(label: str, count_tokens: Callable[[str], int], max_tokens: int) -> str:
    """``label`` cut word by word to at most ``max_tokens // MAX_CONTEXT_SHARE`` tokens."""
    budget = max_tokens // MAX_CONTEXT_SHARE
    words = label.split()
    while words and count_tokens(" ".join(words)) > budget:
        words.pop()
    return " ".join(words)


def with_context(context: str, text: str) -> str:
    """What the text model embeds for a chunk: its context line, a blank line, the chunk."""
    return f"{context}\n\n{text}" if context else text


class ChunkContext:
    """The context prefix of a collection's scheme, fitted to its text model's token budget."""

    def __init__(self, scheme: str | None, count_tokens: Callable[[str], int], max_tokens: int) -> None:
        context_label(scheme, None, ())  # refuses an unknown scheme
        self.scheme = scheme
        self.merge_sections = merges_sections(scheme)
        self._count = count_tokens
        self._max_tokens = max_tokens
        self._labels: dict[tuple[str | None, tuple[str, ...]], str] = {}

    def label(self, title: str | None, heading_path: Sequence[str] | None) -> str:
        """The fitted context line of a chunk of document ``title`` in section ``heading_path``."""
        path = tuple(heading_path or ())
        cached = self._labels.get((title, path))
        if cached is None:
            cached = fit_context(context_label(self.scheme, title, path), self._count, self._max_tokens)
            if len(self._labels) < 4096:
                self._labels[(title, path)] = cached
        return cached

    def reserve(self, title: str | None) -> Callable[[tuple[str, ...]], int]:
        """The tokens a section's context takes from its chunks' budget, for document ``title``."""

        def tokens(heading_path: tuple[str, ...]) -> int:
            label = self.label(title, heading_path)
            return self._count(label) if label else 0

        return tokens

    def embed_text(self, title: str | None, heading_path: Sequence[str] | None, text: str) -> str:
        """What the text model embeds for this chunk."""
        return with_context(unrepeated_label(self.scheme, self.label(title, heading_path), title, text), text)

    def reuse_key(self, title: str | None, heading_path: Sequence[str] | None, text: str) -> tuple[str, ...]:
        """``reuse_key`` of this scheme."""
        return reuse_key(self.scheme, title, heading_path, text)


def reuse_key(scheme: str | None, title: str | None, heading_path: Sequence[str] | None, text: str) -> tuple[str, ...]:
    """What a stored chunk's text-model vector must match to be reused under ``scheme``: the chunk
    text and the context parts the scheme embeds (an edited title, or heading, re-embeds the
    chunks it prefixes; a moved file keeps its title and so its vectors)."""
    if scheme is None or scheme == CONTEXT_NONE:
        return (text,)
    if scheme == CONTEXT_TITLE:
        return (title or "", text)
    return (title or "", *tuple(heading_path or ()), "\x00", text)


def heading_paths(headings: Sequence[Heading]) -> list[tuple[str, ...]]:
    """The path of titles leading to each heading (itself included), by level."""
    stack: list[Heading] = []
    paths = []
    for heading in sorted(headings, key=lambda h: h.start):
        while stack and stack[-1].level >= heading.level:
            stack.pop()
        stack.append(heading)
        paths.append(tuple(h.title for h in stack))
    return paths


def _has_body(text: str, start: int, end: int) -> bool:
    """Whether the section ``text[start:end]`` holds more than its heading line (without copying it)."""
    first = _NON_SPACE.search(text, start, end)
    if first is None:
        return False
    newline = text.find("\n", first.start(), end)
    return newline != -1 and _NON_SPACE.search(text, newline, end) is not None


@dataclass(frozen=True, slots=True)
class _Span:
    """A run of a document's text chunked on its own: one section, or several merged."""

    start: int
    end: int
    path: tuple[str, ...]


def _section_spans(text: str, headings: Sequence[Heading]) -> Iterator[_Span]:
    """The sections of ``text`` (one starts at each heading), a section that is nothing but its
    heading line (a title right above a subheading) joined to the next one."""
    ordered = sorted(headings, key=lambda h: h.start)
    sections: list[tuple[int, tuple[str, ...], bool]] = [(0, (), False)]  # start, path, starts with a heading line
    for heading, path in zip(ordered, heading_paths(ordered), strict=True):
        if heading.start <= 0:
            sections[0] = (0, path, heading.inline)
        elif heading.start < len(text):
            sections.append((heading.start, path, heading.inline))
    ends = [start for start, _, _ in sections[1:]] + [len(text)]
    start = 0
    for (section_start, path, inline), end in zip(sections, ends, strict=True):
        if inline and end < len(text) and not _has_body(text, section_start, end):
            continue
        yield _Span(start, end, path)
        start = end


def common_path(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    """The longest heading path both ``first`` and ``second`` start with."""
    shared = []
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        shared.append(a)
    return tuple(shared)


def _fitting_tokens(
    text: str, span: _Span, count_tokens: Callable[[str], int], max_tokens: int, max_chars: int
) -> int | None:
    """The tokens of ``span`` counted word by word as ``iter_chunks`` counts them, or None once it
    is past one chunk (``max_tokens`` tokens, ``max_chars`` characters): a long section is never
    tokenized whole."""
    if span.end - span.start > max_chars:
        return None
    total = 0
    for word in _iter_words(text, (span.start, span.end), count_tokens, max_tokens, max_chars):
        total += word.tokens
        if total > max_tokens:
            return None
    return total


def _merged_spans(
    text: str,
    spans: Iterator[_Span],
    count_tokens: Callable[[str], int],
    budget: Callable[[tuple[str, ...]], int],
    max_chars: int,
) -> Iterator[_Span]:
    """``spans`` with runs of adjacent short sections merged, greedily, while the run still fits
    one chunk (``budget(path)``: the tokens a chunk of heading path ``path`` may hold, its context
    taken out; ``max_chars``: its characters). A merged run's path is the common start of its
    sections' paths. A section too long to fit is never merged: it is chunked on its own."""
    group: _Span | None = None
    tokens = 0
    for span in spans:
        size = _fitting_tokens(text, span, count_tokens, budget(span.path), max_chars)
        if group is not None and size is not None:
            path = common_path(group.path, span.path)
            if span.end - group.start <= max_chars and tokens + size <= budget(path):
                group, tokens = _Span(group.start, span.end, path), tokens + size
                continue
        if group is not None:
            yield group
        if size is None:
            group, tokens = None, 0
            yield span
        else:
            group, tokens = span, size
    if group is not None:
        yield group


def iter_section_chunks(
    text: str,
    headings: Sequence[Heading],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 16,
    max_chars: int | None = None,
    reserve: Callable[[tuple[str, ...]], int] | None = None,
    merge_sections: bool = False,
) -> Iterator[TextChunk]:
    """Chunks of ``text`` that never span two sections unless merged (a section starts at each heading), one at a time.

    Each section is chunked by ``iter_chunks``; spans are in the whole ``text`` and indices run
    over the whole document. A chunk's ``heading_path`` is its section's. A section that is
    nothing but its heading line (``# Title`` right above ``## Part``) is joined to the next one,
    so a title never becomes a chunk of its own. ``reserve(heading_path)``: the tokens of a
    section's chunks that its context prefix takes (each chunk gets ``max_tokens`` minus them).
    ``merge_sections``: adjacent sections that together fit one chunk become one chunk (its
    ``heading_path`` the common start of theirs), so a document of short sections is not cut
    into tiny chunks.
    """

    def budget(path: tuple[str, ...]) -> int:
        return max(1, max_tokens - reserve(path)) if reserve is not None else max_tokens

    spans = _section_spans(text, headings)
    if merge_sections:
        chars = max(1, max_chars if max_chars is not None else max_chunk_chars(max_tokens))
        spans = _merged_spans(text, spans, count_tokens, budget, chars)
    index = 0
    for span in spans:
        for piece in iter_chunks(text, count_tokens, budget(span.path), overlap_tokens, (span.start, span.end), max_chars):
            yield TextChunk(index, piece.text, piece.char_start, piece.char_end, span.path)
            index += 1


def chunk_sections(
    text: str,
    headings: Sequence[Heading],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 16,
    max_chars: int | None = None,
    reserve: Callable[[tuple[str, ...]], int] | None = None,
    merge_sections: bool = False,
) -> list[TextChunk]:
    """All of ``iter_section_chunks``."""
    return list(iter_section_chunks(text, headings, count_tokens, max_tokens, overlap_tokens, max_chars, reserve,
                                    merge_sections))
