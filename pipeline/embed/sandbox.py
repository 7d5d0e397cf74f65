"""Extract the text of parsed documents (HTML, PDF) in a child process with a time and memory budget.

A hostile or broken file can make a parser loop, recurse or allocate without end (pypdf has had
such advisories, bs4 builds a tree of any size). The parsers therefore run in one long-lived
child process (``python -m`` this module, talking over a socket pair) whose address space is
capped with ``RLIMIT_AS`` at its size after imports plus ``DocumentLimits.memory_bytes``, and
each document gets ``DocumentLimits.seconds_for`` seconds. A document that runs out of either fails with a reason
(the child is stopped and a fresh one started for the next document); the run goes on.

Plain text and Markdown need no parser and are extracted in the calling process: the child's
costs (about 0.5 s to start it per work unit with such documents, a copy of the bytes each way,
under a millisecond for a small page) are only paid for HTML and PDF.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

from mmindex.pipeline.embed.decode import short_reason
from mmindex.pipeline.embed.extract import ExtractedText, extract_document
from mmindex.pipeline.errors import DecodeError, MmindexError
from mmindex.schemas.config import DEFAULT_MAX_DOCUMENT_BYTES

# How long the child may take to start (its imports), not counted in any document's budget.
STARTUP_SECONDS = 120.0
# Extensions whose text needs a parser, run in the child process.
PARSED_EXTENSIONS = frozenset({"html", "htm", "pdf"})


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What one document may cost: its file size, the parser's memory and time."""

    max_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    # Address space the parser child may add to what it holds after its imports.
    memory_bytes: int = 2 * 1024 * 1024 * 1024
    base_seconds: float = 60.0
    seconds_per_mb: float = 2.0

    def seconds_for(self, size: int) -> float:
        """The time budget of a document of ``size`` bytes."""
        return self.base_seconds + self.seconds_per_mb * size / 1_000_000


def _limit_address_space(extra_bytes: int) -> None:
    """Cap this process's address space at its current size plus ``extra_bytes`` (Linux)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _serve(connection: Connection, memory_bytes: int) -> None:
    """The child: extract each (bytes, ext, max_text_chars) received, answer ("ok", text) or ("error", reason)."""
    _limit_address_space(memory_bytes)
    connection.send("ready")  # imports done: the parent's clock for a document starts after this
    while True:
        answer: tuple[str, ExtractedText | str]
        try:
            data, ext, max_text_chars = connection.recv()
            answer = ("ok", extract_document(data, ext, max_text_chars))
        except EOFError:
            return
        except DecodeError as exc:
            answer = ("error", str(exc))
        except MemoryError:
            answer = ("error", f"document too large to parse: it needs more than {memory_bytes >> 20} MiB")
        except RecursionError:
            answer = ("error", "document too complex: nested too deeply to parse")
        except Exception as exc:  # noqa: BLE001 - any parser failure is this document's, reported as its reason
            answer = ("error", f"cannot extract text: {type(exc).__name__}: {short_reason(exc)}")
        data = b""
        connection.send(answer)


class ExtractionSandbox:
    """A parser child process, started on first use and again after a document broke it."""

    def __init__(self, limits: DocumentLimits) -> None:
        self.limits = limits
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None

    def extract(self, data: bytes, ext: str) -> ExtractedText:
        """The document's text, extracted in the child within the time and memory budget.

        Raises:
            DecodeError: the parser's reason, or that the budget ran out.
        """
        connection = self._start()
        seconds = self.limits.seconds_for(len(data))
        try:
            connection.send((data, ext, self.limits.max_bytes))
            if not connection.poll(seconds):
                self.close()
                raise DecodeError(f"document extraction stopped: it took longer than {seconds:.0f} s")
            status, payload = connection.recv()
        except (EOFError, OSError) as exc:
            self.close()
            raise DecodeError(
                f"document extraction crashed (more than {self.limits.memory_bytes >> 20} MiB, or a parser fault)"
            ) from exc
        if status != "ok" or not isinstance(payload, ExtractedText):
            raise DecodeError(str(payload))
        return payload

    def _start(self) -> Connection:
        if self._process is not None and self._process.poll() is None and self._connection is not None:
            return self._connection
        self.close()
        # A fresh interpreter running this module (not multiprocessing's spawn, which re-imports
        # the caller's main script, and not a fork of a process holding torch threads).
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(self.limits.memory_bytes)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        connection = Connection(ours.detach())
        self._connection = connection
        try:
            ready = connection.poll(STARTUP_SECONDS) and connection.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close()
            raise MmindexError(f"the document parser process did not start within {STARTUP_SECONDS:.0f} s")
        return connection

    def close(self) -> None:
        """Stop the child (if any); the next ``extract`` starts a fresh one."""
        process, connection = self._process, self._connection
        self._process, self._connection = None, None
        if connection is not None:
            connection.close()  # an idle child sees the end of its input and exits
        if process is not None:
            try:
                process.wait(1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> ExtractionSandbox:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


if __name__ == "__main__":  # the child: python -m mmindex.pipeline.embed.sandbox FD MEMORY_BYTES
    _serve(Connection(int(sys.argv[1])), int(sys.argv[2]))
