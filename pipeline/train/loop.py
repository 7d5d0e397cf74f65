"""The training loop: open_clip's contrastive losses and optimizer habits, with epoch checkpoints.

* Loss: ``open_clip.loss.ClipLoss`` (symmetric InfoNCE: logits = scale · image·textᵀ, cross
  entropy both ways, averaged); models with a logit bias (SigLIP) get ``SigLipLoss``.
* The logit scale is learned and clamped to [0, ln 100] after every step, as ``open_clip_train``.
* AdamW (betas 0.9/0.98, eps 1e-6) without weight decay on norms, biases and the logit scale
  (``open_clip_train.main``'s grouping), warmup then cosine decay (``open_clip_train.scheduler``).
* Precision: ``auto`` is fp16 autocast with a gradient scaler on CUDA (open_clip's ``amp``) and
  fp32 on the CPU; ``bf16`` is bf16 autocast (weights stay fp32) on either.
* Towers: ``lock="image"``/``"text"`` freezes one tower (LiT); ``lock="last"`` freezes both but
  their last ``unlock_last`` groups / layers.
* After every epoch the model, optimizer, scaler and step go to ``checkpoint`` (atomically); a
  run that finds a checkpoint of the same job (``fingerprint``) resumes after its last epoch.
  The order of pairs in epoch *e* is drawn from ``seed`` and *e* alone, so a resumed run takes
  the same steps as one that never stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.io.atomic import atomic_file
from mmindex.pipeline.train.pairs import PairTensors

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Lock = Literal["none", "image", "text", "last"]
TrainPrecision = Literal["auto", "fp32", "bf16", "fp16"]
LOGIT_SCALE_MAX = math.log(100)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (all of them are in the output's provenance)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-5
    warmup: int | None = None  # steps; None: a tenth of all steps
    weight_decay: float = 0.1
    lock: Lock = "none"
    unlock_last: int = 0
    precision: TrainPrecision = "auto"
    seed: int = 0

    def as_json(self) -> dict[str, Any]:
        """Plain data for the provenance and the job's fingerprint."""
        return asdict(self)


class TrainProgress(Protocol):
    """What the loop reports: the steps ahead, each step's loss and pairs, each finished epoch."""

    def start(self, total_steps: int, done_steps: int) -> None: ...

    def step(self, loss: float, pairs: int) -> None: ...

    def epoch_done(self, epoch: int, epochs: int) -> None: ...


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a run did: steps and epochs, its last loss, training speed (this process's steps)."""

    steps: int
    epochs: int
    resumed_from_epoch: int
    final_loss: float
    seconds: float
    pairs_per_second: float
    precision: str


def training_precision(precision: TrainPrecision, device_type: str) -> Literal["fp32", "bf16", "fp16"]:
    """The precision ``precision`` stands for on this device.

    Raises:
        ConfigError: fp16 off CUDA.
    """
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("--precision fp16 trains on CUDA only; use bf16 or fp32 on the CPU")
    return precision


def lock_towers(model: Any, lock: Lock, unlock_last: int) -> None:
    """Freeze towers with open_clip's own ``lock_image_tower`` / ``lock_text_tower``."""
    if lock in ("image", "last"):
        model.lock_image_tower(unlocked_groups=unlock_last if lock == "last" else 0)
    if lock in ("text", "last"):
        model.lock_text_tower(unlocked_layers=unlock_last if lock == "last" else 0)


def _no_decay(name: str, parameter: Any) -> bool:
    """open_clip_train's exclusion: norms, biases, gains and the logit scale get no weight decay."""
    return parameter.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def make_optimizer(model: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, in open_clip's two weight-decay groups."""
    import torch

    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("every parameter is locked: unlock a tower or raise --unlock-last")
    groups = [
        {"params": [p for name, p in named if _no_decay(name, p)], "weight_decay": 0.0},
        {"params": [p for name, p in named if not _no_decay(name, p)], "weight_decay": config.weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def make_loss(model: Any) -> Any:
    """SigLipLoss for models with a logit bias, else ClipLoss (open_clip.loss)."""
    from open_clip.loss import ClipLoss, SigLipLoss

    return SigLipLoss() if getattr(model, "logit_bias", None) is not None else ClipLoss()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    with atomic_file(path) as handle:
        torch.save(state, handle)


def _load_checkpoint(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    import torch

    if path is None or not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to another fine-tuning job", path)
        return None
    return state


def _forward_loss(model: Any, loss_fn: Any, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    output = model(pixels, tokens)
    if not isinstance(output, dict):  # models built without output_dict=True return a tuple
        names = ["image_features", "text_features", "logit_scale", "logit_bias"]
        output = dict(zip(names, output, strict=False))
    return loss_fn(**output)


def train(
    model: Any,
    data: PairTensors,
    to_pixels: Callable[[np.ndarray], torch.Tensor],
    device: torch.device,
    config: TrainConfig,
    *,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    progress: TrainProgress | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``data``; see the module docstring."""
    import contextlib

    import torch
    from open_clip_train.scheduler import cosine_lr

    if config.epochs < 1 or config.batch_size < 2:
        raise ConfigError("--epochs must be at least 1 and --batch-size at least 2")
    precision = training_precision(config.precision, device.type)
    torch.manual_seed(config.seed)
    lock_towers(model, config.lock, config.unlock_last)
    optimizer = make_optimizer(model, config)
    loss_fn = make_loss(model)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    batch = min(config.batch_size, len(data))
    steps_per_epoch = len(data) // batch
    total_steps = steps_per_epoch * config.epochs
    warmup = config.warmup if config.warmup is not None else max(1, total_steps // 10)
    schedule = cosine_lr(optimizer, config.lr, min(warmup, total_steps - 1) if total_steps > 1 else 0, total_steps)
    start_epoch, step = 0, 0
    state = _load_checkpoint(checkpoint, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        log.info("resuming fine-tuning after epoch %d (step %d)", start_epoch, step)
    if progress is not None:
        progress.start(total_steps, step)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision != "fp32" else contextlib.nullcontext())
    tokens_all = torch.from_numpy(data.tokens)
    model.train()
    last_loss, seconds, trained = float("nan"), 0.0, 0
    for epoch in range(start_epoch, config.epochs):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)).numpy()
        for index in range(steps_per_epoch):
            rows = np.sort(order[index * batch : (index + 1) * batch])
            started = time.perf_counter()
            schedule(step)
            pixels = to_pixels(data.pixels[rows])
            tokens = tokens_all[rows].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = _forward_loss(model, loss_fn, pixels, tokens)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
            last_loss = float(loss.detach())
            seconds += time.perf_counter() - started
            trained += len(rows)
            step += 1
            if progress is not None:
                progress.step(last_loss, len(rows))
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "fingerprint": fingerprint, "epoch": epoch + 1, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
            })
        if progress is not None:
            progress.epoch_done(epoch + 1, config.epochs)
    model.eval()
    return TrainResult(step, config.epochs, start_epoch, last_loss, seconds, trained / seconds if seconds else 0.0, precision)
