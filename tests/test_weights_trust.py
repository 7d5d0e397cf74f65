"""User checkpoints (issue 22 item 4): safetensors load without a warning, pickles warn."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mmindex.pipeline.embed.model import ModelSpec, load_embedder


def test_a_pickle_checkpoint_loads_with_a_warning(tiny_checkpoint: Path, tiny_model_config: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmindex.pipeline.embed.weights"):
        load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu")
    assert "pickle-based checkpoint" in caplog.text and str(tiny_checkpoint) in caplog.text


def test_a_safetensors_checkpoint_loads_without_one(tiny_checkpoint: Path, tiny_model_config: str, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    state = torch.load(tiny_checkpoint, weights_only=True)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, path)
    with caplog.at_level(logging.WARNING, logger="mmindex.pipeline.embed.weights"):
        safe = load_embedder(ModelSpec(tiny_model_config, str(path)), "cpu")
    assert "pickle-based" not in caplog.text
    pickled = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu")
    np.testing.assert_allclose(safe.encode_texts(["a rocket"]), pickled.encode_texts(["a rocket"]), atol=1e-6)
