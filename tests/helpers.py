"""Helpers shared by the test modules (their fixtures live in ``conftest.py``).

- the CLI: ``run_cli``, which runs ``mmindex`` in this process and returns exit code, stdout, stderr;
- servers: ``free_port`` (everything the tests start listens on 127.0.0.1 only);
- reading a collection back: ``scroll_all`` and ``collection_points`` page through the whole store;
- spies: real models wrapped to count (``CountingEmbedder``, ``CountingText``) or hold
  (``BlockingEmbedder``) their calls;
- deadlines: ``finishes_within`` fails a test instead of letting a hang stall the suite;
- documents: ``make_pdf``, a minimal valid PDF writer;
- the query tests' reference: every stored vector read straight from the Parquet shards (not from
  Qdrant) and ranked by brute force (``Reference``); expected fused vectors are computed here with
  plain NumPy, independently of ``mmindex.pipeline.search.fusion``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from mmindex.pipeline.cli import app

COLLECTION = "photos"
BACKENDS = ("edge", "qdrant-client")
SCORE_TOL = 2e-4
# fp32 everywhere the tests compute expectations: on CPUs with bf16 matrix units ``auto`` means
# bf16, whose results depend on batch shapes at the 1e-3 level.
PRECISION = "fp32"
WAIT_S = 120  # a bound on waits that only a broken implementation reaches
# A short Markdown guide of three sections under a title (the RAG and serve passage tests).
GUIDE = """# Widget guide

The widget is a small appliance for the home office.

## Installation

Install it with the package manager: pip install widget-XK42 and restart the shell.

## Rotating credentials

To rotate the API key, open the settings page, choose Security and press Rotate. The old key
stops working after one hour.

## Backups

Nightly backups are kept for thirty days in the cold storage bucket.
"""


# -- the CLI ---------------------------------------------------------------------------------------


class CliResult(NamedTuple):
    """What a CLI invocation returned (unpacks as ``code, stdout, stderr``)."""

    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> CliResult:
    """Run ``mmindex ARGS`` in this process (in fp32, plus ``env``; ``stdin`` answers prompts)."""
    result = CliRunner().invoke(app, list(args), env={"MMINDEX_PRECISION": PRECISION, **(env or {})}, input=stdin)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: CliResult, message: str, code: int | None = None) -> None:
    """The command failed with ``message`` as one line on stderr, no traceback (and exit ``code``)."""
    assert result.code != 0, result.stdout
    if code is not None:
        assert result.code == code, (result.code, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- reading a collection back ---------------------------------------------------------------------


def scroll_all(store: Any, physical_name: str, *, with_vectors: bool = False, page: int = 64) -> list[Any]:
    """Every point of a store collection, paging with the store's own ``scroll`` (in id order)."""
    points: list[Any] = []
    offset = None
    while True:
        found = store.scroll(physical_name, limit=page, offset=offset, with_vectors=with_vectors)
        points.extend(found.points)
        if found.next_offset is None:
            return points
        offset = found.next_offset


def collection_points(settings: Any, collection: str, *, with_vectors: bool = False) -> dict[str, Any]:
    """Every point of the collection's current version, by point id."""
    from mmindex.pipeline.collection import collection_state
    from mmindex.pipeline.store.open_store import open_store

    physical = collection_state(settings, collection).current.physical_name
    store = open_store(settings)
    try:
        return {point.id: point for point in scroll_all(store, physical, with_vectors=with_vectors)}
    finally:
        store.close()


# -- spies -----------------------------------------------------------------------------------------


class CountingEmbedder:
    """Wraps a real CLIP embedder and records every model call."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.images = 0
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_images(self, pixels: Any) -> np.ndarray:
        self.images += int(pixels.shape[0])
        return self._inner.encode_images(pixels)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        self.texts.extend(texts)
        return self._inner.encode_texts(texts, batch_size)


class CountingText:
    """Wraps the real text model and records every text it encodes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.texts.extend(texts)
        return self._inner.encode(texts, batch_size)


class BlockingEmbedder:
    """A real embedder that pauses at its first image batch until the test releases it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.blocked = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode_images(self, pixels: Any) -> np.ndarray:
        self.blocked.set()
        if not self.release.wait(timeout=WAIT_S):
            raise TimeoutError("the test never released the embedder")
        return self._inner.encode_images(pixels)


# -- deadlines -------------------------------------------------------------------------------------


def finishes_within(seconds: float, fn: Callable[[], object]) -> object:
    """Run ``fn`` in a daemon thread; fail (instead of hanging) if it takes too long."""
    result: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"did not finish within {seconds}s"
    if errors:
        raise errors[0]
    return result[0] if result else None


# -- documents -------------------------------------------------------------------------------------


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A PDF 1.4 file with one page per item of ``pages``, each a list of text lines (Helvetica)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * n for n in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for number, lines in enumerate(pages):
        content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({_pdf_escape(line)}) Tj T*" for line in lines) + " ET"
        stream = content.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {page_ids[number] + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{index} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# -- the query tests' reference ---------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Every indexed point as read from the Parquet shards."""

    keys: list[str]
    vectors: np.ndarray
    modality: list[str]
    rows: list[dict[str, Any]]

    def index_of(self, key: str) -> int:
        return self.keys.index(key)

    def vector(self, key: str) -> np.ndarray:
        return self.vectors[self.index_of(key)]

    def ranking(
        self, query: np.ndarray, allowed: Callable[[int], bool] = lambda _i: True, min_score: float | None = None
    ) -> list[tuple[str, float]]:
        """Brute-force cosine ranking of the allowed points, best first."""
        q = np.asarray(query, dtype=np.float64)
        scores = self.vectors.astype(np.float64) @ (q / np.linalg.norm(q))
        order = [int(i) for i in np.argsort(-scores, kind="stable") if allowed(int(i))]
        ranked = [(self.keys[i], float(scores[i])) for i in order]
        if min_score is not None:
            ranked = [(key, score) for key, score in ranked if score >= min_score]
        return ranked


def read_reference(root: Path) -> Reference:
    """The latest ``ok`` row of every key in the root's shards."""
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "shards").rglob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            latest[row["key"]] = row
    rows = [row for row in latest.values() if row["status"] == "ok"]
    vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return Reference([row["key"] for row in rows], vectors, [row["modality"] for row in rows], rows)


def fused(parts: Sequence[tuple[np.ndarray, float]]) -> tuple[np.ndarray, float]:
    """``Σ w_i e_i / ‖Σ w_i e_i‖`` (signed weights) with NumPy, and the norm before normalizing."""
    total = np.zeros_like(np.asarray(parts[0][0], dtype=np.float64))
    for vector, weight in parts:
        v = np.asarray(vector, dtype=np.float64)
        total += weight * v / np.linalg.norm(v)
    norm = float(np.linalg.norm(total))
    return total / norm, norm


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def assert_hits(hits: list[dict[str, Any]], ranking: list[tuple[str, float]], k: int) -> None:
    """The hits are the top ``k`` of ``ranking``: same scores rank by rank, each hit's own reference
    score equal to its rank's (the corpus holds identical text chunks, whose order is a tie)."""
    expected = ranking[:k]
    assert len(hits) == len(expected), ([h["key"] for h in hits], expected)
    np.testing.assert_allclose([hit["score"] for hit in hits], [score for _, score in expected], atol=SCORE_TOL)
    reference = dict(ranking)
    keys = [hit["key"] for hit in hits]
    assert len(set(keys)) == len(keys)
    for key, (expected_key, score) in zip(keys, expected, strict=True):
        assert key in reference and abs(reference[key] - score) <= SCORE_TOL, (key, expected_key)


def reference_mmr(
    ref: Reference,
    query: np.ndarray,
    limit: int,
    diversity: float,
    candidates: int,
    allowed: Callable[[int], bool] = lambda _i: True,
) -> list[tuple[str, float]]:
    """Greedy MMR: first the most relevant, then argmax λ·rel − (1−λ)·max sim to the picked, λ = 1 − diversity."""
    pool = ref.ranking(query, allowed)[:candidates]
    vectors = np.stack([unit(ref.vector(key)) for key, _ in pool])
    relevance = np.array([score for _, score in pool])
    lam = 1.0 - diversity
    picked = [0]
    while len(picked) < min(limit, len(pool)):
        pending = [i for i in range(len(pool)) if i not in picked]
        similarity = vectors[pending] @ vectors[picked].T
        scores = lam * relevance[pending] - (1 - lam) * similarity.max(axis=1)
        picked.append(pending[int(np.argmax(scores))])
    return [pool[i] for i in picked]


def assert_same_picks(hits: list[dict[str, Any]], expected: list[tuple[str, float]], ref: Reference) -> None:
    """Same relevance rank by rank; identical text chunks are interchangeable."""
    np.testing.assert_allclose([h["score"] for h in hits], [s for _, s in expected], atol=SCORE_TOL)
    for hit, (key, _) in zip(hits, expected, strict=True):
        assert np.allclose(ref.vector(hit["key"]), ref.vector(key), atol=1e-5), (hit["key"], key)


@dataclass(frozen=True)
class Indexed:
    """An indexed corpus: where it lives, the CLI flags that reach it, the index report, the reference."""

    backend: str
    root: Path
    corpus: Path
    flags: list[str]
    qdrant_url: str | None
    report: dict[str, Any]
    reference: Reference

    def query(self, *args: str) -> list[dict[str, Any]]:
        code, stdout, stderr = run_cli("query", "--collection", COLLECTION, *args, *self.flags, "--device", "cpu", "--json")
        assert code == 0, stderr
        return json.loads(stdout)

    def query_fails(self, *args: str) -> str:
        result = run_cli("query", "--collection", COLLECTION, *args, *self.flags)
        assert_one_line_error(result, "")
        return result.stderr

    def key(self, relative: str) -> str:
        return f"{self.corpus.resolve().as_posix()}/{relative}"

    def settings(self) -> Any:
        from mmindex.schemas.config import load_settings

        return load_settings(root=self.root, qdrant_url=self.qdrant_url, device="cpu", precision=PRECISION)


def index_corpus(backend: str, base: Path, corpus: Path, local_dir: Path) -> Indexed:
    """Index ``corpus`` into ``photos`` under ``base`` with the tiny model on ``backend``."""
    root = base / "root"
    qdrant_url = f"local:{base / 'qdrant-client'}" if backend == "qdrant-client" else None
    backend_flags = ["--qdrant-url", qdrant_url] if qdrant_url else []
    code, stdout, stderr = run_cli(
        "index", str(corpus), "--collection", COLLECTION, "--root", str(root),
        "--model", f"local-dir:{local_dir}", "--workers", "0", "--json", *backend_flags,
    )
    assert code == 0, stderr
    return Indexed(backend, root, corpus, ["--root", str(root), *backend_flags], qdrant_url, json.loads(stdout),
                   read_reference(root))


def image_vector(embedder: Any, path: Path) -> np.ndarray:
    """A query image's vector as the query path computes it (one image, the model's own preprocessing).

    Stored image vectors come from batched ingest, possibly at another precision than a query,
    so tests expect a query image's vector from this, not from the stored one.
    """
    from mmindex.pipeline.search.query import image_query_vector
    from mmindex.schemas.config import ImageLimits

    return image_query_vector(embedder, path, ImageLimits(10**9))


# -- an HTTP server with hostile routes (127.0.0.1 only) -----------------------------------------


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving ``self._handler()``, started by
    ``with`` and shut down at its end; subclasses set their state, then call ``_listen()``."""

    def _handler(self) -> type:
        raise NotImplementedError

    def _listen(self) -> None:
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ImageServer(LoopbackServer):
    """A real HTTP server on 127.0.0.1 for the fetch tests: good images and every hostile behaviour
    the fetcher must survive. It counts requests and the bodies it sent, per path, and records the
    Host header of each request. Every loop it runs is bounded.

    Routes (``url(path)``): ``/img/NAME`` (an image added with ``add_image``; ETag + 304),
    ``/dated/NAME`` (the same image with Last-Modified only, + 304), ``/plain/NAME`` (the same
    image without validators: never a 304),
    ``/missing.jpg`` (404), ``/flaky.jpg`` (503 once, then the image ``flaky``), ``/busy.jpg``
    (429 with Retry-After: 1 once, then ``flaky``), ``/trickle.jpg`` (a byte every 2 s),
    ``/endless.jpg`` (a chunked body that never ends), ``/huge.jpg`` (Content-Length of 5 GB),
    ``/to-file.jpg`` (redirect to file:///etc/passwd), ``/loop.jpg`` (redirects to itself),
    ``/noai.jpg`` (``X-Robots-Tag: noai``), ``/page.jpg`` (HTML), ``/to-other/PORT`` (a redirect to
    127.0.0.2:PORT).
    """

    def __init__(self) -> None:
        self.images: dict[str, tuple[bytes, str]] = {}
        self.modified: dict[str, int] = {}  # per image, how many times add_image set it (its Last-Modified)
        self.requests: dict[str, int] = {}
        self.bodies: dict[str, int] = {}
        self.hosts: list[str] = []
        self.lock = threading.Lock()
        self._listen()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add_image(self, name: str, data: bytes, mime: str = "image/jpeg", route: str = "img") -> str:
        with self.lock:
            self.images[name] = (data, mime)
            self.modified[name] = self.modified.get(name, 0) + 1
        return self.url(f"/{route}/{name}")

    def bodies_sent(self) -> int:
        with self.lock:
            return sum(self.bodies.values())

    def _count(self, table: dict[str, int], path: str) -> int:
        with self.lock:
            table[path] = table.get(path, 0) + 1
            return table[path]

    def _handler(self) -> type:
        import hashlib
        import time
        from http.server import BaseHTTPRequestHandler

        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def _image(self, name: str, validators: str = "img") -> None:
                data, mime = server.images[name]
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(1_600_000_000 + server.modified[name]))
                if validators == "img" and self.headers.get("If-None-Match") == etag:
                    self._send(304, headers={"ETag": etag})
                elif validators == "dated" and self.headers.get("If-Modified-Since") == modified:
                    self._send(304, headers={"Last-Modified": modified})
                else:
                    server._count(server.bodies, self.path)
                    headers = {"img": {"ETag": etag}, "dated": {"Last-Modified": modified}}.get(validators, {})
                    self._send(200, data, {"Content-Type": mime, **headers})

            def do_GET(self) -> None:
                with server.lock:
                    server.hosts.append(self.headers.get("Host", ""))
                calls = server._count(server.requests, self.path)
                path = self.path.split("?", 1)[0]  # a signed URL's query is not part of the route
                try:
                    self._route(path, calls)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def _route(self, path: str, calls: int) -> None:
                route, _, name = path[1:].partition("/")
                if route in ("img", "dated", "plain") and name in server.images:
                    self._image(name, route)
                elif path in ("/flaky.jpg", "/busy.jpg"):
                    if calls == 1:
                        self._send(503 if path == "/flaky.jpg" else 429, headers={"Retry-After": "1"})
                    else:
                        self._image("flaky")
                elif path == "/trickle.jpg":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    for _ in range(20):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(2)
                elif path == "/endless.jpg":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"\xff" * 65536
                    for _ in range(100_000):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                elif path == "/huge.jpg":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(5 * 10**9))
                    self.end_headers()
                    self.wfile.write(b"\xff" * 1024)
                elif path == "/to-file.jpg":
                    self._send(302, headers={"Location": "file:///etc/passwd"})
                elif path == "/loop.jpg":
                    self._send(302, headers={"Location": "/loop.jpg"})
                elif path.startswith("/to-other/"):
                    self._send(302, headers={"Location": f"http://127.0.0.2:{path.rsplit('/', 1)[1]}/img/x"})
                elif path == "/noai.jpg":
                    data, mime = server.images["flaky"]
                    self._send(200, data, {"Content-Type": mime, "X-Robots-Tag": "noai"})
                elif path == "/page.jpg":
                    self._send(200, b"<html><body>not an image</body></html>", {"Content-Type": "text/html"})
                else:
                    self._send(404, headers={"Content-Type": "text/plain"})

        return Handler
