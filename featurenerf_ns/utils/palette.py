"""The part palette shared by the contact sheet, the report figures and the viewer (one colour per part label)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

PART_COLORS = np.array(
    [[0.90, 0.10, 0.10], [0.10, 0.55, 0.95], [0.15, 0.80, 0.20], [0.98, 0.70, 0.05], [0.70, 0.20, 0.90],
     [0.05, 0.85, 0.85], [0.95, 0.45, 0.75], [0.55, 0.35, 0.15]]
)  # fmt: skip
"""(8, 3) RGB in [0, 1]; part label l >= 1 is drawn with row (l - 1) mod 8."""


def part_colors(labels: ArrayLike) -> np.ndarray:
    """labels (...) with 0 = background, 1.. = parts -> (..., 3) RGB in [0, 1]; background is black."""
    lab = np.asarray(labels).astype(np.int64)
    out = PART_COLORS[(lab - 1) % len(PART_COLORS)]
    return np.where((lab > 0)[..., None], out, 0.0)


def part_colors_uint8(labels: ArrayLike) -> np.ndarray:
    """:func:`part_colors` as uint8 0..255."""
    return np.round(part_colors(labels) * 255).astype(np.uint8)
