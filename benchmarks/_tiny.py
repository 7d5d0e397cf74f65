"""A tiny random-weight open_clip model as a ``local-dir:`` folder, for benchmarks of everything
around the model (crawl, plan, Parquet, Qdrant) where model compute would only add noise."""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def tiny_local_dir(directory: Path) -> Path:
    """Write ``open_clip_config.json`` + random weights into ``directory`` and return it."""
    import open_clip
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CONFIG}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CONFIG)
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")
    return directory
