"""What the converters check converted weights against: a real photo shipped with matplotlib, and its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

from featurenerf_ns.utils.images import imagenet_normalize_np
from featurenerf_ns.weights.cache import WeightsError


def reference_image() -> Tuple[np.ndarray, str]:
    """A real photo shipped with matplotlib (Grace Hopper, 512x600), HxWx3 uint8, and its description."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise WeightsError(f"reference photo not found: {path} (reinstall matplotlib)")
    return np.asarray(Image.open(path).convert("RGB")), "matplotlib mpl-data/sample_data/grace_hopper.jpg"


def resize_normalize(rgb: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Plain resize to (H, W) + ImageNet normalisation -> (1, 3, H, W) float32."""
    from PIL import Image

    return imagenet_normalize_np(
        np.asarray(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.Resampling.BICUBIC), np.float32) / 255.0
    )
