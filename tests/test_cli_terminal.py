"""User data in the terminal, through the real CLI: file names, chunk text and error messages with
square brackets are printed as they are (never read as Rich markup, never a MarkupError), and
terminal control sequences inside indexed content never reach the terminal."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from helpers import make_pdf, run_cli
from rich.console import Console
from rich.table import Table

from mmindex.pipeline.cli.terminal import PathCell, fold_path, json_text, markup, plain

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # a clipboard write
OSC8 = "\x1b]8;;https://example.invalid/\x1b\\click\x1b]8;;\x1b\\"  # a hyperlink
CSI = "\x1b[2J\x1b[31m"  # clear screen, red
NOTE = f"closing tag [/oops] here, with [bold]markup[/bold] and {OSC52}{CSI}escapes {OSC8} \x9b31m end"


def test_plain_strips_control_sequences_and_keeps_brackets() -> None:
    assert plain(NOTE) == "closing tag [/oops] here, with [bold]markup[/bold] and escapes click  end"
    assert plain("a\tb\nc\rd\x00e\x7ff") == "a b c def"
    assert plain("launch [b].jpg · 猫") == "launch [b].jpg · 猫"
    assert markup("[/oops]") == "\\[/oops]"


def test_json_escapes_c1_controls_and_keeps_the_data() -> None:
    text = json_text({"text": "a\x1b[31mb\x9bc 猫"})
    assert "\x1b" not in text and "\x9b" not in text and "猫" in text
    assert json.loads(text) == {"text": "a\x1b[31mb\x9bc 猫"}


def test_paths_fold_after_a_slash() -> None:
    assert fold_path("/data/photos/2024/launch.jpg", 14) == ["/data/photos/", "2024/", "launch.jpg"]
    assert fold_path("averyveryverylongname.jpg", 10) == ["averyveryv", "erylongnam", "e.jpg"]
    table = Table("#", "key", box=None)
    table.add_row("1", PathCell("/home/someone/photos/holidays/2024/beach-at-sunset.jpg"))
    console = Console(width=30, record=True, file=io.StringIO())
    console.print(table)
    lines = [line.rstrip() for line in console.export_text().splitlines() if line.strip()]
    assert all(len(line) <= 30 for line in lines)
    cut = [line.split(maxsplit=1)[-1] for line in lines[1:]]  # the key column's pieces
    assert "".join(piece.strip() for piece in cut) == "/home/someone/photos/holidays/2024/beach-at-sunset.jpg"
    assert all(piece.strip().endswith("/") for piece in cut[:-1])


@pytest.fixture(scope="module")
def bracketed(tmp_path_factory: pytest.TempPathFactory, photo_corpus: Path, tiny_local_dir: Path) -> dict[str, object]:
    base = tmp_path_factory.mktemp("brackets")
    corpus = base / "corpus [x]"
    corpus.mkdir()
    shutil.copy(photo_corpus / "rocket.bmp", corpus / "launch [b].bmp")
    (corpus / "note [red].txt").write_text(NOTE + "\n", encoding="utf-8")
    (corpus / "broken [b]ad.jpg").write_bytes(b"not a jpeg [/oops]")
    flags = ["--root", str(base / "root")]
    code, stdout, stderr = run_cli("index", str(corpus), "-c", "mk", "--model", f"local-dir:{tiny_local_dir}", "--text-model", "all-MiniLM-L6-v2",
                               "--workers", "0", *flags)
    assert code == 0, stderr
    return {"flags": flags, "index_stderr": stderr, "corpus": corpus}


def test_index_report_keeps_bracketed_names(bracketed: dict[str, object]) -> None:
    stderr = str(bracketed["index_stderr"])
    assert "broken [b]ad.jpg" in stderr and "\x1b" not in stderr
    assert "embedded 2," in stderr and "1 failed" in stderr  # the failed image is not counted as embedded


def test_sparse_query_prints_chunk_text_as_written(bracketed: dict[str, object]) -> None:
    code, stdout, stderr = run_cli("query", "closing", "-c", "mk", "--mode", "sparse", *bracketed["flags"])  # type: ignore[misc]
    assert code == 0, stderr
    assert "[/oops]" in stdout and "[bold]markup[/bold]" in stdout
    assert "note [red].txt" in stdout
    assert "\x1b" not in stdout and "\x9b" not in stdout and "\x07" not in stdout
    assert stdout.startswith("mode sparse:") and "bm25" in stdout.splitlines()[1]  # the mode, then the table header


def test_clip_query_table_keeps_bracketed_keys(bracketed: dict[str, object]) -> None:
    code, stdout, stderr = run_cli("query", "a rocket", "-c", "mk", "--mode", "clip", "--limit", "5", *bracketed["flags"])  # type: ignore[misc]
    assert code == 0, stderr
    assert "launch [b].bmp" in stdout and "[bold]markup" in stdout
    assert "\x1b" not in stdout
    assert stdout.startswith("mode clip:") and "cosine" in stdout.splitlines()[1]


def test_failed_items_listing_keeps_brackets(bracketed: dict[str, object]) -> None:
    code, stdout, stderr = run_cli("info", "-c", "mk", "--failed", *bracketed["flags"])  # type: ignore[misc]
    assert code == 0, stderr
    assert "broken [b]ad.jpg" in stdout


def test_the_pdf_install_hint_keeps_its_brackets(tmp_path: Path, tiny_local_dir: Path) -> None:
    """Without pypdf a PDF is a failed item whose reason names the extra as written, mmindex[pdf]
    (Rich markup once ate the brackets, leaving pip install 'mmindex')."""
    hidden = tmp_path / "no-pypdf" / "pypdf"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("pypdf hidden by the test")\n')
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "manual.pdf").write_bytes(make_pdf([["Rotate the key every month."]]))
    flags = ["--root", str(tmp_path / "root")]
    code, stdout, stderr = run_cli("index", str(corpus), "-c", "pdfs", "--model", f"local-dir:{tiny_local_dir}",
                                   "--text-model", "none", *flags, env={"PYTHONPATH": str(hidden.parent)})
    assert code == 0, stderr
    assert "pip install 'mmindex[pdf]'" in " ".join((stdout + stderr).split())
    code, stdout, _ = run_cli("info", "-c", "pdfs", "--failed", "--json", *flags)
    assert [item["error"] for item in json.loads(stdout)] == [
        "cannot read PDF: pypdf is not installed (pip install 'mmindex[pdf]')"]


def test_error_messages_keep_brackets(bracketed: dict[str, object], tmp_path: Path, tiny_local_dir: Path) -> None:
    missing = tmp_path / "missing [/oops] [bold]"
    code, _, stderr = run_cli("index", str(missing), "-c", "other", "--model", f"local-dir:{tiny_local_dir}", *bracketed["flags"])  # type: ignore[misc]
    assert code == 2
    assert stderr.startswith("error:")  # no blank progress line before it
    assert "missing [/oops] [bold]" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli("label", "-c", "mk", "--labels-file", str(tmp_path / "[/labels].txt"), *bracketed["flags"])  # type: ignore[misc]
    assert code == 2 and stderr.startswith("error:") and "[/labels].txt" in stderr


def test_help_keeps_install_hints() -> None:
    code, stdout, _ = run_cli("schedule", "--help")
    assert code == 0 and "mmindex[flows]" in stdout


def test_usage_line_names_the_argument() -> None:
    code, stdout, _ = run_cli("index", "--help")
    assert code == 0
    usage = next(line for line in stdout.splitlines() if "Usage:" in line)
    assert usage.split()[-1] == "SOURCE"


def test_log_lines_are_stripped_of_control_characters() -> None:
    import logging

    from mmindex.pipeline.cli.terminal import SafeRichHandler

    written = io.StringIO()
    console = Console(file=written, width=200)
    handler = SafeRichHandler(console=console, show_path=False, show_time=False)
    logger = logging.getLogger("mmindex.test.terminal")
    logger.addHandler(handler)
    try:
        logger.warning("skipping %s", f"evil{OSC52}[/oops].jpg")
    finally:
        logger.removeHandler(handler)
    assert "evil[/oops].jpg" in written.getvalue() and "\x1b" not in written.getvalue()
