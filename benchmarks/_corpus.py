"""Benchmark inputs: generated 640x480 JPEGs from real photos, and a random-weight checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_jpegs(directory: Path, count: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """``count`` distinct JPEGs: crops of scikit-image photos, resized, with light noise."""
    from PIL import Image
    from skimage import data

    directory.mkdir(parents=True, exist_ok=True)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field()]
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        top, left = rng.integers(0, height // 4), rng.integers(0, width // 4)
        crop = photo[top : top + height * 3 // 4, left : left + width * 3 // 4]
        image = Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR)
        noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (size[1], size[0], 3)), 0, 255)
        path = directory / f"{index:06d}.jpg"
        Image.fromarray(noisy.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def random_checkpoint(directory: Path, architecture: str = "ViT-B-32") -> Path:
    """The architecture with random weights, saved as a real checkpoint (same compute as trained)."""
    import open_clip
    import torch

    path = directory / f"{architecture}-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model(architecture, pretrained=None).state_dict(), path)
    return path
