"""Adam for the presets: nerfstudio's ``AdamOptimizerConfig`` with torch's fused implementation where it exists.

torch's default Adam on CPU loops over the parameters one tensor at a time; ``fused=True`` updates them in one
kernel per dtype/device group. Measured on 2 cores (14.7M parameters in 46 tensors, the paper model's shapes, the
machine busy with a training run): 47.7 ms per step default, 150 ms ``foreach``, 17.4 ms fused. The update is the
same Adam (eps, bias correction); the order of floating-point operations differs, so values agree to rounding only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam with ``fused`` chosen by device: on where every parameter is on CPU or CUDA (torch >= 2.4 supports both)."""

    fused: Optional[bool] = None
    """None: fused where the parameters' devices support it; True / False to force."""

    def setup(self, params) -> torch.optim.Optimizer:
        params = list(params)
        tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
        fused = self.fused
        if fused is None:
            fused = bool(tensors) and all(
                p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in tensors
            )
        return torch.optim.Adam(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused)
