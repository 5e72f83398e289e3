"""Image metrics that need weights: LPIPS only where its backbone is already on disk (never downloads)."""

from __future__ import annotations

from pathlib import Path

import torch


def local_lpips():
    """LPIPS only when its AlexNet weights are already on disk (it would otherwise download them)."""
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not ckpt.is_file():
        return None
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(normalize=False)
    except Exception:
        return None
