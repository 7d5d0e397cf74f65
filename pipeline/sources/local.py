"""Crawl a local directory tree into a deterministic stream of ``ItemRef``.

The crawler only ever calls ``stat``/``scandir``, except that it reads the first bytes of
``.html``/``.htm`` files (opened non-blocking, read only when regular) to skip pages mmindex wrote
itself (a result gallery carries ``GENERATED_PAGE_MARKER``). It never reads anything else, so a
FIFO or a device named ``photo.jpg`` cannot hang a crawl. Such entries (and broken symlinks) are still yielded,
and the decoder fails them as items (``pipeline.embed.decode.read_item_bytes``), so they show up
as failed rows instead of vanishing.

Rules (all documented on ``crawl_local``):

* Order: entries are sorted by name in every directory and the walk is depth-first, so the
  stream is sorted by path components and identical from run to run.
* Globs: a pattern that contains ``/`` is matched against the whole POSIX relative path; one
  without ``/`` against the basename (so ``*.png`` matches at any depth). ``*`` and ``?`` never
  cross ``/``; ``**`` matches any number of whole segments (``a/**/b.jpg`` matches ``a/b.jpg``);
  ``[...]`` is a character class. Matching is case-sensitive.
* Sidecars: beside an image ``photo.jpg``, ``photo.txt`` is its caption and ``photo.json`` its
  metadata. A ``.txt`` whose stem is the stem of an image in the same directory is a sidecar and
  never an item, whatever the globs say.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mmindex.pipeline.errors import SourceError
from mmindex.pipeline.ids import item_key
from mmindex.pipeline.sources.base import IMAGE_EXTENSIONS, TEXT_EXTENSIONS, ItemRef, Modality

logger = logging.getLogger(__name__)

CAPTION_EXTENSION = "txt"
# In the <head> of every HTML page mmindex writes (the result gallery): such pages are not indexed.
GENERATED_PAGE_MARKER = '<meta name="generator" content="mmindex">'
_HTML_EXTENSIONS = frozenset({"html", "htm"})
_HEAD_BYTES = 2048
METADATA_EXTENSION = "json"


@dataclass(frozen=True, slots=True)
class _Entry:
    """A non-directory entry of one directory, with the stat results the crawl needs."""

    name: str
    stem: str
    ext: str
    abs_path: str
    is_symlink: bool
    size: int
    mtime_ns: int
    is_dir_like: bool = False


@dataclass(frozen=True, slots=True)
class _Filters:
    """Compiled include/exclude globs."""

    include: tuple[tuple[re.Pattern[str], bool], ...]
    exclude: tuple[tuple[re.Pattern[str], bool], ...]

    def wants_file(self, rel_path: str) -> bool:
        """Whether a file passes the include (if any) and exclude globs."""
        if self.include and not _matches_any(self.include, rel_path):
            return False
        return not (self.exclude and _matches_any(self.exclude, rel_path))

    def prunes_dir(self, rel_path: str) -> bool:
        """Whether a directory is excluded as a whole (its contents are not crawled)."""
        return bool(self.exclude) and _matches_any(self.exclude, rel_path)


def crawl_local(
    root: Path,
    *,
    source_id: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    include_hidden: bool = False,
    follow_symlinks: bool = True,
    links_outside_root: bool = False,
) -> Iterator[ItemRef]:
    """Yield one ``ItemRef`` per image or text file under ``root``, in a deterministic order.

    Args:
        root: the directory to crawl (recursively).
        source_id: prefix of every item key; defaults to the resolved absolute POSIX path of root.
        include: globs; when given, only files matching at least one are yielded.
        exclude: globs; matching files are skipped and matching directories are not entered.
        include_hidden: also crawl names that start with a dot (skipped by default).
        follow_symlinks: follow symlinks to files and directories (each real directory is
            crawled once, so symlink loops terminate). When false, symlinks are skipped.
        links_outside_root: also follow links whose real path leaves the root (by default a
            link such as ``notes.txt -> ~/.ssh/id_rsa`` is skipped, with a warning).

    Modality comes from the extension (case-insensitive); other files are ignored. Items carry
    ``path`` = POSIX path relative to root, ``uri`` = absolute local path (under the resolved
    root), ``key`` = ``item_key(source_id, path)``. FIFOs, sockets, devices and broken symlinks
    with a known extension are yielded (size 0 where unknown) and fail at decode time. An
    unreadable subdirectory is logged as a warning and skipped.

    Raises:
        SourceError: root is missing, not a directory, or cannot be listed. Raised by the call
            itself, before the first item is asked for.
    """
    resolved_root = resolve_source_root(root)
    sid = source_id if source_id is not None else resolved_root.as_posix()
    walker = _Walker(
        sid=sid,
        filters=_Filters(include=_compile_all(include), exclude=_compile_all(exclude)),
        include_hidden=include_hidden,
        follow_symlinks=follow_symlinks,
        real_root=None if links_outside_root else str(resolved_root),
    )
    if not walker.first_visit(str(resolved_root)):
        raise SourceError(f"cannot stat source directory: {resolved_root}")
    root_entries = _list_dir(str(resolved_root), include_hidden=include_hidden, strict=True)
    return walker.walk(root_entries)


def resolve_source_root(root: Path) -> Path:
    """The resolved absolute root of a folder source, or a one-line ``SourceError`` (missing, not a
    folder). A run checks this before it touches the index root or loads a model."""
    path = Path(root).expanduser()
    if not path.exists():
        raise SourceError(f"source directory not found: {path}")
    if not path.is_dir():
        raise SourceError(f"source is not a directory: {path}")
    return path.resolve()


def _list_dir(dir_path: str, *, include_hidden: bool, strict: bool = False) -> list[os.DirEntry[str]]:
    """Entries of a directory sorted by name; hidden ones dropped unless asked for.

    An unreadable directory raises ``SourceError`` when ``strict`` (the root), otherwise logs a
    warning and counts as empty.
    """
    try:
        with os.scandir(dir_path) as iterator:
            entries = list(iterator)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        if strict:
            raise SourceError(f"cannot list source directory {dir_path}: {reason}") from exc
        logger.warning("skipping unreadable directory %s: %s", dir_path, reason)
        return []
    kept = [entry for entry in entries if include_hidden or not entry.name.startswith(".")]
    return sorted(kept, key=lambda entry: entry.name)


@dataclass(slots=True)
class _Walker:
    """Depth-first walk with an explicit stack (no recursion limit on deep trees)."""

    sid: str
    filters: _Filters
    include_hidden: bool
    follow_symlinks: bool
    real_root: str | None = None  # links must stay under it (None: follow links anywhere)
    visited: set[tuple[int, int]] = field(default_factory=set)

    def walk(self, root_entries: list[os.DirEntry[str]]) -> Iterator[ItemRef]:
        """Yield the items under the root, given the root's sorted entries."""
        stack: list[Iterator[tuple[str, _Entry, _SidecarIndex]]] = [self._directory("", root_entries)]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                continue
            rel_path, entry, sidecars = step
            if entry.is_dir_like:
                if not self.filters.prunes_dir(rel_path) and self.first_visit(entry.abs_path):
                    children = _list_dir(entry.abs_path, include_hidden=self.include_hidden)
                    stack.append(self._directory(f"{rel_path}/", children))
                continue
            ref = self._item(rel_path, entry, sidecars)
            if ref is not None:
                yield ref

    def first_visit(self, dir_path: str) -> bool:
        """Record a real directory as visited; False when seen before (loop or alias) or gone."""
        try:
            info = os.stat(dir_path)
        except OSError:
            return False
        identity = (info.st_dev, info.st_ino)
        if identity in self.visited:
            logger.debug("not crawling %s twice (symlink loop or alias)", dir_path)
            return False
        self.visited.add(identity)
        return True

    def _directory(
        self, rel_dir: str, entries: list[os.DirEntry[str]]
    ) -> Iterator[tuple[str, _Entry, _SidecarIndex]]:
        """Stat one directory's entries, index its sidecars, then hand out its entries in order."""
        described: list[_Entry] = []
        for entry in entries:
            if not _is_valid_name(entry, rel_dir):
                continue
            if entry.is_symlink() and (not self.follow_symlinks or not self._stays_inside(entry)):
                continue
            info = _describe(entry)
            if info is not None:
                described.append(info)
        sidecars = _SidecarIndex.build(described)
        return ((f"{rel_dir}{entry.name}", entry, sidecars) for entry in described)

    def _stays_inside(self, entry: os.DirEntry[str]) -> bool:
        """Whether a link's real path is under the root (always, when links may leave it)."""
        if self.real_root is None:
            return True
        real = os.path.realpath(entry.path)
        if real == self.real_root or real.startswith(self.real_root.rstrip("/") + "/"):
            return True
        logger.warning("not following %s: it points outside the source folder (--follow-links-outside)", entry.path)
        return False

    def _item(self, rel_path: str, entry: _Entry, sidecars: _SidecarIndex) -> ItemRef | None:
        """The ``ItemRef`` of a non-directory entry, or None when it is not an item."""
        modality = _modality(entry.ext)
        if modality is None or sidecars.is_sidecar(entry) or not self.filters.wants_file(rel_path):
            return None
        if entry.ext in _HTML_EXTENSIONS and _written_by_mmindex(entry.abs_path):
            logger.info("not indexing %s: a page mmindex wrote (a result gallery)", rel_path)
            return None
        return _item_ref(entry, modality=modality, rel_path=rel_path, sid=self.sid, sidecars=sidecars)


def _written_by_mmindex(path: str) -> bool:
    """True when the file's head carries ``GENERATED_PAGE_MARKER`` (only a regular file is read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False  # the decoder reports an unreadable file as a failed item
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, _HEAD_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
    return GENERATED_PAGE_MARKER.encode("ascii") in head


def _is_valid_name(entry: os.DirEntry[str], rel_dir: str) -> bool:
    """Names that are not valid UTF-8 cannot become item keys: warn and skip them."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("skipping %r in %r: its name is not valid UTF-8", entry.name, rel_dir or ".")
        return False
    return True


def _describe(entry: os.DirEntry[str]) -> _Entry | None:
    """Stat an entry (following symlinks) without opening it; None when it vanished."""
    stem, dot, ext = entry.name.rpartition(".")
    if not dot or not stem.strip("."):  # no extension, or a dotfile like ".jpg" (splitext semantics)
        stem, ext = entry.name, ""
    ext = ext.lower()
    is_symlink = entry.is_symlink()
    try:
        info = entry.stat(follow_symlinks=True)
    except OSError as exc:
        if is_symlink:  # dangling or looping link: yielded, and failed by the decoder
            link_info = _lstat_or_none(entry)
            if link_info is None:
                return None
            return _Entry(entry.name, stem, ext, entry.path, True, 0, link_info.st_mtime_ns)
        if not isinstance(exc, FileNotFoundError):  # FileNotFoundError: vanished while crawling
            logger.warning("cannot stat %s: %s", entry.path, exc.strerror or exc.__class__.__name__)
        return None
    is_dir = stat.S_ISDIR(info.st_mode)
    size = info.st_size if stat.S_ISREG(info.st_mode) else 0
    return _Entry(entry.name, stem, ext, entry.path, is_symlink, size, info.st_mtime_ns, is_dir_like=is_dir)


def _lstat_or_none(entry: os.DirEntry[str]) -> os.stat_result | None:
    """``lstat`` of an entry, or None when it is gone."""
    try:
        return entry.stat(follow_symlinks=False)
    except OSError:
        return None


def _modality(ext: str) -> Modality | None:
    """Modality of a lower-case extension, or None for files we do not index."""
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in TEXT_EXTENSIONS:
        return "text"
    return None


@dataclass(frozen=True, slots=True)
class _SidecarIndex:
    """Images, captions and metadata files of one directory, by stem."""

    image_stems: frozenset[str]
    captions: dict[str, _Entry]
    metadata: dict[str, _Entry]

    @classmethod
    def build(cls, entries: Iterable[_Entry]) -> _SidecarIndex:
        """Index the non-directory entries of a directory (first name in sorted order wins)."""
        image_stems: set[str] = set()
        captions: dict[str, _Entry] = {}
        metadata: dict[str, _Entry] = {}
        for entry in entries:
            if entry.is_dir_like:
                continue
            if entry.ext in IMAGE_EXTENSIONS:
                image_stems.add(entry.stem)
            elif entry.ext == CAPTION_EXTENSION:
                captions.setdefault(entry.stem, entry)
            elif entry.ext == METADATA_EXTENSION:
                metadata.setdefault(entry.stem, entry)
        return cls(frozenset(image_stems), captions, metadata)

    def is_sidecar(self, entry: _Entry) -> bool:
        """A ``.txt`` beside an image of the same stem is a caption, not an item."""
        return entry.ext == CAPTION_EXTENSION and entry.stem in self.image_stems

    def caption_for(self, entry: _Entry) -> _Entry | None:
        """An image's caption sidecar, if any."""
        return self.captions.get(entry.stem)

    def metadata_for(self, entry: _Entry) -> _Entry | None:
        """An image's metadata sidecar, if any."""
        return self.metadata.get(entry.stem)


def _sidecar_signature(caption: _Entry | None, metadata: _Entry | None) -> str | None:
    """Cheap change signal of an image's sidecars: their names, sizes and mtimes."""
    if caption is None and metadata is None:
        return None
    return "|".join(
        f"{entry.name}:{entry.size}:{entry.mtime_ns}" if entry is not None else "-" for entry in (caption, metadata)
    )


def _item_ref(entry: _Entry, *, modality: Modality, rel_path: str, sid: str, sidecars: _SidecarIndex) -> ItemRef:
    """Build the ``ItemRef`` of one file."""
    caption = sidecars.caption_for(entry) if modality == "image" else None
    metadata = sidecars.metadata_for(entry) if modality == "image" else None
    return ItemRef(
        key=item_key(sid, rel_path),
        source_id=sid,
        uri=entry.abs_path,
        path=rel_path,
        ext=entry.ext,
        modality=modality,
        size=entry.size,
        mtime_ns=entry.mtime_ns,
        caption_path=caption.abs_path if caption is not None else None,
        metadata_path=metadata.abs_path if metadata is not None else None,
        sidecar_sig=_sidecar_signature(caption, metadata),
    )


def _compile_all(patterns: Sequence[str]) -> tuple[tuple[re.Pattern[str], bool], ...]:
    """Compile globs; each is paired with whether it matches the full path (contains ``/``)."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    return tuple((_compile_glob(pattern), "/" in pattern) for pattern in patterns)


def _matches_any(compiled: tuple[tuple[re.Pattern[str], bool], ...], rel_path: str) -> bool:
    """Whether a relative path matches one of the compiled globs."""
    basename = rel_path.rsplit("/", 1)[-1]
    return any(regex.fullmatch(rel_path if full else basename) for regex, full in compiled)


@lru_cache(maxsize=256)
def _compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a glob into a regex: ``**`` spans segments, ``*``/``?`` stay within one."""
    glob = pattern.strip("/")
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            piece, i = _char_class(glob, i)
            out.append(piece)
        else:
            out.append(re.escape(char))
            i += 1
    return re.compile("".join(out))


def _char_class(glob: str, start: int) -> tuple[str, int]:
    """Translate ``[...]`` at ``start``; an unclosed ``[`` is a literal."""
    end = start + 1
    if end < len(glob) and glob[end] in "!^":
        end += 1
    if end < len(glob) and glob[end] == "]":
        end += 1
    while end < len(glob) and glob[end] != "]":
        end += 1
    if end >= len(glob):
        return re.escape("["), start + 1
    body = glob[start + 1 : end]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    body = body.replace("\\", "\\\\")
    return ("[^/" if negate else "[") + body + "]", end + 1
