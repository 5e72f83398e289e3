"""Importance sampling of ray depths from a coarse pass's weights (inverse CDF of a piecewise-constant pdf).

Own code rather than nerfstudio's ``PDFSampler``: the fine pass needs bare depths (R, n) to merge with the coarse
points itself (see ``FeatureNeRFModel._fine_reusing_coarse``), not a new set of RaySamples with re-made bins.
"""

from __future__ import annotations

import torch


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool) -> torch.Tensor:
    """Inverse-CDF samples (R, n) of t from piecewise-constant weights (R, S) over bin edges (R, S + 1)."""
    w = weights + 1e-5
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), pdf.cumsum(-1)], -1).clamp(max=1.0)
    if deterministic:
        u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, device=bins.device).expand(*cdf.shape[:-1], n).contiguous()
    else:
        u = torch.rand(*cdf.shape[:-1], n, device=bins.device)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    b0, b1 = bins.gather(-1, idx - 1), bins.gather(-1, idx)
    frac = ((u - c0) / (c1 - c0).clamp(min=1e-8)).clamp(0, 1)
    return b0 + frac * (b1 - b0)
