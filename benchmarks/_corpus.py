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


def make_photo_mosaics(directory: Path, count: int, size: tuple[int, int] = (4032, 3024), seed: int = 0) -> list[Path]:
    """``count`` phone-camera-sized JPEGs with photographic detail at native scale: mosaics of
    256-px tiles cut from scikit-image photos (a resized small photo would be unrealistically smooth)."""
    from PIL import Image
    from skimage import data

    directory.mkdir(parents=True, exist_ok=True)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for index in range(count):
        canvas = np.zeros((height, width, 3), np.uint8)
        for top in range(0, height, 256):
            for left in range(0, width, 256):
                photo = photos[rng.integers(len(photos))]
                y, x = rng.integers(0, photo.shape[0] - 256), rng.integers(0, photo.shape[1] - 256)
                canvas[top : top + 256, left : left + 256] = photo[y : y + 256, x : x + 256, :3][: height - top, : width - left]
        path = directory / f"photo{index:05d}.jpg"
        Image.fromarray(canvas).save(path, quality=92)
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
