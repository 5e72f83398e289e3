"""ImageNet normalisation, the one place its constants live (teachers, encoders and weight checks all use it)."""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (rgb - mean) / std per channel, same shape, dtype and device."""
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def imagenet_normalize_np(rgb01: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (1, 3, H, W) float32, ImageNet-normalised (the numpy inputs of weight checks)."""
    x = (np.asarray(rgb01, np.float32) - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)
