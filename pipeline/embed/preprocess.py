"""The model's image preprocessing, split so the per-item part is small and the rest is batched.

open_clip's eval transform is ``[geometry..., MaybeConvertMode, MaybeToTensor, Normalize]``. A
``PixelPlan`` keeps its geometry (resize, crop) per item on the PIL image, producing uint8 HWC
arrays; ``ToTensor`` and ``Normalize`` then run once per batch, on the device that encodes it
(elementwise the same float operations, so the pixels are identical). Per item this saves the
float conversion and normalization, and a batch moves to the GPU as uint8 (a quarter of the
bytes of float32).

The common geometry ``Resize(shortest side) + CenterCrop`` is fused into one Pillow resize of
just the source box that survives the crop (``Image.resize(box=...)``): the same filter at the
same scale, without computing the columns the crop throws away (-30% resize time on 4:3
photos; a pixel differs by at most one level, in about 1 of 10^4 pixels). Landscape and square
images take torch's uint8 antialiased kernels instead (the same filters, vectorized: ~0.8 ms
instead of ~2.2 ms for a 640x480 photo; see ``FusedResizeCrop.resize_array``). Upscaling and
padding crops keep torchvision's two steps.

A JPEG much larger than the model's input is decoded at a reduced scale (libjpeg's DCT scaling,
1/2 to 1/8, through Pillow's ``draft``) while its short side stays at least
``REDUCED_DECODE_MARGIN`` times the resize target, so the antialiased resize still does the final
filtering: a 12-megapixel photo decodes at a quarter of its size, 2-3x faster end to end, and a
pixel of the model's input moves by 0.3-0.5 levels on average (99% within 3 levels; measured on
photo mosaics from 1280x960 to 4032x3024, ``tests/test_parity.py`` holds the bounds). JPEGs under
twice the target (a 640x480 file for a 224 model) decode exactly as before.

The same geometry objects also accept uint8 CHW tensors (torchvision ``Resize``/``CenterCrop``),
which is how the GPU path resizes on the device (``gpu_decode.py``); a transform this module does
not recognise gets ``None`` from ``plan_pixels`` and the caller applies it whole, per item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

REDUCED_DECODE_MARGIN = 2  # a reduced-scale JPEG decode keeps >= 2x the resize target's short side

Geometry = Callable[["Image.Image"], "Image.Image"]


@dataclass(frozen=True, slots=True)
class PixelPlan:
    """Per-item geometry (PIL -> PIL of ``size``) and per-batch normalization."""

    steps: tuple[Geometry, ...]
    size: tuple[int, int]  # (height, width) every item comes out at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tensor_steps: tuple[Callable[[torch.Tensor], torch.Tensor], ...] | None = None
    decode_min_side: int | None = None  # a JPEG may decode at a reduced scale down to this short side

    def to_array(self, image: Image.Image) -> np.ndarray:
        """The model's geometry applied to an RGB image, as a (height, width, 3) uint8 array.

        Raises:
            ValueError: the geometry produced another size (an odd transform).
        """
        array = None
        if len(self.steps) == 1 and isinstance(self.steps[0], FusedResizeCrop) and image.mode == "RGB":
            array = self.steps[0].resize_array(image)
        if array is None:
            for step in self.steps:
                image = step(image)
            if image.mode != "RGB":
                image = image.convert("RGB")
            array = np.asarray(image)
        if array.shape != (*self.size, 3):
            raise ValueError(f"preprocessing produced {array.shape[1]}x{array.shape[0]}, expected {self.size[1]}x{self.size[0]}")
        return array

    def normalize(self, batch: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
        """uint8 (N, H, W, 3) (or (N, 3, H, W) with ``channels_last=False``) on any device ->
        contiguous float32 (N, 3, H, W): ToTensor + Normalize, the same float operations."""
        import torch

        chw = batch.permute(0, 3, 1, 2) if channels_last else batch
        pixels = chw.contiguous().to(torch.float32).div_(255)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        return pixels.sub_(mean).div_(std)

    def tensor_geometry(self, images: torch.Tensor) -> torch.Tensor:
        """The geometry on uint8 (N, 3, H, W) tensors of one size -> uint8 (N, 3, h, w).

        torchvision's tensor resize (antialiased, rounded back to uint8) follows Pillow's within
        a few levels per pixel; only plans of torchvision Resize/CenterCrop steps have it.

        Raises:
            ValueError: this plan has no tensor form.
        """
        if self.tensor_steps is None:
            raise ValueError("this preprocessing has no tensor form")
        for step in self.tensor_steps:
            images = step(images)
        return images


@dataclass(frozen=True, slots=True)
class FusedResizeCrop:
    """``Resize(short_side)`` then ``CenterCrop(crop)`` (torchvision on PIL) as one Pillow call.

    Sizes and offsets are computed exactly as torchvision does; the resize reads only the source
    box that maps onto the crop (Pillow's filter still reaches outside the box, as in a full
    resize), so the result equals resize-then-crop up to float rounding of the filter centers.
    A plain picklable object, so DataLoader worker processes can receive it.
    """

    short_side: int
    crop: tuple[int, int]  # (height, width)
    resample: int

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after ``Resize(short_side)``, computed as torchvision does."""
        short = self.short_side
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short

    def _crop_offsets(self, new_w: int, new_h: int) -> tuple[int, int]:
        """(top, left) of ``CenterCrop`` in the resized image, as torchvision computes them."""
        return int(round((new_h - self.crop[0]) / 2.0)), int(round((new_w - self.crop[1]) / 2.0))

    def resize_array(self, image: Image.Image) -> np.ndarray | None:
        """The same geometry on an RGB image by torch's uint8 antialiased kernels (Pillow's
        filters, vectorized: a third of Pillow's time on a 640x480 photo), as a (height, width,
        3) uint8 array; None where Pillow keeps the job: upscaling and padding crops (left to
        ``__call__``), filters torch has no uint8 kernel for, and portrait images. Against
        open_clip's own transform, landscape and square images differ by at most 2 levels in
        under 1 pixel of 250; on portrait images torch's kernels (either axis order) differ by
        up to 4 levels in 15% of the pixels (measured over 3 photos x 78 sizes)."""
        import torch
        from torch.nn import functional

        mode = _TORCH_MODES.get(self.resample)
        width, height = image.size
        new_w, new_h = self.resized_size(width, height)
        crop_h, crop_w = self.crop
        if mode is None or width < height or crop_h > new_h or crop_w > new_w or new_w > width or new_h > height:
            return None
        top, left = self._crop_offsets(new_w, new_h)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0)  # channels-last strides
        if (new_w, new_h) != (width, height):
            pixels = functional.interpolate(pixels, size=(new_h, new_w), mode=mode, antialias=True)
        return np.ascontiguousarray(pixels[0, :, top : top + crop_h, left : left + crop_w].permute(1, 2, 0).numpy())

    def __call__(self, image: Image.Image) -> Image.Image:
        crop_h, crop_w = self.crop
        width, height = image.size
        new_w, new_h = self.resized_size(width, height)
        if crop_h > new_h or crop_w > new_w or new_w > width or new_h > height:
            # Padding crops and upscaling (box and full resize then differ by up to 2 levels):
            # exactly torchvision's two steps.
            from torchvision.transforms import functional as tvf

            return tvf.center_crop(image.resize((new_w, new_h), self.resample), [crop_h, crop_w])
        top, left = self._crop_offsets(new_w, new_h)
        if (new_w, new_h) == (width, height):  # torchvision skips the resize
            return image.crop((left, top, left + crop_w, top + crop_h))
        scale_x, scale_y = width / new_w, height / new_h
        box = (left * scale_x, top * scale_y, (left + crop_w) * scale_x, (top + crop_h) * scale_y)
        return image.resize((crop_w, crop_h), self.resample, box=box)


# Pillow filters torch has antialiased uint8 kernels for (they follow Pillow's own).
_TORCH_MODES: dict[int, str] = {3: "bicubic", 2: "bilinear"}  # Image.Resampling.BICUBIC, .BILINEAR


def _pil_resample(interpolation: Any) -> int | None:
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    return {
        InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
        InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    }.get(interpolation)


def _is_identity_rgb(step: Any) -> bool:
    """open_clip's ``MaybeConvertMode('RGB')``: a no-op on the RGB images we decode."""
    return type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB"


def _three(values: Sequence[float]) -> tuple[float, float, float] | None:
    floats = tuple(float(value) for value in values)
    if len(floats) == 1:
        return (floats[0],) * 3
    return floats if len(floats) == 3 else None


def plan_pixels(transform: Any, image_size: int | Sequence[int] | None) -> PixelPlan | None:
    """A ``PixelPlan`` equivalent to an open_clip eval transform, or None if not recognised.

    Recognised: a torchvision ``Compose`` ending in ``ToTensor``/``MaybeToTensor`` and
    ``Normalize``, whose other steps are torchvision ``Resize``/``CenterCrop``, open_clip
    ``ResizeKeepRatio``/``CenterCropOrPad`` or ``MaybeConvertMode('RGB')``, and whose output size
    is known (``image_size``: the model's input size).
    """
    from torchvision import transforms as tv

    steps = list(getattr(transform, "transforms", None) or [])
    if len(steps) < 2 or image_size is None:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor") or not isinstance(normalize, tv.Normalize):
        return None
    mean, std = _three(normalize.mean), _three(normalize.std)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    if mean is None or std is None or len(size) != 2:
        return None
    geometry = [step for step in steps[:-2] if not _is_identity_rgb(step)]
    allowed = {"Resize", "CenterCrop", "ResizeKeepRatio", "CenterCropOrPad"}
    if any(type(step).__name__ not in allowed for step in geometry):
        return None
    tensor_steps = None
    if all(isinstance(step, tv.Resize | tv.CenterCrop) for step in geometry):
        if all(getattr(step, "antialias", True) is not False for step in geometry):
            tensor_steps = tuple(geometry)
    pil_steps: tuple[Geometry, ...] = tuple(geometry)
    decode_min_side = None
    if len(geometry) == 2 and isinstance(geometry[0], tv.Resize) and isinstance(geometry[1], tv.CenterCrop):
        resize, crop = geometry
        resample = _pil_resample(resize.interpolation)
        short = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
        crop_size = tuple(int(v) for v in crop.size)
        if resample is not None and short is not None and resize.max_size is None and len(crop_size) == 2:
            pil_steps = (FusedResizeCrop(int(short), (crop_size[0], crop_size[1]), int(resample)),)
            decode_min_side = REDUCED_DECODE_MARGIN * int(short)
    return PixelPlan(pil_steps, (int(size[0]), int(size[1])), mean, std, tensor_steps, decode_min_side)
