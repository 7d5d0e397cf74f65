"""Tests of item decoding (``pipeline.embed.decode``) on real images and real broken files."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import random
import struct
import time
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from helpers import finishes_within
from PIL import Image
from skimage import data as skdata

from mmindex.pipeline.embed import decode
from mmindex.pipeline.embed.decode import (
    DecodedImage,
    decode_image,
    decode_text,
    read_caption,
    read_item_bytes,
    read_metadata,
    sha256_hex,
    to_rgb,
)
from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.local import crawl_local
from mmindex.schemas.config import ImageLimits

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
MAX_PIXELS = 50_000_000
LIMITS = ImageLimits(MAX_PIXELS)
MAX_BYTES = 64 << 20


# --- helpers ---------------------------------------------------------------------------------


@cache
def _astronaut() -> np.ndarray:
    return skdata.astronaut()


@cache
def _coffee() -> np.ndarray:
    return skdata.coffee()


@cache
def _camera() -> np.ndarray:
    return skdata.camera()


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _pixels(decoded: DecodedImage) -> np.ndarray:
    return np.asarray(decoded.image, dtype=np.int16)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _reason(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    with pytest.raises(DecodeError) as info:
        decode_image(data, ImageLimits(max_pixels))
    return str(info.value)


def _ref(path: Path, modality: str = "image") -> ItemRef:
    return ItemRef(
        key=f"test/{path.name}",
        source_id="test",
        uri=str(path),
        path=path.name,
        ext=path.suffix.lstrip(".").lower(),
        modality=modality,  # type: ignore[arg-type]
        size=0,
        mtime_ns=0,
    )


def _read_reason(path: Path, max_bytes: int = MAX_BYTES) -> str:
    with pytest.raises(DecodeError) as info:
        read_item_bytes(_ref(path), max_bytes)
    return str(info.value)


def _png_with_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR width/height and fix its CRC: a header-level decompression bomb."""
    assert png[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return png[:16] + body + crc + png[33:]


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "mime", "tolerance"),
    [
        ("PNG", {}, "image/png", 0.0),
        ("BMP", {}, "image/bmp", 0.0),
        ("TIFF", {}, "image/tiff", 0.0),
        ("TIFF", {"compression": "tiff_lzw"}, "image/tiff", 0.0),
        ("JPEG", {"quality": 92}, "image/jpeg", 4.0),
        ("WEBP", {"quality": 90}, "image/webp", 4.0),
        ("WEBP", {"lossless": True}, "image/webp", 0.0),
    ],
)
def test_real_photo_in_several_formats(fmt: str, params: dict[str, object], mime: str, tolerance: float) -> None:
    photo = _astronaut()
    decoded = decode_image(_encode(Image.fromarray(photo), fmt, **params), LIMITS)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (512, 512) == decoded.image.size
    assert decoded.mime == mime
    assert _mean_abs_diff(np.asarray(decoded.image), photo) <= tolerance


def test_mpo_camera_jpeg_reports_jpeg_mime() -> None:
    """Many camera JPEGs carry several pictures (MPO): first picture, ``image/jpeg``."""
    first = Image.fromarray(_coffee())
    second = Image.new("RGB", first.size, (0, 255, 0))
    data = _encode(first, "MPO", save_all=True, append_images=[second], quality=92)
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO"
    decoded = decode_image(data, LIMITS)
    assert decoded.mime == "image/jpeg"
    assert _mean_abs_diff(np.asarray(decoded.image), _coffee()) < 4.0


def test_decoded_image_pickles_for_dataloader_workers() -> None:
    decoded = decode_image(_encode(Image.fromarray(_coffee()), "PNG"), LIMITS)
    clone = pickle.loads(pickle.dumps(decoded))
    assert (clone.width, clone.height, clone.mime) == (600, 400, "image/png")
    assert np.array_equal(np.asarray(clone.image), _coffee())


def test_format_is_detected_by_content_not_extension(tmp_path: Path) -> None:
    """A PNG saved as ``.jpg`` decodes as a PNG."""
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(_encode(Image.fromarray(_coffee()), "PNG"))
    decoded = decode_image(read_item_bytes(_ref(path), MAX_BYTES), LIMITS)
    assert decoded.mime == "image/png"
    assert np.array_equal(np.asarray(decoded.image), _coffee())


def test_grayscale_photo_becomes_rgb() -> None:
    camera = _camera()
    decoded = decode_image(_encode(Image.fromarray(camera), "PNG"), LIMITS)
    pixels = np.asarray(decoded.image)
    assert pixels.shape == (512, 512, 3)
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], camera)


def test_one_bit_image() -> None:
    bits = Image.fromarray(_camera() > 128)
    assert bits.mode == "1"
    pixels = np.asarray(decode_image(_encode(bits, "PNG"), LIMITS).image)
    assert set(np.unique(pixels)) == {0, 255}
    assert np.array_equal(pixels[..., 0] == 255, _camera() > 128)


def test_cmyk_jpeg_converts_to_matching_rgb() -> None:
    photo = _coffee()
    cmyk = Image.fromarray(photo).convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "CMYK"
    decoded = decode_image(data, LIMITS)
    assert decoded.image.mode == "RGB"
    assert decoded.mime == "image/jpeg"
    assert _mean_abs_diff(np.asarray(decoded.image), photo) < 6.0  # not inverted, not garbage


def test_palette_png_with_transparency_composited_over_white() -> None:
    image = Image.new("P", (8, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    for x in range(4):
        for y in range(4):
            image.putpixel((x, y), 0)
    data = _encode(image, "PNG", transparency=0)
    pixels = np.asarray(decode_image(data, LIMITS).image)
    assert (pixels[:, :4] == 255).all()  # transparent (black in the palette) -> white
    assert (pixels[:, 4:] == [255, 0, 0]).all()


def test_rgba_png_composited_over_white() -> None:
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 2] = 255  # blue
    rgba[:, :2, 3] = 0
    rgba[:, 2:4, 3] = 255
    rgba[:, 4:, 3] = 128
    pixels = np.asarray(decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), LIMITS).image)
    assert (pixels[:, :2] == 255).all()
    assert (pixels[:, 2:4] == [0, 0, 255]).all()
    assert np.allclose(pixels[:, 4:, 0], 127, atol=2)  # half blue, half white
    assert (pixels[:, 4:, 2] == 255).all()


def test_la_png_composited_over_white() -> None:
    la = Image.merge("LA", (Image.new("L", (4, 4), 0), Image.new("L", (4, 4), 0)))
    pixels = np.asarray(decode_image(_encode(la, "PNG"), LIMITS).image)
    assert (pixels == 255).all()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(fmt: str) -> None:
    camera = _camera()
    sixteen = Image.fromarray(camera.astype(np.uint16) * 257)
    data = _encode(sixteen, fmt)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode.startswith("I")
    pixels = np.asarray(decode_image(data, LIMITS).image)
    assert not (pixels == 255).all()
    assert np.array_equal(pixels[..., 0], camera)  # (v * 257) >> 8 == v


def test_big_endian_sixteen_bit_tiff() -> None:
    camera = _camera()
    image = Image.fromarray((camera.astype(np.uint16) * 257).astype(">u2"))
    assert image.mode == "I;16B"
    pixels = np.asarray(to_rgb(image))  # Pillow cannot write I;16B files: convert directly
    assert np.array_equal(pixels[..., 0], camera)


def test_float_and_int32_tiffs() -> None:
    camera = _camera()
    as_float = Image.fromarray(camera.astype(np.float32) / 255.0)
    assert as_float.mode == "F"
    pixels = np.asarray(decode_image(_encode(as_float, "TIFF"), LIMITS).image)
    assert np.abs(pixels[..., 0].astype(int) - camera).max() <= 1
    as_int = Image.fromarray(camera.astype(np.int32) * 257)
    assert as_int.mode == "I"
    pixels = np.asarray(decode_image(_encode(as_int, "TIFF"), LIMITS).image)
    assert np.array_equal(pixels[..., 0], camera)


def test_animated_gif_gives_first_frame() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (10, 7), color) for color in colors]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    decoded = decode_image(data, LIMITS)
    assert decoded.mime == "image/gif"
    assert (decoded.width, decoded.height) == (10, 7)
    assert (np.asarray(decoded.image) == [255, 0, 0]).all()


def test_exif_orientation_is_applied() -> None:
    photo = _coffee()  # 400 x 600 (h x w)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    plain = decode_image(_encode(Image.fromarray(photo), "JPEG", quality=90), LIMITS)
    rotated = decode_image(_encode(Image.fromarray(photo), "JPEG", quality=90, exif=exif.tobytes()), LIMITS)
    assert (plain.width, plain.height) == (600, 400)
    assert (rotated.width, rotated.height) == (400, 600) == rotated.image.size
    assert np.array_equal(np.asarray(rotated.image), np.rot90(np.asarray(plain.image), k=-1))


# --- broken images ---------------------------------------------------------------------------


def test_truncated_jpeg_fails() -> None:
    data = _encode(Image.fromarray(_astronaut()), "JPEG", quality=90)
    reason = _reason(data[: len(data) // 2])
    assert reason.startswith("corrupt image:")
    assert "truncated" in reason


def test_truncated_png_fails() -> None:
    data = _encode(Image.fromarray(_astronaut()), "PNG")
    assert _reason(data[: len(data) // 2]).startswith("corrupt image:")


def test_zero_byte_image_fails(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert _reason(read_item_bytes(_ref(path), MAX_BYTES)) == "empty file"


def test_text_named_jpg_is_not_an_image() -> None:
    assert _reason(b"hello, I am a text file pretending to be a JPEG\n").startswith("not an image:")


def test_random_bytes_png_is_not_an_image() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _reason(noise).startswith("not an image:")


def test_unsupported_format_is_refused() -> None:
    """Formats outside the allow-list (ICO here) are refused even though Pillow reads them."""
    ico = _encode(Image.fromarray(_astronaut()).resize((32, 32)), "ICO")
    assert _reason(ico).startswith("not an image:")


def test_bomb_caught_by_our_limit_before_loading() -> None:
    data = _encode(Image.fromarray(_astronaut()), "PNG")
    assert _reason(data, max_pixels=1000) == "decompression bomb: 512x512 pixels exceeds the limit of 1000"


def test_header_level_png_bomb() -> None:
    """A real PNG whose IHDR claims 100000 x 100000 pixels (valid CRC) fails fast, both ways."""
    bomb = _png_with_size(_encode(Image.new("L", (16, 16)), "PNG"), 100_000, 100_000)
    started = time.monotonic()
    # Pillow's header guard fires before the width and height are known: only the count is said
    assert _reason(bomb) == f"decompression bomb: 10000000000 pixels exceeds the limit of {MAX_PIXELS}"
    # with a permissive limit of ours, Pillow's own guard still refuses it
    pillow_reason = _reason(bomb, max_pixels=10**12)
    assert pillow_reason == f"decompression bomb: 10000000000 pixels exceeds the limit of {Image.MAX_IMAGE_PIXELS}"
    assert time.monotonic() - started < 5
    assert Image.MAX_IMAGE_PIXELS is not None  # the global guard was not switched off


def test_pillow_bomb_warning_becomes_decode_error() -> None:
    """Between 1x and 2x ``MAX_IMAGE_PIXELS`` Pillow only warns: Pillow's limit still applies."""
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    side = int((limit * 1.5) ** 0.5)
    bomb = _png_with_size(_encode(Image.new("L", (16, 16)), "PNG"), side, side)
    assert _reason(bomb, max_pixels=10**12) == f"decompression bomb: {side}x{side} pixels exceeds the limit of {limit}"
    # just under Pillow's limit, ours is the one that speaks, with width and height
    side = int(limit**0.5) - 1
    bomb = _png_with_size(_encode(Image.new("L", (16, 16)), "PNG"), side, side)
    assert _reason(bomb, max_pixels=1000) == f"decompression bomb: {side}x{side} pixels exceeds the limit of 1000"


def test_corrupt_png_crc_fails() -> None:
    data = bytearray(_encode(Image.fromarray(_coffee()), "PNG"))
    data[29] ^= 0xFF  # IHDR CRC byte
    assert isinstance(_reason(bytes(data)), str)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about damaged TIFF tags
def test_mutated_images_never_raise_anything_but_decode_error() -> None:
    """Fuzz: truncations and byte flips of real files give an image or a DecodeError, fast."""
    small = Image.fromarray(_astronaut()).resize((64, 64))
    samples = [
        _encode(small, "JPEG"),
        _encode(small, "PNG"),
        _encode(small, "GIF"),
        _encode(small, "BMP"),
        _encode(small, "TIFF"),
        _encode(small, "WEBP"),
        _encode(small.convert("CMYK"), "JPEG"),
    ]
    rng = random.Random(1234)
    started = time.monotonic()
    outcomes = {"ok": 0, "failed": 0}
    for sample in samples:
        for _ in range(60):
            mutated = bytearray(sample)
            if rng.random() < 0.5:
                mutated = mutated[: rng.randrange(1, len(mutated))]
            for _ in range(rng.randrange(1, 8)):
                position = rng.randrange(len(mutated))
                mutated[position] = rng.randrange(256)
            try:
                decoded = decode_image(bytes(mutated), ImageLimits(1_000_000))
            except DecodeError:
                outcomes["failed"] += 1
            else:
                assert decoded.image.mode == "RGB"
                outcomes["ok"] += 1
    assert outcomes["failed"] > 0
    assert time.monotonic() - started < 20


# --- reading files ---------------------------------------------------------------------------


def test_read_item_bytes_reads_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    payload = _encode(Image.fromarray(_coffee()), "PNG")
    path.write_bytes(payload)
    assert read_item_bytes(_ref(path), MAX_BYTES) == payload


def test_read_item_bytes_follows_symlink_to_file(tmp_path: Path) -> None:
    target = tmp_path / "target.png"
    target.write_bytes(b"payload")
    (tmp_path / "link.png").symlink_to(target)
    assert read_item_bytes(_ref(tmp_path / "link.png"), MAX_BYTES) == b"payload"


def test_read_item_bytes_refuses_large_file(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * 1000)
    assert _read_reason(path, max_bytes=999) == "file too large: 1000 bytes exceeds the limit of 999"
    assert read_item_bytes(_ref(path), 1000) == b"x" * 1000


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_named_jpg_fails_fast_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    refs = list(crawl_local(tmp_path))
    assert [ref.path for ref in refs] == ["pipe.jpg"]
    try:
        reason = finishes_within(5, lambda: _read_reason(Path(refs[0].uri)))
    finally:
        _unblock_fifo(fifo)
    assert reason == "not a regular file (fifo)"


def _unblock_fifo(fifo: Path) -> None:
    """If a reader is stuck opening the FIFO, open its write end so the reader returns."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader waiting: nothing is stuck
    os.close(fd)


def test_directory_is_not_a_regular_file(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    assert _read_reason(folder) == "not a regular file (directory)"


def test_broken_symlink_fails(tmp_path: Path) -> None:
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "missing.jpg")
    refs = list(crawl_local(tmp_path))
    assert [ref.path for ref in refs] == ["gone.jpg"]
    assert _read_reason(Path(refs[0].uri)) == "broken symlink"


def test_self_referencing_symlink_is_yielded_and_fails(tmp_path: Path) -> None:
    link = tmp_path / "loop.jpg"
    link.symlink_to(link)
    refs = list(crawl_local(tmp_path))
    assert [ref.path for ref in refs] == ["loop.jpg"]
    assert _read_reason(Path(refs[0].uri)) == "broken symlink (symlink loop)"


def test_file_vanished_between_crawl_and_read(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(_encode(Image.fromarray(_coffee()), "PNG"))
    refs = list(crawl_local(tmp_path))
    path.unlink()
    with pytest.raises(DecodeError, match="^file not found$"):
        read_item_bytes(refs[0], MAX_BYTES)


@pytest.mark.skipif(IS_ROOT, reason="root can read files with mode 000")
def test_unreadable_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(b"data")
    path.chmod(0)
    try:
        assert _read_reason(path) == "permission denied"
    finally:
        path.chmod(0o644)


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert len(sha256_hex(b"")) == 64


# --- texts -----------------------------------------------------------------------------------


def test_decode_text_utf8_bom_and_newlines() -> None:
    data = "\ufeffline one\r\nline two\rline three\nünïcödé ✓".encode()
    assert decode_text(data) == "line one\nline two\nline three\nünïcödé ✓"
    assert decode_text(b"") == ""


def test_invalid_utf8_text_fails(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(DecodeError, match=r"^undecodable text: invalid UTF-8 at byte 3$"):
        decode_text(read_item_bytes(_ref(path, "text"), MAX_BYTES))


def test_text_with_nul_bytes_fails() -> None:
    with pytest.raises(DecodeError, match="^undecodable text: contains NUL bytes"):
        decode_text(b"hello\x00world")
    with pytest.raises(DecodeError, match="^undecodable text:"):
        decode_text("utf-16 text".encode("utf-16"))


# --- sidecars --------------------------------------------------------------------------------


def test_caption_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "photo.txt"
    path.write_bytes(b"\xef\xbb\xbf  a cat on a mat \r\n\r\n")
    assert read_caption(path) == "a cat on a mat"
    assert read_caption(None) is None
    path.write_text("   \n")
    assert read_caption(path) is None


def test_bad_caption_is_ignored_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "photo.txt"
    path.write_bytes(b"\xff\xfe bad")
    with caplog.at_level(logging.WARNING, logger=decode.__name__):
        assert read_caption(path) is None
        assert read_caption(tmp_path / "missing.txt") is None
    assert len(caplog.records) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_caption_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.txt"
    os.mkfifo(fifo)
    try:
        assert finishes_within(5, lambda: read_caption(fifo)) is None
    finally:
        _unblock_fifo(fifo)


def test_metadata_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "photo.json"
    path.write_text('{"tags": ["cat"], "year": 2021}', encoding="utf-8")
    assert read_metadata(path) == {"tags": ["cat"], "year": 2021}
    assert read_metadata(None) is None


@pytest.mark.parametrize("content", ['{"tags": [', "[1, 2]", '{"x": NaN}', "\xff"])
def test_bad_metadata_sidecar_is_ignored_and_image_still_decodes(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    image_path = tmp_path / "photo.png"
    image_path.write_bytes(_encode(Image.fromarray(_coffee()), "PNG"))
    (tmp_path / "photo.json").write_bytes(content.encode("latin-1"))
    (ref,) = crawl_local(tmp_path)
    assert ref.metadata_path is not None
    with caplog.at_level(logging.WARNING, logger=decode.__name__):
        assert read_metadata(ref.metadata_path) is None
    assert any("ignoring metadata sidecar" in record.getMessage() for record in caplog.records)
    decoded = decode_image(read_item_bytes(ref, MAX_BYTES), LIMITS)
    assert decoded.width == 600


def test_the_real_path_is_opened_without_following_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#22.8: the decoder opens with O_NOFOLLOW; a link that appears where the resolved path
    should be a file (swapped after the crawl) is refused, not followed."""
    if not hasattr(os, "O_NOFOLLOW"):
        pytest.skip("no O_NOFOLLOW on this OS")
    import mmindex.pipeline.embed.decode as decode_module

    target = tmp_path / "secret.png"
    target.write_bytes(b"secret")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert read_item_bytes(_ref(link), MAX_BYTES) == b"secret"  # resolved first, then opened
    monkeypatch.setattr(decode_module.os.path, "realpath", lambda path: str(path))  # as if swapped after resolving
    assert _read_reason(link).startswith("broken symlink")
