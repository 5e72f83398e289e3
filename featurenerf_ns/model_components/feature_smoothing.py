"""Smoothing regularisers of a rendered feature field ("Smoothness in Distilled Feature Fields"), on ray patches.

The first rays of a training batch are n square patches of p x p rays (:mod:`featurenerf_ns.data.patch_sampling`,
row-major per patch), so their rendered features F (R, D), R = n p^2, are images Fp (n, D, p, p). Each regulariser adds
one term to the feature loss (D = the distilled feature size; the naive loss is mean_r ||F(r) - Phi(r)||^2):

* ``tv``: anisotropic total variation, mean over horizontally and vertically adjacent ray pairs (u, v) of
  sum_c |F_c(u) - F_c(v)| (kornia's ``total_variation``, summed, divided by the number of pairs). With
  ``tv_guide="rgb"`` (ours, not in the paper) each pair is weighted by exp(-||I(u) - I(v)||^2 / (2 sigma_c^2)), I the
  rendered colour (no gradient): an edge-aware TV that does not pull features together across colour edges (plain TV
  lowered the feature contrast across object boundaries in the smoothing study; kornia's TV has no pair weights).
  ``tv_guide="rgb+depth"`` multiplies in exp(-(log z(u) - log z(v))^2 / (2 sigma_z^2)), z the rendered depth: no
  smoothing across depth edges either (objects in front of a similar-coloured background).
* ``bilateral``: F is pulled towards an edge-preserving smoothing of itself, mean_r ||F(r) - sg(B[F](r))||^2,
  B a bilateral filter over the patch (kornia's ``bilateral_blur``; range kernel on the feature's own L2 distance,
  or, with ``bilateral_guide="rgb"``, a joint bilateral filter guided by the rendered colour). sg = stop-gradient.
* ``mask``: F is pulled towards its Gaussian blur *inside* image segments, mean over rays in a segment of
  ||F(r) - sg(G_s[F](r))||^2 with G_s[F] = G * (F m_s) / G * m_s (normalised convolution over segment s's mask
  m_s, zero outside the patch), so features are averaged within a segment and never across its boundary.

Official settings (reference code): TV weight 1e-4; cv2.bilateralFilter d=15, sigma 75 / 75 (on 0..255 values),
weight 1e-2; Gaussian blur inside SAM masks of the rendered 64 x 64 patch. Here the reductions are means, not sums,
so the weights are not comparable one to one. Ours put each term at 10-15% of the naive feature loss of a
trained field: measured on the 1400-step n3f-tiny run of the embedded scene (2 train frames cut into 8 x 8
patches), feature loss 0.209; at weight 1: TV 0.288, bilateral target 0.0042 (rgb-guided 0.0057), in-segment blur
0.0050 (superpixels) / 0.0055 (ground-truth masks). Patches are 8 x 8 (128 px
frames whose objects span 15-40 px), segments come from the *train* images, not the rendered patch (the segmenter
runs once per frame, not per step: see :mod:`featurenerf_ns.data.mask_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

SmoothingKind = Literal["none", "tv", "bilateral", "mask"]


@dataclass
class FeatureSmoothingConfig:
    kind: SmoothingKind = "none"
    """Regulariser of the rendered feature ("none": naive distillation). Needs patch sampling
    (``--pipeline.datamanager.patch-size`` > 1); ``mask`` also a mask source (``--pipeline.datamanager.masks.kind``)."""
    tv_weight: float = 0.1
    """Weight of the TV term (official 1e-4 on a summed TV; ours is a mean over ray pairs)."""
    tv_guide: Literal["none", "rgb", "rgb+depth"] = "none"
    """``rgb``: weight each adjacent pair by the rendered colours' similarity (edge-aware TV); ``rgb+depth``: and by
    their rendered depths' similarity."""
    tv_sigma_color: float = 0.1
    """Colour sigma (0..1 RGB, L2) of the edge-aware TV's pair weights."""
    tv_sigma_depth: float = 0.03
    """Log-depth sigma of the ``rgb+depth`` pair weights (~3% relative depth difference)."""
    bilateral_weight: float = 5.0
    """Weight of the bilateral-target term (official 1e-2)."""
    bilateral_kernel: int = 5
    """Bilateral window (official d = 15 on 64 px patches; our patches are 8 px)."""
    bilateral_sigma_space: float = 2.0
    bilateral_sigma_color: float = 0.3
    """Range sigma: feature L2 distance (guide "feature") or colour distance in 0..1 (guide "rgb"; official
    75/255 = 0.29)."""
    bilateral_guide: Literal["feature", "rgb"] = "feature"
    mask_weight: float = 5.0
    """Weight of the in-segment blur target term."""
    mask_sigma: float = 1.5
    """Gaussian sigma (pixels) of the in-segment blur (kernel 2 * ceil(2 sigma) + 1)."""

    def needs_segments(self) -> bool:
        return self.kind == "mask"


def as_patches(x: Tensor, patch: int) -> Tensor:
    """(R, C) rays in patch order -> (n, C, p, p); R must be a multiple of p^2."""
    R, C = x.shape
    if patch < 2 or R % (patch * patch):
        raise ValueError(f"feature smoothing: {R} rays are not whole {patch} x {patch} patches")
    return x.reshape(R // (patch * patch), patch, patch, C).permute(0, 3, 1, 2)


def tv_term(fp: Tensor) -> Tensor:
    """fp (n, D, p, p) -> mean over adjacent pairs of the channel-summed absolute difference."""
    from kornia.losses import total_variation

    n, _, p, _ = fp.shape
    return total_variation(fp, reduction="sum").sum() / (n * 2 * p * (p - 1))


def guided_tv_term(fp: Tensor, guide: Tensor) -> Tensor:
    """fp (n, D, p, p), guide (n, G, p, p) already divided by its sigmas -> mean over adjacent pairs of
    w * channel-summed absolute difference, w = exp(-||guide(u) - guide(v)||^2 / 2) (no gradient through w)."""
    n, _, p, _ = fp.shape
    g = guide.detach().float()
    total = fp.new_zeros(())
    for dim in (2, 3):  # vertical, horizontal neighbours
        a, b = fp.narrow(dim, 1, p - 1), fp.narrow(dim, 0, p - 1)
        ga, gb = g.narrow(dim, 1, p - 1), g.narrow(dim, 0, p - 1)
        w = torch.exp(-0.5 * ((ga - gb) ** 2).sum(1))  # (n, p', p')
        total = total + (w * (a - b).abs().sum(1)).sum()
    return total / (n * 2 * p * (p - 1))


def tv_guide(cfg: FeatureSmoothingConfig, patch: int, rgb: Optional[Tensor], depth: Optional[Tensor]) -> Tensor:
    """The edge-aware TV's guide (n, G, p, p): rendered colour / sigma_c, and log depth / sigma_z for rgb+depth."""
    if rgb is None:
        raise ValueError(f"feature smoothing: tv_guide={cfg.tv_guide!r} needs the rendered rgb")
    parts = [as_patches(rgb.detach().float(), patch) / cfg.tv_sigma_color]
    if cfg.tv_guide == "rgb+depth":
        if depth is None:
            raise ValueError("feature smoothing: tv_guide='rgb+depth' needs the rendered depth")
        z = depth.detach().float().reshape(-1, 1).clamp(min=1e-4).log()
        parts.append(as_patches(z, patch) / cfg.tv_sigma_depth)
    return torch.cat(parts, dim=1)


def bilateral_target(fp: Tensor, cfg: FeatureSmoothingConfig, guide: Optional[Tensor] = None) -> Tensor:
    """Bilateral-filtered fp (n, D, p, p), no gradient; ``guide`` (n, 3, p, p) for the joint (rgb-guided) filter."""
    from kornia.filters import bilateral_blur, joint_bilateral_blur

    k = int(cfg.bilateral_kernel) | 1
    sig = (cfg.bilateral_sigma_space, cfg.bilateral_sigma_space)
    with torch.no_grad():
        if cfg.bilateral_guide == "rgb":
            if guide is None:
                raise ValueError("feature smoothing: bilateral_guide='rgb' needs the rendered rgb")
            return joint_bilateral_blur(fp.float(), guide.float(), k, cfg.bilateral_sigma_color, sig, "reflect", "l2")
        return bilateral_blur(fp.float(), k, cfg.bilateral_sigma_color, sig, "reflect", "l2")


def segment_blur_target(fp: Tensor, segments: Tensor, sigma: float) -> Tensor:
    """Normalised Gaussian blur of fp (n, D, p, p) inside each segment of ``segments`` (n, p, p) int (-1: no
    segment, left unchanged), no gradient."""
    from kornia.filters import gaussian_blur2d

    n, D, p, _ = fp.shape
    k = 2 * int(torch.ceil(torch.tensor(2.0 * sigma))) + 1
    with torch.no_grad():
        # per patch, labels -> 0..K-1 (K = most segments in any patch), one-hot masks (n, K, p, p)
        flat = segments.reshape(n, -1)
        local = torch.full_like(flat, -1)
        K = 1
        for i in range(n):
            valid = flat[i] >= 0
            if valid.any():
                _, inv = torch.unique(flat[i][valid], return_inverse=True)
                local[i][valid] = inv
                K = max(K, int(inv.max()) + 1)
        onehot = torch.zeros(n, K, p * p, dtype=fp.dtype, device=fp.device)
        ok = local >= 0
        onehot.scatter_(1, local.clamp(min=0)[:, None, :], ok[:, None, :].to(fp.dtype))
        onehot = onehot.reshape(n, K, p, p)
        m = gaussian_blur2d(onehot, k, (sigma, sigma), "constant")  # (n, K, p, p)
        num = gaussian_blur2d(
            (fp.float()[:, None] * onehot[:, :, None]).reshape(n * K, D, p, p), k, (sigma, sigma), "constant"
        ).reshape(n, K, D, p, p)
        avg = num / m[:, :, None].clamp(min=1e-6)
        target = (avg * onehot[:, :, None]).sum(1)  # each pixel takes its own segment's average
        return torch.where(ok.reshape(n, 1, p, p), target, fp.float())


def smoothing_loss(
    features: Tensor,
    cfg: FeatureSmoothingConfig,
    patch: int,
    segments: Optional[Tensor] = None,
    rgb: Optional[Tensor] = None,
    depth: Optional[Tensor] = None,
) -> Tensor:
    """The weighted regulariser of rendered ``features`` (R, D) in patch order; ``segments`` (R,) int for
    ``mask``, ``rgb`` (R, 3) for the rgb-guided bilateral filter and the edge-aware TV, ``depth`` (R, 1) for the
    depth-guided TV. Returns a scalar."""
    fp = as_patches(features, patch)
    if cfg.kind == "tv":
        if cfg.tv_guide != "none":
            return cfg.tv_weight * guided_tv_term(fp, tv_guide(cfg, patch, rgb, depth))
        return cfg.tv_weight * tv_term(fp)
    if cfg.kind == "bilateral":
        guide = as_patches(rgb.detach(), patch) if rgb is not None else None
        target = bilateral_target(fp, cfg, guide)
        return cfg.bilateral_weight * ((fp - target) ** 2).sum(1).mean()
    if cfg.kind == "mask":
        if segments is None:
            raise ValueError("feature smoothing 'mask': the batch has no 'segment' (set a mask source)")
        seg = as_patches(segments.reshape(-1, 1), patch)[:, 0]
        target = segment_blur_target(fp, seg, cfg.mask_sigma)
        inside = (seg >= 0).to(fp.dtype)[:, None]
        return cfg.mask_weight * (((fp - target) ** 2) * inside).sum(1).sum() / inside.sum().clamp(min=1.0)
    raise ValueError(f"feature smoothing: unknown kind {cfg.kind!r} (none, tv, bilateral, mask)")
