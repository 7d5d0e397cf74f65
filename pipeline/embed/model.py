"""One factory for embedders: ``load_embedder(spec)`` (the open_clip habit: one entry point over a registry of configs).

An ``Embedder`` turns preprocessed image tensors and texts into L2-normalized float32 vectors
in one shared space. Device is picked automatically (CUDA when present). Precision ``auto`` is
fp16 autocast on CUDA, bf16 weights on CPUs with AMX / AVX-512 BF16, else fp32 (see
``precision.py``; precision is not part of the embedder id).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX, PREPROCESS_VERSION, embedder_id
from mmindex.pipeline.embed.precision import Precision, ResolvedPrecision, resolve_precision
from mmindex.pipeline.embed.weights import ResolvedWeights, file_sha256, resolve_weights, tag_weights_file, warn_if_pickled
from mmindex.pipeline.errors import ConfigError, ModelUnavailableError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mmindex.pipeline.embed.preprocess import PixelPlan

log = logging.getLogger(__name__)

__all__ = ["PREPROCESS_VERSION", "Embedder", "ModelSpec", "Precision", "load_embedder", "resolve_device"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model to embed with: an open_clip architecture + tag/checkpoint, or a local-dir."""

    name: str
    pretrained: str | None = None

    @property
    def weights_tag(self) -> str | None:
        """The tag or checkpoint the weights come from; None for a local-dir (its folder holds them)."""
        return None if self.name.startswith(LOCAL_DIR_PREFIX) else self.pretrained

    def describe(self) -> str:
        """Human-readable form for messages."""
        if self.name.startswith(LOCAL_DIR_PREFIX) or not self.pretrained:
            return self.name
        return f"{self.name} ({self.pretrained})"


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(device)


def check_device(device: str) -> None:
    """Fail now if ``device`` cannot be had (``cuda`` without a GPU, ``ModelUnavailableError``).
    ``auto`` and ``cpu`` always can: they are not checked, so torch is not imported for them (a
    re-run with nothing to embed never needs it: ~1.5 s of a no-op re-run's ~2 s at 100,000 files)."""
    if device not in ("auto", "cpu"):
        resolve_device(device)


class Embedder:
    """A loaded open_clip model with its preprocessing and tokenizer."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: ResolvedWeights,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Any,
        device: torch.device,
        precision: Precision | ResolvedPrecision,
    ) -> None:
        self.spec = spec
        self.weights = weights
        self.model: Any = model  # open_clip's CLIP or CustomTextCLIP (encode_image / encode_text)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        resolved = precision if isinstance(precision, ResolvedPrecision) else resolve_precision(precision, device.type)
        self.precision = resolved
        self.autocast_dtype = resolved.dtype() if resolved.mode == "autocast" else None
        # CPU bf16/fp16: the weights are cast once (a no-op when already cast), inputs follow them.
        self.input_dtype = resolved.dtype() if resolved.mode == "weights" else None
        if self.input_dtype is not None:
            model.to(self.input_dtype)
        self.dim = int(self._output_dim())
        self.context_length = int(getattr(tokenizer, "context_length", 77))

    @functools.cached_property
    def pixel_plan(self) -> PixelPlan | None:
        """The preprocessing split into per-item geometry and per-batch normalization, or None
        when the transform is not one ``preprocess.plan_pixels`` recognises (then it runs whole)."""
        from mmindex.pipeline.embed.preprocess import plan_pixels

        visual = getattr(self.model, "visual", None)
        plan = plan_pixels(self.preprocess, getattr(visual, "image_size", None))
        if plan is None:
            log.info("preprocessing of %s runs per item (transform not recognised)", self.embedder_id)
        return plan

    @property
    def embedder_id(self) -> str:
        """Names the embedding space: architecture, weights, preprocessing version."""
        return embedder_id(self.spec.name, self.weights.weights_id)

    @functools.cached_property
    def tag_weights_sha256(self) -> str | None:
        """The sha256 of the file a published tag's weights were loaded from (the hub or URL cache);
        None for a checkpoint file or a local-dir, whose embedder id already names their hash.

        A tag names weights by name only: this is what tells a collection that the cached file
        under that name is no longer the one its vectors came from (``require_own_model``)."""
        if self.weights.tag is None:
            return None
        path = self.weights.checkpoint or tag_weights_file(self.spec.name, self.weights.tag)
        return None if path is None else file_sha256(path)

    def _output_dim(self) -> int:
        projection = getattr(self.model, "text_projection", None)
        if projection is not None and hasattr(projection, "shape"):
            return int(projection.shape[-1])
        with self._inference():
            tokens = self.tokenizer(["probe"]).to(self.device)
            return int(self.model.encode_text(tokens).shape[-1])

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        import torch

        with torch.inference_mode():
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                    yield

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a batch of preprocessed images (N, 3, H, W) -> (N, dim) normalized float32."""
        import torch

        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._inference():
            features = self.model.encode_image(pixels.to(self.device, dtype=self.input_dtype, non_blocking=True))
            features = torch.nn.functional.normalize(features.float(), dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed texts (truncated to the model's context) -> (N, dim) normalized float32."""
        import torch

        outputs = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            with self._inference():
                features = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
            outputs.append(features.cpu().numpy().astype(np.float32, copy=False))
        return np.concatenate(outputs)

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes, without start/end markers."""
        inner = getattr(self.tokenizer, "tokenizer", None)  # HFTokenizer wraps a HF tokenizer
        if inner is not None and hasattr(inner, "encode"):
            return len(inner.encode(text, add_special_tokens=False))
        return len(self.tokenizer.encode(text))


def load_embedder(spec: ModelSpec, device: str = "auto", precision: Precision = "auto") -> Embedder:
    """Build the embedder every caller uses (CLI, flows, benchmarks, tests).

    ``precision``: ``auto`` (fp16 on CUDA, bf16 on CPUs with AMX / AVX-512 BF16, else fp32),
    ``fp32``, ``bf16`` or ``fp16``; see ``precision.py``. No warm-up pass is run.
    """
    started = time.perf_counter()
    weights = resolve_weights(spec.name, spec.pretrained)
    if weights.tag is None and weights.checkpoint is not None:  # a user's file, not a published tag
        warn_if_pickled(weights.checkpoint)
    torch_device = resolve_device(device)
    try:
        resolved = resolve_precision(precision, torch_device.type)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    import open_clip

    overrides: dict[str, Any] = {}
    if weights.preprocess:
        for source, target in (("mean", "image_mean"), ("std", "image_std"),
                               ("interpolation", "image_interpolation"), ("resize_mode", "image_resize_mode")):
            if source in weights.preprocess:
                overrides[target] = weights.preprocess[source]
    is_local_dir = spec.name.startswith(LOCAL_DIR_PREFIX)
    pretrained = None if is_local_dir else str(weights.checkpoint) if weights.checkpoint else weights.tag
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.name,
            pretrained=pretrained,
            device=torch_device,
            force_quick_gelu=weights.quick_gelu,
            require_pretrained=True,  # never embed with random weights by accident
            **overrides,
        )
        tokenizer = open_clip.get_tokenizer(spec.name)
    # Loading an arbitrary user file through torch/open_clip can raise nearly anything (asserts,
    # unpickler IndexErrors, ...): every such failure is reported, with its cause, as one line.
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailableError(f"cannot load model {spec.describe()}: {first_line[:300]}") from exc
    model.eval()
    embedder = Embedder(spec, weights, model, preprocess, tokenizer, torch_device, resolved)
    log.info("loaded %s on %s (%s) in %.1fs", embedder.embedder_id, torch_device, resolved.name,
             time.perf_counter() - started)
    return embedder
