"""A URL manifest as a ``Source``: rows of a CSV/TSV/JSON Lines/Parquet file (optionally gzipped),
local or at an fsspec URL, each an image to fetch over HTTP(S).

Rows are streamed in record batches (pyarrow) and turned into ``ItemRef``s one batch at a time.
Per row: the URL (``--url-column``, default the first of ``url``, ``URL``, ``image_url``), the
caption (``--caption-column``, default the first of ``caption``, ``TEXT``, ``text``), the key
(``--key-column``, default the normalized URL), and every other column as metadata, the payload's
``meta.NAME`` (filterable: ``--where meta.license=cc-by``). A row's change signal is the hash of
its URL, caption and metadata (``sidecar_sig``): an unchanged row is an unchanged item and costs no
download. ``.json`` is read as JSON Lines unless it holds one JSON array, allowed up to
``MAX_JSON_ARRAY_BYTES``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from mmindex.pipeline.errors import SourceError
from mmindex.pipeline.ids import item_key
from mmindex.pipeline.sources.base import IMAGE_EXTENSIONS, UNKNOWN_SIZE, ItemReader, ItemRef
from mmindex.pipeline.sources.resolve import is_url
from mmindex.schemas.state import SourceSpec

URL_COLUMNS = ("url", "URL", "image_url")
CAPTION_COLUMNS = ("caption", "TEXT", "text")
MAX_JSON_ARRAY_BYTES = 64 * 1024 * 1024
BATCH_ROWS = 65_536
_BLOCK_BYTES = 1 << 22


def normalized_url(url: str) -> str:
    """A URL as an item key: scheme and host lower-cased, default port, credentials and fragment dropped."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host if port is None or port == default else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def _suffixes(name: str) -> tuple[str, bool]:
    """The manifest's format suffix and whether it is gzipped."""
    lowered = name.lower().split("?", 1)[0]
    gz = lowered.endswith(".gz")
    lowered = lowered.removesuffix(".gz")
    return lowered.rsplit(".", 1)[-1], gz


@contextlib.contextmanager
def _opened(location: str) -> Iterator[IO[bytes]]:
    """The manifest's (decompressed) byte stream, local or fsspec."""
    _, gz = _suffixes(location)
    try:
        if is_url(location):
            import fsspec

            with fsspec.open(location, "rb", compression="gzip" if gz else None) as handle:
                yield handle
            return
        if gz:
            import gzip

            with gzip.open(location, "rb") as unzipped:
                yield cast("IO[bytes]", unzipped)
            return
        with open(location, "rb") as handle:
            yield handle
    except FileNotFoundError as exc:
        raise SourceError(f"manifest not found: {location}") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read manifest {location}: {exc}") from exc


def _batches(stream: IO[bytes], fmt: str, location: str) -> Iterator[pa.RecordBatch]:
    """Record batches of the manifest, streamed."""
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    source = pa.PythonFile(stream, mode="r")
    if fmt == "parquet":
        data = stream if stream.seekable() else io.BytesIO(stream.read())
        yield from pq.ParquetFile(data).iter_batches(batch_size=BATCH_ROWS)
    elif fmt in ("csv", "tsv"):
        parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
        yield from pcsv.open_csv(source, read_options=pcsv.ReadOptions(block_size=_BLOCK_BYTES), parse_options=parse)
    elif fmt in ("jsonl", "json"):
        head = stream.read(1)
        while head.isspace():
            head = stream.read(1)
        if head == b"[":
            yield from _json_array(head + stream.read(MAX_JSON_ARRAY_BYTES), location)
            return
        rest = pa.PythonFile(_Prefixed(head, stream), mode="r")
        yield from pjson.open_json(rest, read_options=pjson.ReadOptions(block_size=_BLOCK_BYTES))
    else:
        raise SourceError(f"not a manifest format: {location} (.csv .tsv .jsonl .json .parquet, optionally .gz)")


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.head:
            size = min(len(view), len(self.head))
            view[:size], self.head = self.head[:size], self.head[size:]
            return size
        chunk = self.stream.read(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)


def _json_array(data: bytes, location: str) -> Iterator[pa.RecordBatch]:
    """A manifest that is one JSON array (small ones only)."""
    if len(data) >= MAX_JSON_ARRAY_BYTES:
        raise SourceError(
            f"manifest {location} is a JSON array over {MAX_JSON_ARRAY_BYTES} bytes: write it as JSON Lines instead"
        )
    try:
        rows = json.loads(data)
    except ValueError as exc:
        raise SourceError(f"manifest {location} is not valid JSON: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise SourceError(f"manifest {location} must be a JSON array of objects")
    for start in range(0, len(rows), BATCH_ROWS):
        yield pa.RecordBatch.from_pylist(rows[start : start + BATCH_ROWS])


def _pick(names: Sequence[str], chosen: str | None, defaults: Sequence[str], what: str, location: str) -> str | None:
    """The column holding ``what``: the one asked for (which must exist), else the first default present."""
    if chosen is not None:
        if chosen not in names:
            raise SourceError(f"manifest {location} has no {what} column {chosen!r} (columns: {', '.join(names)})")
        return chosen
    return next((name for name in defaults if name in names), None)


def _extension(url: str) -> str:
    """An image extension from the URL's path, or ``""``."""
    path = urlsplit(url).path if "://" in url else url
    ext = path.rsplit("/", 1)[-1].rpartition(".")[2].lower()
    return ext if ext in IMAGE_EXTENSIONS else ""


def row_signature(url: str, caption: str | None, metadata_json: str | None) -> str:
    """The change signal of a manifest row."""
    return "row:" + hashlib.sha256(json.dumps([url, caption, metadata_json]).encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ManifestSource:
    """The rows of a manifest file, each an image at a URL."""

    source_id: str
    spec: SourceSpec

    def items(self) -> Iterator[ItemRef]:
        location = self.spec.path
        fmt, _ = _suffixes(location)
        with _opened(location) as stream:
            try:
                for batch in _batches(stream, fmt, location):
                    yield from self._refs(batch)
            except pa.ArrowException as exc:
                raise SourceError(f"cannot parse manifest {location}: {str(exc).splitlines()[0]}") from exc

    def _refs(self, batch: pa.RecordBatch) -> Iterator[ItemRef]:
        names = batch.schema.names
        columns = self.spec.columns
        url_column = _pick(names, columns.url, URL_COLUMNS, "URL", self.spec.path)
        if url_column is None:
            raise SourceError(f"manifest {self.spec.path} has no URL column (tried {', '.join(URL_COLUMNS)}; "
                              "pass --url-column)")
        caption_column = _pick(names, columns.caption, CAPTION_COLUMNS, "caption", self.spec.path)
        key_column = _pick(names, columns.key, (), "key", self.spec.path)
        meta_columns = [name for name in names if name not in {url_column, caption_column, key_column}]
        urls = batch.column(url_column).to_pylist()
        captions = batch.column(caption_column).to_pylist() if caption_column else [None] * batch.num_rows
        keys = batch.column(key_column).to_pylist() if key_column else [None] * batch.num_rows
        metas = {name: batch.column(name).to_pylist() for name in meta_columns}
        for row, url in enumerate(urls):
            if url is None or not str(url).strip():
                continue
            url = str(url).strip()
            meta = {name: values[row] for name, values in metas.items() if values[row] is not None}
            metadata_json = json.dumps(meta, sort_keys=True, default=str) if meta else None
            caption = None if captions[row] is None else str(captions[row])
            path = str(keys[row]) if keys[row] is not None else normalized_url(url)
            yield ItemRef(
                key=item_key(self.source_id, path), source_id=self.source_id, uri=url, path=path,
                ext=_extension(url), modality="image", size=UNKNOWN_SIZE, mtime_ns=0,
                sidecar_sig=row_signature(url, caption, metadata_json), caption=caption, metadata_json=metadata_json,
            )

    def reader(self, refs: Sequence[ItemRef]) -> ItemReader:
        from mmindex.pipeline.sources.fetch import HttpFetcher, Prefetcher

        return Prefetcher(HttpFetcher(self.spec.fetch), refs)
