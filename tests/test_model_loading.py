"""Model weights: clear, fast errors when they can't be had; never random weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmindex.pipeline.embed.model import ModelSpec, load_embedder
from mmindex.pipeline.errors import ModelUnavailableError


def test_missing_tag_weights_fail_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    tried: list[object] = []

    def no_network(self: socket.socket, address: object) -> None:
        tried.append(address)
        raise OSError("offline")

    def no_lookup(host: object, *args: object, **kwargs: object) -> list[object]:
        tried.append(host)
        raise socket.gaierror("offline")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # fast = no connection tried, no timeout waited
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(ModelUnavailableError) as caught:
        load_embedder(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"))
    assert tried == [], "offline, the weights check must not try the network"
    message = str(caught.value)
    assert "ViT-B-32" in message and "--pretrained /path/to" in message and "local-dir:" in message
    assert "\n" not in message


def test_cli_reports_missing_weights_in_one_line(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "", "HOME": str(tmp_path), "MMINDEX_ROOT": str(tmp_path / "root")}
    result = subprocess.run(
        [sys.executable, "-m", "mmindex.pipeline.cli", "index", str(corpus), "--collection", "c"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "weights ViT-B-32/laion2b_s34b_b79k" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "pretrained", "message"),
    [
        ("no-such-arch", "x", "unknown model"),
        ("ViT-B-32", "not-a-tag-or-file", "neither a checkpoint file nor a tag"),
        ("ViT-B-32", None, "needs weights"),
    ],
)
def test_bad_model_specs(name: str, pretrained: str | None, message: str) -> None:
    with pytest.raises(ModelUnavailableError, match=message):
        load_embedder(ModelSpec(name, pretrained))


def test_local_dir_without_weights_is_refused(tmp_path: Path, tiny_local_dir: Path) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((tiny_local_dir / "open_clip_config.json").read_text())
    with pytest.raises(ModelUnavailableError, match="has no weights"):
        load_embedder(ModelSpec(f"local-dir:{folder}"))


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path: Path, tiny_model_config: str) -> None:
    import open_clip
    import torch

    other = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16}, "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "mmindex-other.json").write_text(json.dumps(other))
    open_clip.add_model_config(tmp_path / "mmindex-other.json")
    torch.save(open_clip.create_model("mmindex-other").state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelUnavailableError, match="cannot load model"):
        load_embedder(ModelSpec(tiny_model_config, str(tmp_path / "other.pt")))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, tiny_model_config: str) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="cannot load model"):
        load_embedder(ModelSpec(tiny_model_config, str(broken)))


def test_embeddings_are_normalized_and_deterministic(tiny_checkpoint: Path, tiny_model_config: str) -> None:
    import numpy as np

    embedder = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu")
    first = embedder.encode_texts(["a cat", "a dog", ""])
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, embedder.encode_texts(["a cat", "a dog", ""]))
    assert embedder.embedder_id.startswith(f"{tiny_model_config}@sha256:")
