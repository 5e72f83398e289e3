"""Image metrics that need weights: LPIPS only where its backbone is already on disk (never downloads)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def local_lpips(normalize: bool = False):
    """LPIPS only when its AlexNet weights are already on disk (it would otherwise download them); ``normalize``:
    inputs in [0, 1] instead of [-1, 1]."""
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not ckpt.is_file():
        return None
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(normalize=normalize)
    except Exception:
        return None


@contextmanager
def offline_lpips() -> Iterator[None]:
    """Inside the scope, constructing torchmetrics' LPIPS gives :func:`local_lpips` (None without local weights)
    instead of downloading AlexNet: for nerfstudio models (nerfacto) that build LPIPS in ``populate_modules``."""
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = lambda normalize=False, **_: local_lpips(normalize)  # type: ignore
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original  # type: ignore[misc]
