"""Numeric precision of the field and encoder: one place that decides float32 / bfloat16 / float16 autocast.

The field is matmul-bound. On this project's CPUs (AMX + AVX512-BF16) a 49152x512x512 matmul runs at 1046
GFLOP/s in bfloat16 vs 243 in float32 (4.3x), so training and rendering run the encoder and the field under
``torch.autocast`` with float32 master weights; compositing, losses and the importance-sampling pdf stay float32
(the model casts the field outputs back before volume rendering).

``precision`` values (``FeatureNeRFModelConfig.precision``, the viewer's "Render precision"):

* ``auto``: bfloat16 on CPUs with bf16 matrix instructions and on CUDA GPUs that support bf16, float16 on
  other CUDA GPUs (the trainer's GradScaler then guards the gradients: set ``--mixed-precision True``),
  float32 elsewhere;
* ``float32``: no autocast (the reference numerics);
* ``bfloat16`` / ``float16``: forced.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path
from typing import Literal, Optional

import torch

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """The CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX): bf16 autocast then speeds the field ~3x."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device) -> str:
    """``auto`` -> the fastest precision of ``device``; other values are checked and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} unknown; choose from {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bfloat16"
    return "float32"


def autocast_context(device, precision: str):
    """A ``torch.autocast`` context for ``precision`` (resolved first) on ``device``; a no-op for float32."""
    device = torch.device(device)
    p = resolve_precision(precision, device)
    if p == "float32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if p == "bfloat16" else torch.float16
    return torch.autocast(device.type if device.type in ("cpu", "cuda") else "cpu", dtype=dtype)


class ThreadPrecision:
    """A per-thread precision override (the viewer renders in its own thread while ns-train trains); copies and
    pickles start without an override (``threading.local`` itself cannot be copied)."""

    def __init__(self):
        self._local = threading.local()

    def get(self) -> Optional[str]:
        return getattr(self._local, "value", None)

    def set(self, precision: Optional[str]) -> None:
        self._local.value = precision

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._local = threading.local()
