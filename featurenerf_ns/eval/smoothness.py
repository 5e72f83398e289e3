"""Smoothness of a feature map against ground-truth instance regions (the smoothing study's image metrics).

For a feature map F (H, W, D) and instance ids L (H, W) (0: background / platform, k >= 1: object k), over the
horizontally and vertically adjacent pixel pairs (u, v), with d(u, v) = ||eta(F_u) - eta(F_v)|| in [0, 2]
(eta = L2 normalisation, as in every feature comparison of the scene tasks):

* **roughness** = mean d over pairs inside one object (L_u = L_v >= 1): the feature's gradient magnitude where
  it should be constant; lower is smoother.
* **edge contrast** = mean d over pairs across an object boundary (L_u != L_v, at least one >= 1): what smoothing
  must keep; higher is sharper.

Both are accumulated as sums and counts over frames (:class:`SmoothnessTally`), so the mean is over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F


def pair_stats(feature: torch.Tensor, instance: torch.Tensor) -> Dict[str, float]:
    """feature (H, W, D), instance (H, W) int -> sums and counts of d inside objects and across boundaries."""
    if feature.shape[:2] != instance.shape:
        raise ValueError(f"smoothness: feature map {tuple(feature.shape[:2])} vs instance mask {tuple(instance.shape)}")
    f = F.normalize(feature.float(), dim=-1)
    lab = instance.long()
    out = {"inside_sum": 0.0, "inside_n": 0.0, "edge_sum": 0.0, "edge_n": 0.0}
    for a, b, la, lb in (
        (f[:, 1:], f[:, :-1], lab[:, 1:], lab[:, :-1]),
        (f[1:], f[:-1], lab[1:], lab[:-1]),
    ):
        d = (a - b).norm(dim=-1)
        inside = (la == lb) & (la >= 1)
        edge = (la != lb) & ((la >= 1) | (lb >= 1))
        out["inside_sum"] += float(d[inside].sum())
        out["inside_n"] += float(inside.sum())
        out["edge_sum"] += float(d[edge].sum())
        out["edge_n"] += float(edge.sum())
    return out


@dataclass
class SmoothnessTally:
    inside_sum: float = 0.0
    inside_n: float = 0.0
    edge_sum: float = 0.0
    edge_n: float = 0.0

    def add(self, feature: torch.Tensor, instance: torch.Tensor) -> None:
        for key, value in pair_stats(feature, instance).items():  # inside_/edge_ sum and n: the fields' names
            setattr(self, key, getattr(self, key) + value)

    @property
    def roughness(self) -> float:
        return self.inside_sum / self.inside_n if self.inside_n else float("nan")

    @property
    def edge_contrast(self) -> float:
        return self.edge_sum / self.edge_n if self.edge_n else float("nan")
