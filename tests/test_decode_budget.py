"""The per-image decode budget: an image whose decode would take more memory than
``ImageLimits.max_decode_bytes`` is refused from its header, before any pixel is decoded, and a
decode under the budget stays within it (measured in a child process)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from mmindex.pipeline.embed.decode import decode_bytes, decode_image
from mmindex.pipeline.errors import DecodeError
from mmindex.schemas.config import DEFAULT_MAX_DECODE_MB, ImageLimits, Settings

MB = 1 << 20


def _png_header_only(width: int, height: int, color_type: int) -> bytes:
    """A valid-CRC PNG whose IHDR says ``width`` x ``height`` (8-bit ``color_type``) and whose
    data is a few rows: what the budget check reads is the header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _reason(data: bytes, limits: ImageLimits, min_side: int | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        decode_image(data, limits, min_side)
    return str(info.value)


def test_an_89_megapixel_rgba_png_is_refused_by_the_default_budget() -> None:
    """The issue's case: just under Pillow's pixel limit, an RGBA PNG would take ~0.7 GB to decode
    to RGB; the default budget refuses it from the header, naming what it needs and the setting."""
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    side = int(limit**0.5) - 1
    reason = _reason(_png_header_only(side, side, color_type=6), ImageLimits())
    needed = -(-decode_bytes("RGBA", (side, side)) // MB)
    assert reason == (f"image too large to decode: {side}x{side} RGBA needs about {needed} MB, over the "
                      f"{DEFAULT_MAX_DECODE_MB} MB budget (MMINDEX_MAX_DECODE_MB)")
    assert needed > 600
    # the same header under a budget that allows it gets to the pixels (here: the truncated data)
    assert _reason(_png_header_only(side, side, color_type=6), ImageLimits(max_decode_bytes=1 << 40)).startswith("corrupt image")


def test_the_budget_counts_bytes_per_pixel_of_the_mode() -> None:
    """At one size, a grey PNG fits a budget that the same pixels in RGBA do not."""
    side = 4000
    limits = ImageLimits(max_decode_bytes=100 * MB)  # grey: 16 MP x 5 B = 76 MB; RGBA: 16 MP x 8 B = 122 MB
    assert _reason(_png_header_only(side, side, color_type=0), limits).startswith("corrupt image")
    assert _reason(_png_header_only(side, side, color_type=6), limits).startswith("image too large to decode:")


def test_a_jpeg_counts_at_the_scale_it_is_decoded() -> None:
    """A 12-megapixel JPEG over the budget decoded whole fits it at the reduced scale the model's
    input allows (and a thumbnail's)."""
    photo = Image.fromarray(skdata.astronaut()).resize((4000, 3000))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=85)
    limits = ImageLimits(max_decode_bytes=20 * MB)  # whole: 12 MP x 4 B = 46 MB
    assert _reason(buffer.getvalue(), limits).startswith("image too large to decode: 4000x3000 RGB")
    decoded = decode_image(buffer.getvalue(), limits, min_side=448)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.image.size == (1000, 750)


def test_the_budget_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMINDEX_MAX_DECODE_MB", "64")
    monkeypatch.setenv("MMINDEX_MAX_IMAGE_PIXELS", "1000000")
    assert Settings().image_limits == ImageLimits(max_pixels=1_000_000, max_decode_bytes=64 * MB)


_MEASURE = """
import json, sys
from mmindex.pipeline.embed.decode import decode_image
from mmindex.schemas.config import ImageLimits

def peak():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))

def rss():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))

data = open(sys.argv[1], "rb").read()
budget = int(sys.argv[2])
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")  # the peak (VmHWM) starts again from now
before = rss()
decode_image(data, ImageLimits(max_decode_bytes=budget))
print(json.dumps({"peak": peak() - before}))
"""


def _write(image: Image.Image, path: Path, fmt: str, **params: object) -> Path:
    image.save(path, fmt, **params)
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures the peak through /proc/self/clear_refs")
def test_a_decode_under_the_budget_stays_within_it(tmp_path: Path) -> None:
    """Each image is given a budget just above its estimate; its decode's measured peak stays under it."""
    rng = np.random.default_rng(0)
    side = 2000
    rgba = Image.fromarray(rng.integers(0, 256, (side, side, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), "L")
    images = {
        "rgba.png": (_write(rgba, tmp_path / "rgba.png", "PNG"), "RGBA", "PNG", False),
        "rgb.webp": (_write(rgba.convert("RGB"), tmp_path / "rgb.webp", "WEBP", quality=80), "RGB", "WEBP", False),
        "palette.png": (_write(grey.convert("P"), tmp_path / "palette.png", "PNG", transparency=0), "P", "PNG", True),
        "grey16.png": (_write(Image.fromarray(rng.integers(0, 65535, (side, side), dtype=np.uint16)),
                              tmp_path / "grey16.png", "PNG"), "I;16", "PNG", False),
        "rgb.jpg": (_write(rgba.convert("RGB"), tmp_path / "rgb.jpg", "JPEG"), "RGB", "JPEG", False),
    }
    for name, (path, mode, fmt, transparency) in images.items():
        with Image.open(path) as opened:
            assert (opened.mode, opened.format, "transparency" in opened.info) == (mode, fmt, transparency), name
        budget = decode_bytes(mode, (side, side), fmt, transparency)
        child = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(budget)],
                               capture_output=True, text=True, timeout=120, check=False)
        assert child.returncode == 0, child.stderr
        peak = json.loads(child.stdout)["peak"]
        assert peak <= budget, f"{name}: decoding took {peak / MB:.1f} MB, the budget was {budget / MB:.1f} MB"
