"""Split documents into chunks that fit a text encoder's context, counted in its own tokens.

Words are packed greedily up to ``max_tokens``; a chunk that must be cut prefers to end at a
paragraph break, then at a sentence end, in its second half. Consecutive chunks overlap by about
``overlap_tokens`` tokens so a phrase cut at a boundary is still whole in one chunk.

``chunk_sections`` first cuts a document at its headings (Markdown ``#``, HTML ``<h1>``..), so no
chunk spans two sections, and gives each chunk its heading path (``("Guide", "Install")``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*$")


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


def _split_long_word(start: int, end: int, tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut a word longer than a chunk into character pieces that each fit."""
    pieces = -(-tokens // max_tokens) * 2  # generous: token density varies along the word
    step = max(1, -(-(end - start) // pieces))
    return [(position, min(position + step, end)) for position in range(start, end, step)]


def _words(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[_Word]:
    counter = lru_cache(maxsize=65536)(count_tokens)
    words: list[_Word] = []
    for match in _WORD.finditer(text):
        tokens = counter(match.group())
        if tokens <= max_tokens:
            words.append(_Word(match.start(), match.end(), tokens))
            continue
        for start, end in _split_long_word(match.start(), match.end(), tokens, max_tokens):
            words.append(_Word(start, end, min(counter(text[start:end]), max_tokens)))
    return words


def _boundary_score(text: str, word: _Word) -> int:
    following = text[word.end : word.end + 2]
    if following.startswith("\n\n") or following == "\n" or word.end == len(text):
        return 2
    return 1 if _SENTENCE_END.search(text[word.start : word.end]) else 0


def _chunk_end(text: str, words: list[_Word], first: int, max_tokens: int, min_end: int) -> int:
    """Index one past the last word of the chunk that starts at ``first``; more than ``min_end``
    whenever the greedy fill gets past it (so every chunk moves the text forward)."""
    total, last = 0, first
    while last < len(words) and total + words[last].tokens <= max_tokens:
        total += words[last].tokens
        last += 1
    if last == len(words):
        return last
    last = max(last, first + 1)
    half = max(first + (last - first) // 2, min_end)
    for wanted in (2, 1):
        for candidate in range(last - 1, half - 1, -1):
            if _boundary_score(text, words[candidate]) >= wanted:
                return candidate + 1
    return last


def _next_start(words: list[_Word], first: int, end: int, overlap_tokens: int) -> int:
    start, carried = end, 0
    while start - 1 > first and carried + words[start - 1].tokens <= overlap_tokens:
        start -= 1
        carried += words[start].tokens
    return start


def chunk_text(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 16,
) -> list[TextChunk]:
    """Chunks of ``text`` of at most ``max_tokens`` tokens each (empty text gives none)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    words = _words(text, count_tokens, max_tokens)
    chunks: list[TextChunk] = []
    first, previous_end = 0, 0
    while first < len(words):
        end = _chunk_end(text, words, first, max_tokens, previous_end)
        if end <= previous_end:  # the overlap left no room to advance: start fresh after it
            first = previous_end
            end = _chunk_end(text, words, first, max_tokens, previous_end)
        start_char, end_char = words[first].start, words[end - 1].end
        chunks.append(TextChunk(len(chunks), text[start_char:end_char], start_char, end_char))
        if end >= len(words):
            break
        first, previous_end = _next_start(words, first, end, overlap_tokens), end
    return chunks


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


def _has_body(section: str) -> bool:
    """Whether a section holds more than its heading line."""
    lines = section.strip().split("\n", 1)
    return len(lines) > 1 and bool(lines[1].strip())


def chunk_sections(
    text: str,
    headings: Sequence[Heading],
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 16,
) -> list[TextChunk]:
    """Chunks of ``text`` that never span two sections (a section starts at each heading).

    Each section is chunked by ``chunk_text``; spans stay relative to the whole ``text`` and
    indices run over the whole document. A chunk's ``heading_path`` is its section's. A section
    that is nothing but its heading line (``# Title`` right above ``## Part``) is joined to the
    next one, so a title never becomes a chunk of its own.
    """
    ordered = sorted(headings, key=lambda h: h.start)
    sections: list[tuple[int, tuple[str, ...], bool]] = [(0, (), False)]  # start, path, starts with a heading line
    for heading, path in zip(ordered, heading_paths(ordered), strict=True):
        if heading.start <= 0:
            sections[0] = (0, path, heading.inline)
        elif heading.start < len(text):
            sections.append((heading.start, path, heading.inline))
    ends = [start for start, _, _ in sections[1:]] + [len(text)]
    chunks: list[TextChunk] = []
    start = 0
    for (section_start, path, inline), end in zip(sections, ends, strict=True):
        # A section that is only its heading line (a title right above a subheading) joins the
        # next section instead of becoming a chunk with nothing to retrieve.
        if inline and end < len(text) and not _has_body(text[section_start:end]):
            continue
        for piece in chunk_text(text[start:end], count_tokens, max_tokens, overlap_tokens):
            chunks.append(TextChunk(len(chunks), piece.text, start + piece.char_start, start + piece.char_end, path))
        start = end
    return chunks
