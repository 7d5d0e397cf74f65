"""Asking for another model migrates the whole collection: the run says so before it starts, and
names the case of the same weights file under another model name (a ``local-dir:`` collection
indexed again with ``--model ARCH --pretrained <its checkpoint>``)."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli


def test_the_same_weights_under_another_model_name_is_announced_before_the_migration(
    tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path, tiny_model_config: str
) -> None:
    flags = ["--root", str(tmp_path / "root"), "--workers", "0"]
    code, _, stderr = run_cli("index", str(photo_corpus), "-c", "c", "--model", f"local-dir:{tiny_local_dir}", *flags)
    assert code == 0, stderr
    assert "another embedder" not in stderr

    weights = tiny_local_dir / "open_clip_model.safetensors"
    code, _, stderr = run_cli("index", str(photo_corpus), "-c", "c", "--model", tiny_model_config,
                              "--pretrained", str(weights), *flags)
    assert code == 0, stderr
    said = " ".join(stderr.split())
    assert "another embedder" in said and "every item is embedded again" in said, stderr
    assert "same file as the current version's" in said and "--model local-dir:" in said, stderr
    assert said.index("another embedder") < said.index("collection now serves the new version")
