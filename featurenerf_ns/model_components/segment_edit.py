"""A feature-space segment of a distilled feature field, used to edit the radiance field (N3F Sec. 4.3).

    inside(x) = ||eta(f(x)) - eta(q)|| <= tau       f (..., D) features of samples, q (D,) query, eta = L2-normalise

``remove`` keeps the density outside the segment (sigma(x) <- 0 inside), ``extract`` keeps it only inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F


def feature_distance(feats: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """||eta(f) - eta(q)|| for feats (..., D), query (D,) -> (...,), in [0, 2]."""
    cos = F.normalize(feats.float(), dim=-1) @ F.normalize(query.float().to(feats.device), dim=0)
    return (2.0 - 2.0 * cos).clamp(min=0).sqrt()


@dataclass
class SegmentEdit:
    query: torch.Tensor
    """(D,) query feature (normalised here)."""
    tau: float
    """Distance threshold between unit-normalised features, in [0, 2]."""
    mode: Literal["remove", "extract"] = "remove"

    def __post_init__(self):
        if self.mode not in ("remove", "extract"):
            raise ValueError(f"segment edit: mode {self.mode!r} unknown; use remove or extract")

    def inside(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (..., D) -> (...,) bool."""
        return feature_distance(feats, self.query) <= self.tau

    def density_scale(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (..., D) -> (..., 1) float: 1 where the density is kept, 0 where it is removed."""
        inside = self.inside(feats)
        keep = ~inside if self.mode == "remove" else inside
        return keep.float()[..., None]
