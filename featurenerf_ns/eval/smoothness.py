"""Smoothness of a feature map against ground-truth instance regions (the smoothing study's image metrics).

For a feature map F (H, W, D) and instance ids L (H, W) (0: background / platform, k >= 1: object k), over the
horizontally and vertically adjacent pixel pairs (u, v), with d(u, v) = ||eta(F_u) - eta(F_v)|| in [0, 2]
(eta = L2 normalisation, as in every feature comparison of the scene tasks):

* **roughness** = mean d over pairs inside one object (L_u = L_v >= 1): the feature's gradient magnitude where
  it should be constant; lower is smoother.
* **edge contrast** = mean d over pairs across an object boundary (L_u != L_v, at least one >= 1): what smoothing
  must keep; higher is sharper. Pixel noise raises it too (a noisy map differs between any two neighbours), so a
  smoother that only removes noise lowers it.
* **edge contrast of window means** (``edge_contrast_band``) = mean over the same boundary pairs of
  ||eta(m_u) - eta(m_v)||, where m_u is the mean normalised feature of the pixels of u's own region within the
  (2r+1)^2 window around u (r = ``BAND_RADIUS``): the step between the two sides with the noise averaged out;
  a blur across the boundary lowers it, denoising does not.
* **region contrast** (``edge_contrast_regions``) = mean over the same pairs of ||eta(M_a) - eta(M_b)||, M_a the
  mean normalised feature of u's whole region a in that frame: how different the two sides are at all.
* **boundary sharpness** = sum of window-mean steps / sum of region steps (1: the full region-to-region step
  happens at the boundary; below 1: the field blurs across it). A smoother that only pulls all features closer
  together lowers the contrasts but not the sharpness; one that smears across boundaries lowers the sharpness.

All are accumulated as sums and counts over frames (:class:`SmoothnessTally`), so the mean is over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

BAND_RADIUS = 2
"""Half-width of the window of :func:`pair_stats`' edge contrast of window means (5 x 5 pixels)."""


def pair_stats(feature: torch.Tensor, instance: torch.Tensor) -> Dict[str, float]:
    """feature (H, W, D), instance (H, W) int -> sums and counts of d inside objects and across boundaries."""
    if feature.shape[:2] != instance.shape:
        raise ValueError(f"smoothness: feature map {tuple(feature.shape[:2])} vs instance mask {tuple(instance.shape)}")
    f = F.normalize(feature.float(), dim=-1)
    lab = instance.long()
    m = region_window_means(f, lab, BAND_RADIUS)
    means = torch.zeros(int(lab.max()) + 1, f.shape[-1])
    for k in lab.unique().tolist():
        means[k] = F.normalize(f[lab == k].mean(0), dim=0)
    out = {"inside_sum": 0.0, "inside_n": 0.0, "edge_sum": 0.0, "edge_n": 0.0, "band_sum": 0.0, "region_sum": 0.0}
    for a, b, ma, mb, la, lb in (
        (f[:, 1:], f[:, :-1], m[:, 1:], m[:, :-1], lab[:, 1:], lab[:, :-1]),
        (f[1:], f[:-1], m[1:], m[:-1], lab[1:], lab[:-1]),
    ):
        d = (a - b).norm(dim=-1)
        inside = (la == lb) & (la >= 1)
        edge = (la != lb) & ((la >= 1) | (lb >= 1))
        out["inside_sum"] += float(d[inside].sum())
        out["inside_n"] += float(inside.sum())
        out["edge_sum"] += float(d[edge].sum())
        out["edge_n"] += float(edge.sum())
        out["band_sum"] += float((F.normalize(ma, dim=-1) - F.normalize(mb, dim=-1)).norm(dim=-1)[edge].sum())
        out["region_sum"] += float((means[la[edge]] - means[lb[edge]]).norm(dim=-1).sum())
    return out


def region_window_means(f: torch.Tensor, lab: torch.Tensor, r: int) -> torch.Tensor:
    """f (H, W, D), lab (H, W) -> (H, W, D): at each pixel the mean of f over the pixels of the *same label* in the
    (2r+1)^2 window around it (masked box filters, one per label present)."""
    out = torch.zeros_like(f)
    k = 2 * r + 1
    for value in lab.unique().tolist():
        mask = (lab == value).float()[None, None]  # (1, 1, H, W)
        num = F.avg_pool2d(f.permute(2, 0, 1)[None] * mask, k, stride=1, padding=r, count_include_pad=True)
        den = F.avg_pool2d(mask, k, stride=1, padding=r, count_include_pad=True).clamp(min=1e-12)
        sel = lab == value
        out[sel] = (num / den)[0].permute(1, 2, 0)[sel]
    return out


@dataclass
class SmoothnessTally:
    inside_sum: float = 0.0
    inside_n: float = 0.0
    edge_sum: float = 0.0
    edge_n: float = 0.0
    band_sum: float = 0.0
    region_sum: float = 0.0

    def add(self, feature: torch.Tensor, instance: torch.Tensor) -> None:
        for key, value in pair_stats(feature, instance).items():  # inside_/edge_ sum and n: the fields' names
            setattr(self, key, getattr(self, key) + value)

    @property
    def roughness(self) -> float:
        return _ratio(self.inside_sum, self.inside_n)

    @property
    def edge_contrast(self) -> float:
        return _ratio(self.edge_sum, self.edge_n)

    @property
    def edge_contrast_band(self) -> float:
        return _ratio(self.band_sum, self.edge_n)

    @property
    def edge_contrast_regions(self) -> float:
        return _ratio(self.region_sum, self.edge_n)

    @property
    def boundary_sharpness(self) -> float:
        return _ratio(self.band_sum, self.region_sum)


def _ratio(num: float, den: float) -> float:
    """num / den, nan when nothing was counted."""
    return num / den if den else float("nan")
