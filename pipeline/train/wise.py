"""WiSE-FT: the saved weights are ``(1 − α)·base + α·tuned`` (Wortsman et al., 2022).

Fine-tuning on a small domain can erase what the base model knew (zero-shot accuracy
collapsing); interpolating the weights keeps much of it while keeping most of the gain.
``α = 0`` is the base model exactly, ``α = 1`` the fine-tuned one. ``auto`` sweeps α on the
validation split and keeps the best mean recall.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmindex.pipeline.train.evaluation import RetrievalMetrics

if TYPE_CHECKING:
    import torch

SWEEP = tuple(round(step / 10, 1) for step in range(11))


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One α of the sweep and its validation metrics."""

    alpha: float
    validation: RetrievalMetrics


def interpolate(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1 − α)·base + α·tuned`` for every floating tensor; other tensors (counters) from ``tuned``.

    α = 0 returns the base tensors themselves (bit for bit), α = 1 the tuned ones.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    if base.keys() != tuned.keys():
        raise ValueError("base and tuned weights have different tensors")
    mixed: dict[str, torch.Tensor] = {}
    for name, tuned_tensor in tuned.items():
        base_tensor = base[name]
        if alpha == 0.0:
            mixed[name] = base_tensor.clone()
        elif alpha == 1.0 or not tuned_tensor.is_floating_point():
            mixed[name] = tuned_tensor.clone()
        else:
            mixed[name] = base_tensor.lerp(tuned_tensor.to(base_tensor.dtype), alpha)
    return mixed


def sweep_alpha(model: Any, base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                measure: Callable[[Any], RetrievalMetrics], alphas: tuple[float, ...] = SWEEP) -> tuple[float, list[SweepPoint]]:
    """Evaluate every α on the validation split (``measure``); the best α and every point.

    Ties go to the smaller α (closer to the base model: less forgetting). ``model`` is left with
    the tuned weights.
    """
    points = []
    for alpha in alphas:
        model.load_state_dict(interpolate(base, tuned, alpha))
        points.append(SweepPoint(alpha, measure(model)))
    model.load_state_dict(dict(tuned))
    best = max(points, key=lambda point: (round(point.validation.mean_recall, 9), -point.alpha))
    return best.alpha, points
