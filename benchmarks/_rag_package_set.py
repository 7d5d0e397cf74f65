"""The second RAG evaluation set: the long descriptions (PyPI READMEs) of installed packages.

A different kind from ``_rag_eval_set.py``: real, long, loosely structured documents (Markdown
with headings, or reStructuredText read as plain text), many chunks each, written by others.
Each question describes what a package does without naming it (nor its import name); the answer
is the document, so a hit at rank r is the r-th passage coming from the right package. Every
question carries ``evidence``: a phrase its description must contain for the question to be
answerable (a package whose installed version lacks it, or that is not installed, is left out
and counted in the printed header).

The corpus also holds a few packages no question asks about (distractors).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class PackageQuestion:
    package: str  # distribution name
    text: str
    evidence: str  # must occur in the package's description


# package | evidence | question (one a line)
_TABLE = """
cachetools | fixed maximum size | memoizing collections of a bounded size that pick which entries to throw away once full
platformdirs | window positions | where should my app keep non-essential state such as where its windows were placed
pyparsing | lex/yacc | build a grammar directly in Python code instead of using lex and yacc or regular expressions
joblib | does not require numpy | save and load large numeric arrays efficiently and run functions in parallel processes
multidict | several *values* | a mapping where the same key can hold several values while keeping insertion order, for HTTP headers
tiktoken | 3-6x faster | byte pair encoding tokeniser for OpenAI models that is several times faster than alternatives
uvicorn | uvloop | a minimal low-level server for async Python web frameworks, optionally with a Cython-based event loop
pypdf | AES encryption | split, merge and crop pages of portable documents and decrypt them with AES
jsonschema | If no exception is raised by validate() | check a decoded document against a declared structure, raising an error if not
urllib3 | retrying requests | a user-friendly HTTP client with pooling, retries and redirect handling that most of the ecosystem uses
httpx | integrated command line client | next-generation HTTP client with sync and async APIs, HTTP/2 support and a command line tool
distro | linux_distribution | find a reliable machine-readable identifier of the Linux distribution the program runs on
idna | A-labels | convert internationalized domain names to ASCII-compatible encoding and back
marshmallow | ORM/ODM/framework-agnostic | serialize app objects to primitive types and validate and load input data, independent of any ORM
websockets | Sans-I/O | build servers and clients of the full-duplex browser protocol, with asyncio, threading and sans-I/O implementations
pluggy | devpi | the minimalist hook-based extension framework behind the pytest, tox and devpi projects
semver | pre-release and build metadata | compare and bump version strings of the form major.minor.patch with pre-release labels
coolname | glee | generate random memorable slugs made of adjectives and nouns like a bronze bee of glee
humanize | 3 minutes ago | turn a time difference into a fuzzy readable phrase such as three minutes ago
ftfy | fix_encoding | repair garbled text that was decoded with the wrong character encoding
cronsim | DST transitions | evaluate cron schedule expressions the way Debian's cron does, including daylight saving quirks
portalocker | Redis lock | cross-platform file locking between processes, with semaphores and locks that work across machines
sortedcontainers | sorted list | pure-Python sorted list, sorted dict and sorted set types that stay ordered on insertion
xmltodict | process_namespaces=True | work with markup documents as if they were JSON, optionally expanding or collapsing namespaces
colorama | ANSI escape character sequences | make coloured terminal text from escape sequences work on Windows consoles
frozenlist | RuntimeError | a list-like sequence that can be made immutable, after which changing it raises an error
xxhash | Yann Collet | bindings for an extremely fast non-cryptographic hash algorithm with a hashlib-compatible interface
pathspec | gitignore-style | match file paths against gitignore-style wildcard patterns to pick which files to back up
tzlocal | get_localzone_name | find out which time zone the local computer is configured to use
python-slugify | c-est-deja-l-ete | turn a title with accented characters into a lowercase URL-safe string joined by dashes
dirtyjson | dangling commas | decode JavaScript object literals with single quotes, comments and trailing commas
wrapt | monkey patching | write decorators that preserve introspection and signatures, and patch modules safely at runtime
cloudpickle | lambda functions | serialize lambdas and functions defined interactively so they can be shipped to remote workers
h11 | bring-your-own-I/O | a pure protocol implementation of HTTP/1.1 that contains no networking code of its own
jmespath | Negative indexing | declarative query expressions that pull elements out of nested JSON data, with negative list indexing
filetype | 261 bytes | guess the kind of a file from its magic number signature by reading only its first bytes
lazy-object-proxy | calls a function the first time | an object proxy whose target is computed by a factory the first time it is used
deprecated | DeprecationWarning | a decorator that warns callers that an old function will go away, with the version and the reason
readchar | keystroke | read a single key press from standard input without waiting for enter
truststore | certifi | verify TLS with the operating system's native certificate store instead of a bundled CA file
soupsieve | Beautiful Soup | CSS selector matching for parsed HTML trees, up to the level 4 drafts
anyio | structured concurrency | structured concurrency that runs unmodified on either of two async event loop libraries
rich | progress bars | pretty-print data structures, tables, progress bars and syntax-highlighted code in the terminal
httpcore | SSL handshake | a low-level transport with a connection pool under a higher-level HTTP client, retrying SSL handshake errors
"""
QUESTIONS: tuple[PackageQuestion, ...] = tuple(
    PackageQuestion(package, question, evidence)
    for package, evidence, question in (tuple(part.strip() for part in line.split(" | ", 2))
                                        for line in _TABLE.strip().splitlines())
)

# Packages in the corpus that no question is about.
DISTRACTORS: tuple[str, ...] = ("typer", "redis", "fastapi", "starlette", "requests-toolbelt", "aiohttp", "pytest")


@dataclass(frozen=True)
class PackageDoc:
    package: str
    name: str  # file name in the corpus (Markdown as .md, anything else as .txt)
    text: str


def description(package: str) -> PackageDoc | None:
    """The installed package's long description as a corpus document (None: not installed, or none)."""
    try:
        meta = metadata.metadata(package)
    except metadata.PackageNotFoundError:
        return None
    text = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
    if not str(text).strip():
        return None
    markdown = "markdown" in (meta.get("Description-Content-Type") or "")
    return PackageDoc(package, f"{package}.{'md' if markdown else 'txt'}", str(text))


def load() -> tuple[list[PackageDoc], list[PackageQuestion], int]:
    """The corpus, the answerable questions, and how many were left out (package missing, or its
    description lacks the evidence)."""
    docs = {name: doc for name in dict.fromkeys([q.package for q in QUESTIONS] + list(DISTRACTORS))
            if (doc := description(name)) is not None}
    asked = [q for q in QUESTIONS if q.package in docs and q.evidence in docs[q.package].text]
    return list(docs.values()), asked, len(QUESTIONS) - len(asked)
