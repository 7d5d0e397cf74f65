"""The ``mmindex`` Typer application and what its commands share: the one-line error handler,
the common options, settings from flags, JSON output and the progress bar.

Heavy imports (torch, open_clip, qdrant) happen inside the commands that need them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from mmindex.pipeline.cli.terminal import SafeRichHandler, err, json_text, markup
from mmindex.pipeline.embed.precision import Precision
from mmindex.pipeline.errors import MmindexError

if TYPE_CHECKING:
    from mmindex.pipeline.ingest.options import IndexOptions
    from mmindex.schemas.config import Settings


# The order of `mmindex --help`: the main jobs first (the commands live in several modules).
COMMAND_ORDER = (
    "index", "query", "serve", "label", "info", "verify", "repair", "versions", "migrate", "rebuild", "delete", "models",
    "schedule",
)


class _UserErrorsAsOneLine(TyperGroup):
    """Turns an MmindexError from any command into one line on stderr and its exit code."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(COMMAND_ORDER))

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context (typer vendors click)
        try:
            return super().invoke(ctx)
        except MmindexError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except typer.BadParameter as exc:  # a flag's value its type refuses (a Literal's choices, a bound)
            print_error(_one_line(exc.format_message()))
            raise typer.Exit(exc.exit_code) from None


def _one_line(message: str) -> str:
    """Typer's message for a refused value, as one line (its pydantic prefix dropped)."""
    return " ".join(message.replace("Value error, ", "").split())


def print_error(message: object) -> None:
    """``error: MESSAGE`` as one line on stderr."""
    err.print(f"[red]error:[/] {markup(message)}")


class _PlainUsage(TyperCommand):
    """Usage lines name arguments as ``SOURCE`` (typer would write ``{SOURCE}`` for a required one)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_REQUIRED_ARGUMENT.sub(r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]


_REQUIRED_ARGUMENT = re.compile(r"^\{(.*)\}((?:\.\.\.)?)$")


app = typer.Typer(
    cls=_UserErrorsAsOneLine,
    name="mmindex",
    help="Index folders of images and texts with open_clip into Parquet + Qdrant, and search them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def command() -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``@command()`` registers a function as an ``mmindex`` subcommand (with plain usage lines)."""
    return app.command(cls=_PlainUsage)


CollectionOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name (alias users query).")]
RootOpt = Annotated[
    str | None,
    typer.Option(
        "--root",
        help="Index root (Parquet shards, embedded Qdrant, state): a folder or an fsspec URL "
        "(s3://bucket/prefix). Env: MMINDEX_ROOT.",
        show_default=False,
    ),
]
QdrantUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--qdrant-url", help="Qdrant server/cluster URL (else embedded). Env: QDRANT_URL (+ QDRANT_API_KEY).",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(
        "--precision",
        help="auto | fp32 | bf16 | fp16 (auto: fp16 on CUDA, bf16 on CPUs with AMX/AVX-512 BF16, else fp32).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load_cli_settings(**flags: Any) -> Settings:
    """Settings from flags > environment > config file, a bad value as a one-line ConfigError."""
    from mmindex.schemas.config import load_settings

    return _settings_or_one_line(lambda: load_settings(**flags))


def settings_of(options: IndexOptions) -> Settings:
    """The settings of ``index`` / ``schedule`` options, a bad value as a one-line ConfigError."""
    return _settings_or_one_line(options.settings)


def _settings_or_one_line(load: Callable[[], Settings]) -> Settings:
    import tomllib

    from pydantic import ValidationError

    from mmindex.pipeline.errors import ConfigError
    from mmindex.schemas.config import config_file_path

    try:
        return load()
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file_path()} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"invalid {where}: {first['msg']}") from None


def emit_json(data: Any) -> None:
    """``data`` as JSON on stdout (what ``--json`` prints)."""
    typer.echo(json_text(data))


class RichProgress:
    """Rich progress bar with items/s (on stderr, so --json output stays clean). The bar appears
    only once a run has items to process, so an early error leaves no empty bar line above it."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._description = markup(description)
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._progress.stop()

    def start(self, total_items: int) -> None:
        self._task = self._progress.add_task(self._description, total=total_items, rate="")
        self._progress.start()

    def advance(self, items: int) -> None:
        self._progress.advance(self._task, items)
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, rate=f"{speed:,.1f} items/s" if speed else "")


@app.callback()
def _configure(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    import warnings

    from PIL import Image

    # Decoding checks every image's pixel count against --max-pixels itself; Pillow's own
    # warning for large images would only repeat that as noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[SafeRichHandler(console=err, show_path=False)],
        force=True,
    )
