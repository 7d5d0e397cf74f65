"""JPEG decoding on the device (nvjpeg through torchvision), resize and normalize there too.

Host side (DataLoader worker processes): each item is read and hashed; a JPEG the device decoder
can take as it is (``device_jpeg_header``) travels as its bytes, anything else (PNG, WebP, EXIF-
rotated, CMYK or grayscale JPEGs, files without an end-of-image marker, ...) is decoded on the
CPU as before. Device side (the encoding thread): the batch's JPEGs are decoded in one
``torchvision.io.decode_jpeg(list, device=...)`` call; a file the device decoder rejects is
decoded on the CPU instead, which either succeeds or turns it into a failed record with the
usual reason. Decoded images are grouped by size, resized and cropped with the model's own
torchvision ``Resize``/``CenterCrop`` (antialiased, on the device), merged with the
CPU-decoded ones in input order, and normalized on the device.

Nothing here needs CUDA to run: with ``device="cpu"`` the same code decodes with libjpeg-turbo,
which is how the tests exercise the routing, fallback and ordering on machines without a GPU.
Pixels differ from the CPU path by a few levels (nvjpeg's chroma upsampling and torchvision's
tensor resize are not bit-identical to libjpeg-turbo + Pillow); embeddings stay within the same
cosine tolerance as reduced precision, so the embedder id does not change.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mmindex.pipeline.embed.preprocess import PixelPlan

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"

# CPU decoding of one rejected item: (row, bytes) -> uint8 HWC pixels, or None (record failed).
CpuFallback = Callable[[int, bytes], "np.ndarray | None"]
DeviceDecoder = Callable[[Sequence["torch.Tensor"], "torch.device"], "list[torch.Tensor | None]"]


@dataclass(frozen=True, slots=True)
class JpegHeader:
    """What the host learns from a device-decodable JPEG's header (the record needs it)."""

    width: int
    height: int


def device_jpeg_header(data: bytes, max_pixels: int) -> JpegHeader | None:
    """The header of a JPEG to decode on the device, or None to decode it on the CPU.

    Device JPEGs: start with SOI and end with EOI (truncated files, and files with data after
    the image, go to the CPU, which reports or handles them), baseline/progressive 3-channel
    YCbCr (Pillow mode RGB), no EXIF rotation, at most ``max_pixels`` pixels, not MPO.
    """
    if not data.startswith(JPEG_SOI) or not data.endswith(JPEG_EOI):
        return None
    from PIL import Image

    from mmindex.pipeline.embed.decode import _PILLOW_ERRORS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=("JPEG",))
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            mode, image_format = image.mode, image.format
    except (*_PILLOW_ERRORS, Image.DecompressionBombError):  # type: ignore[misc]
        return None
    if image_format != "JPEG" or mode != "RGB" or orientation not in (None, 1):
        return None
    if width <= 0 or height <= 0 or width * height > max_pixels:
        return None
    return JpegHeader(width, height)


def decode_jpegs(jpegs: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG byte tensors (1-D uint8, on the CPU) to RGB uint8 (3, H, W) on ``device``.

    One batched call; if it fails (one bad file fails the whole call), each file is decoded on
    its own and the ones the decoder rejects come back as None.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not jpegs:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        try:
            return list(decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device))
        except RuntimeError as exc:
            log.debug("batched JPEG decode failed (%s); decoding one by one", exc)
        decoded: list[torch.Tensor | None] = []
        for jpeg in jpegs:
            try:
                decoded.append(decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    if len(decoded) > 1 and all(image is None for image in decoded) and not _warned_all_rejected:
        _warn_all_rejected(device)
    return decoded


_warned_all_rejected = False


def _warn_all_rejected(device: torch.device) -> None:
    """Say once that the device decoder refused a whole batch (e.g. torchvision without nvjpeg)."""
    global _warned_all_rejected
    _warned_all_rejected = True
    log.warning("the %s JPEG decoder rejected a whole batch; decoding on the CPU instead (slower)", device)


def geometry_on_device(images: Sequence[torch.Tensor], plan: PixelPlan) -> torch.Tensor:
    """Resize/crop uint8 (3, H, W) images with the plan's tensor steps -> uint8 (N, 3, h, w).

    Images of the same size are resized together (one kernel per distinct size, not per image).
    """
    import torch

    height, width = plan.size
    device = images[0].device if images else torch.device("cpu")
    out = torch.empty((len(images), 3, height, width), dtype=torch.uint8, device=device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(row)
    for rows in groups.values():
        resized = plan.tensor_geometry(torch.stack([images[row] for row in rows]))
        out[torch.tensor(rows, device=device)] = resized
    return out


def assemble_on_device(
    jpeg_rows: np.ndarray,
    jpegs: Sequence[torch.Tensor],
    pixel_rows: np.ndarray,
    pixels: torch.Tensor,
    plan: PixelPlan,
    device: torch.device,
    cpu_fallback: CpuFallback,
    decoder: DeviceDecoder = decode_jpegs,
) -> tuple[np.ndarray, torch.Tensor]:
    """Decode a batch's JPEGs on the device and merge them with its CPU-decoded pixels.

    ``pixels`` are the CPU-decoded uint8 (N, H, W, 3) of ``pixel_rows``. Returns the rows that
    have pixels, ascending, and their normalized float (N, 3, h, w) pixels on ``device``.
    """
    import torch

    decoded = decoder(jpegs, device) if len(jpegs) else []
    device_rows: list[int] = []
    device_images: list[torch.Tensor] = []
    extra_rows: list[int] = []
    extra_arrays: list[np.ndarray] = []
    for row, jpeg, image in zip(jpeg_rows.tolist(), jpegs, decoded, strict=True):
        if image is not None:
            device_rows.append(row)
            device_images.append(image)
            continue
        array = cpu_fallback(row, jpeg.numpy().tobytes())
        if array is not None:
            extra_rows.append(row)
            extra_arrays.append(array)
    parts: list[tuple[list[int], torch.Tensor]] = []
    if device_images:
        parts.append((device_rows, geometry_on_device(device_images, plan)))
    host_parts = [pixels] if len(pixel_rows) else []
    if extra_arrays:
        host_parts.append(torch.from_numpy(np.stack(extra_arrays)))
    if host_parts:
        host = host_parts[0] if len(host_parts) == 1 else torch.cat(host_parts)
        parts.append(([*pixel_rows.tolist(), *extra_rows], host.to(device, non_blocking=True).permute(0, 3, 1, 2)))
    if not parts:
        return np.zeros(0, dtype=np.int64), torch.zeros((0, 3, *plan.size), dtype=torch.float32, device=device)
    rows = np.array([row for part_rows, _ in parts for row in part_rows], dtype=np.int64)
    merged = torch.cat([images for _, images in parts])
    order = np.argsort(rows, kind="stable")
    merged = merged[torch.from_numpy(order).to(device)]
    return rows[order], plan.normalize(merged, channels_last=False)
