"""PCA of feature vectors: the PCA-k reduction of a teacher cache (fitted on the train split) and the PCA-3
colouring of the viewer and figures (fitted once, so colours are stable across frames and instances)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from featurenerf_ns.data.layout import FeatureNeRFDataError, npz_bytes


class PCAError(FeatureNeRFDataError):
    """A PCA that cannot be fitted or read; one line naming the file (or the input) and the fix."""


@dataclass
class FeaturePCA:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), rows orthonormal
    explained: np.ndarray  # (k,) fraction of variance

    def project(self, feats: torch.Tensor, cell_alpha: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, D, h, w) -> (B, k, h, w); background cells (alpha 0) stay 0 when ``cell_alpha`` is given."""
        mean = feats.new_tensor(self.mean).view(1, -1, 1, 1)
        comp = feats.new_tensor(self.components)
        out = torch.einsum("bdhw,kd->bkhw", feats - mean, comp)
        return out * cell_alpha if cell_alpha is not None else out

    def project_vectors(self, feats: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., k)."""
        return (feats - feats.new_tensor(self.mean)) @ feats.new_tensor(self.components).T

    def to_bytes(self) -> bytes:
        return npz_bytes(
            {
                "mean": self.mean.astype(np.float32),
                "components": self.components.astype(np.float32),
                "explained": self.explained.astype(np.float32),
            }
        )

    @classmethod
    def load(cls, path: Path) -> "FeaturePCA":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["mean"], z["components"], z["explained"])
        except Exception as e:
            raise PCAError(
                f"{path}: unreadable PCA file ({type(e).__name__}); delete the cache directory and rebuild it"
            ) from None


def fit_pca(feats: torch.Tensor, k: int) -> FeaturePCA:
    """PCA of (N, D) foreground feature vectors (float64 covariance, deterministic eigendecomposition)."""
    if feats.shape[0] < 2:
        raise PCAError(
            "PCA: fewer than 2 foreground feature vectors to fit on; check the alpha masks of the train split"
        )
    if not 0 < k <= feats.shape[1]:
        raise PCAError(f"PCA: pca_dim {k} must be in 1..{feats.shape[1]} (the teacher's feature dimension)")
    x = feats.double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / (x.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:k]
    comps = evecs[:, order].T
    # fix the sign so components are reproducible: largest-magnitude entry positive
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * sign
    explained = evals[order] / evals.clamp(min=0).sum()
    return FeaturePCA(mean.float().numpy(), comps.float().numpy(), explained.float().numpy())


@dataclass
class PcaColors:
    """A PCA-3 colouring fitted once and applied to any number of feature maps (stable colours across frames):
    components from :func:`fit_pca`, each channel scaled by the 1st/99th percentiles of the fitted vectors."""

    pca: FeaturePCA
    lo: torch.Tensor  # (3,)
    hi: torch.Tensor  # (3,)

    @classmethod
    def fit(cls, feats: torch.Tensor) -> "PcaColors":
        """feats (N, D) foreground feature vectors."""
        feats = feats.float().cpu()
        pca = fit_pca(feats, 3)
        proj = pca.project_vectors(feats)
        return cls(pca, proj.quantile(0.01, dim=0), proj.quantile(0.99, dim=0))

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., 3) in [0, 1]."""
        proj = self.pca.project_vectors(feats)
        lo, hi = self.lo.to(feats), self.hi.to(feats)
        return ((proj - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)
