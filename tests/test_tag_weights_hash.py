"""A published tag names weights by name only: a collection records the sha256 of the cached file
its tag was loaded from, and refuses (one line) a file under that name with other bytes (#22.13)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_cli

from mmindex.pipeline.collection import collection_state
from mmindex.schemas.config import Settings

REPO = "mmindex-test/tiny-tag"
WEIGHTS = "open_clip_model.safetensors"


@pytest.fixture
def cached_tag(tiny_model_config: str, tiny_local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tag ``test`` of the tiny architecture published on the hub, its weights in a Hugging Face
    cache laid out as a download leaves it; returns the cached weights file."""
    import open_clip.pretrained as pretrained
    from huggingface_hub import constants

    monkeypatch.setitem(pretrained._PRETRAINED, tiny_model_config, {"test": pretrained._pcfg(hf_hub=f"{REPO}/")})
    repo_cache = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    revision = "0" * 40
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(revision)
    snapshot = repo_cache / "snapshots" / revision
    snapshot.mkdir(parents=True)
    shutil.copyfile(tiny_local_dir / WEIGHTS, snapshot / WEIGHTS)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return snapshot / WEIGHTS


def _other_weights(tiny_model_config: str, path: Path) -> None:
    """Write other random weights of the same architecture to ``path`` (a re-published tag)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = open_clip.create_model(tiny_model_config, pretrained=None)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))


def test_a_tag_whose_cached_file_changed_is_refused(
    cached_tag: Path, tiny_model_config: str, photo_corpus: Path, tmp_path: Path
) -> None:
    root, corpus = tmp_path / "root", tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus)
    common = ("-c", "tagged", "--root", str(root))
    first = run_cli("index", str(corpus), *common, "--model", tiny_model_config, "--pretrained", "test",
                    "--text-model", "none")
    assert first.code == 0, first.stderr
    version = collection_state(Settings(root=root), "tagged").current
    assert version.pretrained == "test"
    assert version.tag_weights_sha256 == hashlib.sha256(cached_tag.read_bytes()).hexdigest()
    assert run_cli("query", "a cat", *common).code == 0

    original = cached_tag.read_bytes()
    _other_weights(tiny_model_config, cached_tag)
    (corpus / "new-note.txt").write_text("a new note: this run has to embed")
    refused = run_cli("query", "a cat", *common)
    assert_one_line_error(refused, "the cached file of that tag now has sha256", code=2)
    assert version.tag_weights_sha256[:16] in refused.stderr
    refused = run_cli("index", str(corpus), *common)  # the new note needs the model: refused when it loads
    assert refused.code == 2 and "Traceback" not in refused.stderr
    assert "the cached file of that tag now has sha256" in refused.stderr.strip().splitlines()[-1]
    assert collection_state(Settings(root=root), "tagged").current.applied_through == version.applied_through

    cached_tag.write_bytes(original)  # the original file back: the collection answers again
    assert run_cli("query", "a cat", *common).code == 0


def test_checkpoint_files_and_local_dirs_record_no_tag_hash(photo_corpus: Path, tiny_local_dir: Path,
                                                           tmp_path: Path) -> None:
    root = tmp_path / "root"
    done = run_cli("index", str(photo_corpus), "-c", "plain", "--root", str(root), "--model",
                   f"local-dir:{tiny_local_dir}", "--text-model", "none")
    assert done.code == 0, done.stderr
    version = collection_state(Settings(root=root), "plain").current
    assert version.tag_weights_sha256 is None and version.embedder_id.startswith("local-dir@sha256:")
