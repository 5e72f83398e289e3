"""A feature-space segment of a distilled feature field, used to edit the radiance field (N3F Sec. 4.3).

    inside(x) = ||eta(f(x)) - eta(q)|| <= tau       f (..., D) features of samples, q (D,) query, eta = L2-normalise

    q = eta(mean_{p in region} eta(F(p)))                              the query of a selected image region

``remove`` keeps the density outside the segment (sigma(x) <- 0 inside), ``extract`` keeps it only inside.
``best_threshold`` picks tau from the query frame alone: the value whose 2D mask {d(F(p), q) <= tau} best matches
the selected region (IoU); used by the scene tasks, the export and the viewer's "auto" threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def feature_distance(feats: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """||eta(f) - eta(q)|| for feats (..., D), query (D,) -> (...,), in [0, 2]."""
    cos = F.normalize(feats.float(), dim=-1) @ F.normalize(query.float().to(feats.device), dim=0)
    return (2.0 - 2.0 * cos).clamp(min=0).sqrt()


def region_query(feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """feats (H, W, D), mask (H, W) -> the unit-normalised mean of the normalised features inside the mask (D,)."""
    return F.normalize(F.normalize(feats[mask].float(), dim=-1).mean(0), dim=0)


def best_threshold(dist: torch.Tensor, mask: torch.Tensor, grid: Optional[Sequence[float]] = None) -> float:
    """The tau in ``grid`` whose {dist <= tau} best matches ``mask`` (IoU) in the query frame itself."""
    taus = np.linspace(0.05, 1.5, 30) if grid is None else np.asarray(grid)
    best, best_iou = float(taus[0]), -1.0
    for t in taus:
        pred = dist <= float(t)
        iou = float((pred & mask).sum()) / max(float((pred | mask).sum()), 1.0)
        if iou > best_iou:
            best, best_iou = float(t), iou
    return best


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
