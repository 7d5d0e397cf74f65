"""Data shown in a terminal: every file name, text, label, key and error message the CLI prints
goes through here, so that user data is never read as Rich markup (``launch [b].jpg`` keeps its
brackets, ``[/oops]`` cannot crash a table) and never reaches the terminal as control sequences
(ESC, OSC 8 links, OSC 52 clipboard writes, C1 controls), and never shows a URL's credentials
(userinfo, signatures and tokens in its query: ``pipeline/redact.py``).

``plain`` makes any value printable; ``markup`` makes it safe inside a markup string written by us
(``f"[red]error:[/] {markup(exc)}"``); ``cell`` is a table cell that Rich never parses; ``path_cell``
is a path that folds on ``/`` when its column is narrow; ``json_text`` is JSON with C1 controls
escaped too (``json`` escapes C0 controls itself).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.logging import RichHandler
from rich.markup import escape
from rich.measure import Measurement
from rich.text import Text

from mmindex.pipeline.redact import redact_secrets

# Whole escape sequences first (so no payload of an OSC/CSI is left behind), then any single
# C0 control, DEL or C1 control. Tabs, newlines and carriage returns become spaces: every piece of
# data is shown on its line.
_SEQUENCES = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST (links, clipboard, titles)
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS ... ST
    r"|\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI (colours, cursor moves)
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # 8-bit CSI
    r"|\x1b[ -/]*[0-~]?"  # two-byte escapes
)
_WHITESPACE_CONTROLS = re.compile(r"[\t\n\r\v\f]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_C1 = re.compile(r"[\x7f-\x9f]")


def plain(value: object) -> str:
    """``value`` as text without terminal control characters or sequences, nor a URL's credentials."""
    text = redact_secrets(_SEQUENCES.sub("", str(value)))
    return _CONTROLS.sub("", _WHITESPACE_CONTROLS.sub(" ", text))


def markup(value: object) -> str:
    """``value`` made safe to put inside a Rich markup string."""
    return escape(plain(value))


def cell(value: object) -> Text:
    """A table cell holding ``value`` as data (never parsed as markup)."""
    return Text(plain(value))


def cells(values: Iterable[object]) -> list[Text]:
    """Several table cells."""
    return [cell(value) for value in values]


class PathCell:
    """A path as a table cell that, when its column is narrower than the path, breaks after
    ``/`` (and folds a single over-long name by characters only when it must)."""

    def __init__(self, path: object, min_width: int = 16) -> None:
        self.path = plain(path)
        self.min_width = min_width

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max((len(part) + 1 for part in self.path.split("/")), default=1)
        return Measurement(min(longest, self.min_width, len(self.path) or 1), len(self.path) or 1).with_maximum(
            options.max_width
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in fold_path(self.path, options.max_width):
            yield Text(line)


def path_cell(path: object) -> PathCell:
    """A table cell for a path or item key."""
    return PathCell(path)


def fold_path(path: str, width: int) -> list[str]:
    """``path`` cut into lines of at most ``width`` characters, after a ``/`` where one fits."""
    width = max(width, 1)
    lines: list[str] = []
    rest = path
    while len(rest) > width:
        cut = rest.rfind("/", 0, width)
        cut = cut + 1 if cut >= 0 else width
        lines.append(rest[:cut])
        rest = rest[cut:]
    lines.append(rest)
    return lines


def json_text(data: Any) -> str:
    """``data`` as indented JSON that is safe to print: ``json`` escapes C0 controls, and C1
    controls (which can only occur inside strings) are escaped here."""
    text = redact_secrets(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    return _C1.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


class SafeRichHandler(RichHandler):
    """Log records with their arguments (paths, reasons) stripped of control characters."""

    def render_message(self, record: logging.LogRecord, message: str) -> Any:
        return super().render_message(record, plain(message))


err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)
