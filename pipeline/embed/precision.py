"""Numeric precision of the forward pass: what ``auto`` means on this machine, and how it is applied.

* CUDA: ``auto`` is fp16; fp16/bf16 run under ``torch.autocast`` (weights stay fp32).
* CPU: ``auto`` is bf16 when the CPU has native bf16 matrix instructions (AMX or AVX-512 BF16),
  else fp32. On the CPU a reduced precision is applied by casting the weights once at load time
  (``model.to(bfloat16)``), not by autocast: measured on a 2-core AMX Xeon with ViT-B-32, CPU
  autocast re-casts every weight on every call and routes 3-D linears through a copying ``bmm``
  (0.9-1.2x fp32), while bf16 weights run the oneDNN/AMX kernels directly (4-5x fp32).

Precision is not part of the embedder id: bf16 and fp16 vectors stay within cosine 0.999 of the
fp32 ones (``tests/test_precision.py``; ``benchmarks/ingest.py`` prints the minimum for ViT-B-32),
far inside the distance between any two different images, so vectors of one embedder computed
at different precisions (a CUDA ingest in fp16, a CPU query in bf16) share one space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
_CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True, slots=True)
class ResolvedPrecision:
    """A concrete precision and how it is applied.

    ``mode`` is ``fp32`` (nothing to do), ``autocast`` (CUDA: ``torch.autocast`` around the
    forward pass) or ``weights`` (CPU: the model's weights are cast once, inputs follow).
    """

    name: Literal["fp32", "fp16", "bf16"]
    mode: Literal["fp32", "autocast", "weights"]

    def dtype(self) -> torch.dtype:
        """The torch dtype of this precision."""
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.name]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of the first CPU listed in ``/proc/cpuinfo`` (empty when unreadable)."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        return frozenset()
    return frozenset()


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AMX-BF16 or AVX-512 BF16) and torch
    was built with oneDNN to use it. Reads ``/proc/cpuinfo``; False elsewhere."""
    if not _CPU_BF16_FLAGS & cpu_flags():
        return False
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(probe()) if probe is not None else True


def resolve_precision(precision: Precision, device_type: str) -> ResolvedPrecision:
    """Turn a requested precision into a concrete one for the device (``cuda``, ``cpu``, ...).

    Raises:
        ValueError: an unknown precision name.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device_type == "cuda":
            precision = "fp16"
        elif device_type == "cpu" and cpu_has_fast_bf16():
            precision = "bf16"
        else:
            precision = "fp32"
    if precision == "fp32":
        return ResolvedPrecision("fp32", "fp32")
    mode: Literal["autocast", "weights"] = "autocast" if device_type == "cuda" else "weights"
    return ResolvedPrecision(precision, mode)
