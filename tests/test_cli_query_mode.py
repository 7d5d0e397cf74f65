"""``--mode auto`` through the real CLI: a plain text on a document collection that also holds an
image runs hybrid over the chunks; ``--where modality=image`` runs the CLIP query; the mode is said."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import assert_one_line_error, run_cli
from PIL import Image


def test_auto_is_hybrid_despite_one_image_and_says_so(tmp_path: Path, tiny_local_dir: Path, minilm) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "guide.md").write_text("Rotate the API key every ninety days in the settings page.\n", encoding="utf-8")
    Image.new("RGB", (32, 24), (200, 40, 40)).save(corpus / "logo.png")
    root = ["--root", str(tmp_path / "root")]
    indexed = run_cli("index", str(corpus), "-c", "kb", *root, "--model", f"local-dir:{tiny_local_dir}",
                      "--text-model", "all-MiniLM-L6-v2", "--device", "cpu", "--workers", "0")
    assert indexed.code == 0, indexed.stderr
    hybrid = run_cli("query", "rotate the key", "-c", "kb", *root, "--device", "cpu", "--json")
    assert hybrid.code == 0, hybrid.stderr
    passages = json.loads(hybrid.stdout)
    assert passages and {p["mode"] for p in passages} == {"hybrid"} and {p["score_kind"] for p in passages} == {"rrf"}
    images = run_cli("query", "rotate the key", "-c", "kb", *root, "--device", "cpu", "--json",
                     "--where", "modality=image")
    assert images.code == 0, images.stderr
    hits = json.loads(images.stdout)
    assert [hit["payload"]["modality"] for hit in hits] == ["image"] and hits[0]["mode"] == "clip"
    table = run_cli("query", "rotate the key", "-c", "kb", *root, "--device", "cpu")
    assert table.code == 0 and "mode hybrid" in table.stdout


def test_an_unknown_mode_is_one_line_with_the_modes(tmp_path: Path) -> None:
    """--mode is a Literal end to end (--help shows its choices): another value is refused in one line."""
    refused = run_cli("query", "anything", "-c", "nope", "--root", str(tmp_path), "--mode", "bogus")
    assert_one_line_error(refused, "'bogus' is not one of 'auto', 'dense', 'sparse', 'hybrid', 'clip'", code=2)
