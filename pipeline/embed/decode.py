"""Turn an item's bytes into an RGB image or a text, or into a ``DecodeError`` with a reason.

This runs inside DataLoader worker processes: only top-level functions and plain dataclasses,
no torch. Every failure an item can cause (missing file, FIFO, truncated JPEG, decompression
bomb, invalid UTF-8, ...) is raised as ``DecodeError`` whose message is the short reason stored
in the item's row; nothing here may hang on a hostile file.

Reasons raised (the message starts with one of these prefixes):

* reading: ``file not found``, ``broken symlink`` (also ``broken symlink (symlink loop)``),
  ``permission denied``, ``not a regular file (fifo|socket|character device|block device|directory)``,
  ``file too large: ...``, ``cannot read file: ...``
* images: ``empty file``, ``not an image: ...``, ``decompression bomb: ...``,
  ``image too large to decode: ...`` (over the memory budget), ``corrupt image: ...``
  (truncated files included), ``unsupported image mode: ...``
* texts: ``undecodable text: ...``
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.sources.base import ItemRef
from mmindex.schemas.config import ImageLimits

logger = logging.getLogger(__name__)

# Formats we decode, detected by content. Others (EPS would start Ghostscript, PDF, PSD, ...)
# are refused as "not an image". MPO is what Pillow calls many camera JPEGs (recent Pillow
# opens them through the JPEG opener, older ones registered MPO separately).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF")
_MIME_OVERRIDES: dict[str, str] = {"MPO": "image/jpeg", "DIB": "image/bmp"}

# Everything Pillow and its plugins are known to raise on malformed input.
_PILLOW_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    EOFError,
    IndexError,
    KeyError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
    zlib.error,
    MemoryError,
)

DEFAULT_SIDECAR_MAX_BYTES = 1 << 20
# A metadata sidecar becomes the point's ``meta`` payload: Qdrant's JSON reader stops at 128
# levels (counting its own envelope; a deeper payload corrupted the embedded store's WAL), and
# every key is a payload field. Deeper or wider sidecars are ignored with a warning.
MAX_SIDECAR_DEPTH = 32
MAX_SIDECAR_KEYS = 1000
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_FILE_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# Pillow keeps "1", "L" and "P" at a byte a pixel, the 16-bit modes at two and every other mode
# (RGB included) at four.
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
_RGB_BYTES = 4
# libwebp decodes into buffers of its own that Pillow then copies (measured: 17 bytes a pixel
# for an RGB WebP, 4 for an RGB PNG).
_WEBP_BYTES = 13
# The decoders' line and state buffers, whatever the size (measured: 3-5 MB).
_DECODER_FIXED_BYTES = 8 << 20
_EXIF_ORIENTATION = 0x0112


@dataclass(slots=True)
class DecodedImage:
    """A decoded image: RGB pixels and its size after EXIF orientation."""

    image: Image.Image
    width: int
    height: int
    mime: str


# ---------------------------------------------------------------------------------------------
# Reading bytes


def read_item_bytes(ref: ItemRef, max_bytes: int) -> bytes:
    """The bytes of a local item (``ref.uri`` is a filesystem path).

    Refuses anything that is not a regular file without blocking on it (a FIFO is never opened
    in blocking mode), and files larger than ``max_bytes``.

    Raises:
        DecodeError: with the reason (see the module docstring).
    """
    return read_regular_file(ref.uri, max_bytes)


def read_regular_file(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Read a whole regular file of at most ``max_bytes`` bytes, or raise ``DecodeError``.

    Links are resolved first (the crawler decided which ones to follow) and the real path is
    opened with ``O_NOFOLLOW`` where the OS has it, so a file swapped for a link after the check
    is refused instead of followed.
    """
    _check_regular(_stat_or_fail(path), max_bytes)
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(os.path.realpath(path), flags)
    except OSError as exc:
        raise _os_error_reason(exc, path) from exc
    try:
        # Check again on the open descriptor: the path may have been swapped since the stat.
        _check_regular(os.fstat(fd), max_bytes)
        return _read_fd(fd, max_bytes)
    except OSError as exc:
        raise _os_error_reason(exc, path) from exc
    finally:
        os.close(fd)


def _stat_or_fail(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat`` (following symlinks), with OS errors turned into reasons."""
    try:
        return os.stat(path)
    except OSError as exc:
        raise _os_error_reason(exc, path) from exc


def _check_regular(info: os.stat_result, max_bytes: int) -> None:
    """Refuse non-regular files and files over the size limit."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "special file")
        raise DecodeError(f"not a regular file ({kind})")
    if info.st_size > max_bytes:
        raise DecodeError(f"file too large: {info.st_size} bytes exceeds the limit of {max_bytes}")


def _read_fd(fd: int, max_bytes: int) -> bytes:
    """Read to end of file, refusing to go past ``max_bytes`` (a file can grow after fstat)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise DecodeError(f"file too large: more than {max_bytes} bytes")


def _os_error_reason(exc: OSError, path: str | os.PathLike[str]) -> DecodeError:
    """A ``DecodeError`` with a short reason for an OS error on ``path``."""
    if isinstance(exc, FileNotFoundError):
        return DecodeError("broken symlink" if os.path.islink(path) else "file not found")
    if exc.errno == errno.ELOOP:
        return DecodeError("broken symlink (symlink loop)")
    if isinstance(exc, PermissionError):
        return DecodeError("permission denied")
    if isinstance(exc, IsADirectoryError):
        return DecodeError("not a regular file (directory)")
    return DecodeError(f"cannot read file: {exc.strerror or exc.__class__.__name__}")


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of the bytes (the content hash of docs/ARCHITECTURE.md §2)."""
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Images


def decode_image(data: bytes, limits: ImageLimits, min_side: int | None = None) -> DecodedImage:
    """Decode image bytes into an RGB ``DecodedImage``.

    ``min_side``: a JPEG may be decoded at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or
    1/8) as long as both sides stay at least ``min_side`` pixels; the width and height reported
    stay the file's own. None (the default) decodes every pixel.

    The format is detected from the content (the extension is not trusted) among
    ``ALLOWED_FORMATS``. The pixel count from the header is checked against ``limits.max_pixels``
    before any pixel is decoded, and so is Pillow's ``Image.MAX_IMAGE_PIXELS``: the effective
    limit is the smaller of the two. So is the memory the decode will take (``decode_bytes``: the
    pixels at the scale they are decoded, so a JPEG read at 1/8 costs 1/64 of its full size)
    against ``limits.max_decode_bytes``. Animated images give their first frame; EXIF orientation is applied (width and
    height are reported after it); transparency is composited over white; 16-bit and float
    images are scaled down by value range rather than clipped.

    Raises:
        DecodeError: empty, not an image, decompression bomb, corrupt/truncated, unsupported mode.
    """
    if not data:
        raise DecodeError("empty file")
    # No warnings.catch_warnings() here: it swaps process-global state and decoding runs in
    # threads. Our own header check below stops bombs above ``max_pixels``; Pillow's guard still
    # raises DecompressionBombError beyond twice its MAX_IMAGE_PIXELS.
    try:
        return _decode_image(data, limits, min_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(_pillow_bomb_reason(exc, limits.max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image: unrecognised or unsupported format") from exc
    except _PILLOW_ERRORS as exc:
        raise DecodeError(f"corrupt image: {short_reason(exc)}") from exc


def check_image_format(data: bytes) -> str:
    """The image format of ``data`` from its header (no pixel is decoded), or ``DecodeError``."""
    if not data:
        raise DecodeError("empty file")
    try:
        with Image.open(io.BytesIO(data), formats=_open_formats()) as opened:
            return str(opened.format)
    except UnidentifiedImageError as exc:
        raise DecodeError("not an image: unrecognised or unsupported format") from exc
    except _PILLOW_ERRORS as exc:
        raise DecodeError(f"corrupt image: {short_reason(exc)}") from exc


def _decode_image(data: bytes, limits: ImageLimits, min_side: int | None) -> DecodedImage:
    """The decoding steps, raising Pillow's own errors (translated by ``decode_image``)."""
    with Image.open(io.BytesIO(data), formats=_open_formats()) as opened:
        width, height = opened.size
        if width <= 0 or height <= 0:
            raise DecodeError(f"corrupt image: invalid size {width}x{height}")
        limit = _effective_limit(limits.max_pixels)
        if width * height > limit:
            raise DecodeError(f"decompression bomb: {width}x{height} pixels exceeds the limit of {limit}")
        image_format = opened.format or ""
        opened.seek(0)
        if min_side is not None and image_format in ("JPEG", "MPO"):
            opened.draft(None, (min_side, min_side))  # a no-op unless both sides can shrink 2x or more
        _check_decode_budget(opened, limits.max_decode_bytes)
        opened.load()
        decoded_size = opened.size
        # In place: without an EXIF rotation this is a no-op, where the copying form duplicates
        # every pixel (~12% of a 640x480 JPEG's decode time).
        ImageOps.exif_transpose(opened, in_place=True)
        oriented = opened
    rgb = to_rgb(oriented)
    if rgb.size != decoded_size:  # a quarter turn: the reported size turns with it
        width, height = height, width
    mime = _MIME_OVERRIDES.get(image_format) or Image.MIME.get(image_format) or "application/octet-stream"
    return DecodedImage(image=rgb, width=width, height=height, mime=mime)


def decode_bytes(
    mode: str, size: tuple[int, int], image_format: str = "", transparency: bool = False, rotated: bool = False
) -> int:
    """About the peak memory that decoding an image of ``mode`` and ``size`` to RGB takes.

    The decoded pixels in Pillow's storage, the decoder's own buffers (WebP), the copies
    ``to_rgb`` makes (an image with a ``transparency`` key passes through RGBA), and one more
    decoded copy when an EXIF rotation is applied. ``size`` is the size the pixels are decoded
    at (after a JPEG's draft). At or above the peak measured for each mode and format.
    """
    stored = 1 if mode in _ONE_BYTE_MODES else 2 if mode in _SIXTEEN_BIT_MODES else 4
    decoder = _WEBP_BYTES if image_format == "WEBP" else 0
    per_pixel = stored * (2 if rotated else 1) + decoder + _to_rgb_bytes(mode, transparency)
    return _DECODER_FIXED_BYTES + size[0] * size[1] * per_pixel


def _to_rgb_bytes(mode: str, transparency: bool) -> int:
    """What a pixel costs on its way to RGB beyond the decoded image (``to_rgb``'s copies)."""
    if mode == "RGBA":
        return _RGB_BYTES
    if mode in _ALPHA_MODES or transparency:
        return 2 * _RGB_BYTES  # an RGBA copy, then the RGB result
    if mode == "RGB":
        return 0
    if mode in _SIXTEEN_BIT_MODES:
        return 10  # numpy copies at 16 and 8 bits, then L and RGB images
    if mode == "I":
        return 14
    if mode == "F":
        return 30  # float64 copies for the value range
    return _RGB_BYTES


def _check_decode_budget(opened: Image.Image, max_decode_bytes: int) -> None:
    """Refuse, before any pixel is decoded, an image whose decode would pass the memory budget."""
    rotated = _header_orientation(opened) in range(2, 9)
    needed = decode_bytes(opened.mode, opened.size, opened.format or "", "transparency" in opened.info, rotated)
    if needed > max_decode_bytes:
        width, height = opened.size
        raise DecodeError(
            f"image too large to decode: {width}x{height} {opened.mode} needs about {_mib(needed)} MB,"
            f" over the {_mib(max_decode_bytes)} MB budget (MMINDEX_MAX_DECODE_MB)"
        )


def _header_orientation(opened: Image.Image) -> int:
    """The EXIF orientation known from the header alone (``getexif`` would decode a PNG)."""
    tags = getattr(opened, "tag_v2", None)  # TIFF
    if tags is not None:
        return int(tags.get(_EXIF_ORIENTATION, 1))
    raw = opened.info.get("exif")
    if not isinstance(raw, bytes):
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return int(exif.get(_EXIF_ORIENTATION, 1))


def _mib(count: int) -> int:
    return -(-count // (1 << 20))


@lru_cache(maxsize=1)
def _open_formats() -> tuple[str, ...]:
    """The allowed formats this Pillow build can open (registering its plugins once)."""
    Image.init()
    return tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)


def _effective_limit(max_pixels: int) -> int:
    """The pixel limit in force: ours, or Pillow's ``MAX_IMAGE_PIXELS`` when that is lower."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, int(pillow_limit))


def _pillow_bomb_reason(exc: Exception, max_pixels: int) -> str:
    """Reason for a bomb that Pillow's guard stopped while reading the header.

    Pillow does not say the width and height then, only the pixel count; the limit reported
    is the effective one, ``min(max_pixels, Image.MAX_IMAGE_PIXELS)``.
    """
    match = _BOMB_PIXELS.search(str(exc))
    if match is None:
        return f"decompression bomb: {short_reason(exc)}"
    return f"decompression bomb: {match.group(1)} pixels exceeds the limit of {_effective_limit(max_pixels)}"


def short_reason(exc: BaseException) -> str:
    """One short line describing an exception."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text[:200]


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, high bit depths scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_array_to_rgb(np.asarray(image).astype(np.uint16) >> 8)
    if mode == "I":
        return _gray_array_to_rgb(_scale_int32(np.asarray(image)))
    if mode == "F":
        return _gray_array_to_rgb(_scale_float(np.asarray(image)))
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB", "1") and "transparency" in image.info):
        return _over_white(image if image.mode == "RGBA" else image.convert("RGBA"))
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise DecodeError(f"unsupported image mode: {mode}") from exc


def _over_white(rgba: Image.Image) -> Image.Image:
    """Composite an RGBA image over a white background.

    The same pixels as ``Image.alpha_composite`` over an opaque white image, without its RGBA
    background and RGBA result (an 89-megapixel RGBA PNG decodes at 0.7 GB peak instead of 1.7 GB).
    """
    rgb = Image.new("RGB", rgba.size, _WHITE)
    rgb.paste(rgba, (0, 0), rgba)
    return rgb


def _gray_array_to_rgb(gray: np.ndarray) -> Image.Image:
    """An 8-bit-valued 2-D array as an RGB image."""
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), mode="L").convert("RGB")


def _scale_int32(values: np.ndarray) -> np.ndarray:
    """32-bit integer pixels to 0..255: 8-bit and 16-bit value ranges by shift, others min-max."""
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 0xFF:
        return values.astype(np.uint8)
    if low >= 0 and high <= 0xFFFF:
        return (values >> 8).astype(np.uint8)
    return _min_max(values.astype(np.float64))


def _scale_float(values: np.ndarray) -> np.ndarray:
    """Float pixels to 0..255: [0, 1] scaled by 255, [0, 255] kept, others min-max."""
    finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        return np.rint(finite * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(finite).astype(np.uint8)
    return _min_max(finite)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Stretch values linearly onto 0..255 (a constant image becomes black)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Texts and sidecars


def decode_text(data: bytes) -> str:
    """Strict UTF-8 text (a leading BOM dropped) with newlines normalised to ``\\n``.

    Raises:
        DecodeError: ``undecodable text: ...`` for NUL bytes or invalid UTF-8 (no fallback).
    """
    if b"\x00" in data:
        raise DecodeError("undecodable text: contains NUL bytes (binary or UTF-16 file)")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"undecodable text: invalid UTF-8 at byte {exc.start}") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_caption(
    path: str | os.PathLike[str] | None, max_bytes: int = DEFAULT_SIDECAR_MAX_BYTES
) -> str | None:
    """The stripped caption in a ``.txt`` sidecar; None when absent, empty or unreadable.

    A bad sidecar never fails its image: problems are logged as warnings.
    """
    if path is None:
        return None
    try:
        caption = decode_text(read_regular_file(path, max_bytes)).strip()
    except DecodeError as exc:
        logger.warning("ignoring caption sidecar %s: %s", os.fspath(path), exc)
        return None
    return caption or None


def read_metadata(
    path: str | os.PathLike[str] | None, max_bytes: int = DEFAULT_SIDECAR_MAX_BYTES
) -> dict[str, Any] | None:
    """The JSON object in a ``.json`` sidecar; None when absent or invalid (logged as a warning).

    A sidecar whose top level is not an object, that uses NaN/Infinity, is nested deeper than
    ``MAX_SIDECAR_DEPTH`` or has more than ``MAX_SIDECAR_KEYS`` keys counts as invalid.
    """
    if path is None:
        return None
    try:
        parsed = json.loads(decode_text(read_regular_file(path, max_bytes)), parse_constant=_reject_constant)
    except DecodeError as exc:
        logger.warning("ignoring metadata sidecar %s: %s", os.fspath(path), exc)
        return None
    except (ValueError, RecursionError) as exc:
        logger.warning("ignoring metadata sidecar %s: invalid JSON: %s", os.fspath(path), short_reason(exc))
        return None
    if not isinstance(parsed, dict):
        kind = type(parsed).__name__
        logger.warning("ignoring metadata sidecar %s: top level is %s, not an object", os.fspath(path), kind)
        return None
    problem = _sidecar_shape_problem(parsed)
    if problem is not None:
        logger.warning("ignoring metadata sidecar %s: %s", os.fspath(path), problem)
        return None
    return parsed


def _sidecar_shape_problem(value: dict[str, Any]) -> str | None:
    """Why a parsed sidecar is too deep or has too many keys for a payload, or None (no recursion)."""
    keys = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_SIDECAR_DEPTH:
            return f"nested deeper than {MAX_SIDECAR_DEPTH} levels"
        if isinstance(node, dict):
            keys += len(node)
            if keys > MAX_SIDECAR_KEYS:
                return f"more than {MAX_SIDECAR_KEYS} keys"
            pending.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            pending.extend((child, depth + 1) for child in node)
    return None


def _reject_constant(name: str) -> Any:
    """``json.loads`` hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")
