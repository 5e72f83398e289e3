"""What the viewer panel takes from its GUI: the instances it offers, view lists, user images, and the resulting
conditioning (source views + their encoder maps), with one-line errors for bad inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn.functional as F

from featurenerf_ns.data.instances import FeatureNeRFDataError, load_rgba
from featurenerf_ns.fields.featurenerf_field import SourceViews


def viewer_instances(cat) -> List[str]:
    """The instances the viewer offers: val then test (each once)."""
    return list(dict.fromkeys(cat.ids("val") + cat.ids("test")))


class ViewerInputError(ValueError):
    """A bad GUI input (unreadable image, bad view list); the message is one line naming it and the fix."""


@dataclass
class Conditioning:
    """Source views of one object and their encoder maps (computed once per GUI change)."""

    key: tuple
    instance: str
    views: Tuple[int, ...]
    sources: SourceViews
    maps: torch.Tensor


def parse_views(text: str, num_views: int) -> Tuple[int, ...]:
    """'0, 12' -> (0, 12); indices must be in 0..num_views-1."""
    try:
        views = tuple(int(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise ViewerInputError(
            f"source views {text!r}: expected comma-separated view indices, e.g. '0' or '0, 25'"
        ) from None
    if not views:
        raise ViewerInputError("source views: give at least one view index, e.g. '0'")
    bad = [v for v in views if not 0 <= v < num_views]
    if bad:
        raise ViewerInputError(f"source views {bad}: this instance has views 0..{num_views - 1}")
    return views


def load_user_image(path: Path, size: Tuple[int, int]) -> torch.Tensor:
    """An RGB(A) image file -> (3, H, W) float in [0, 1] at ``size``, decoded like the training images (RGB on
    black where it has alpha)."""

    if not path.is_file():
        raise ViewerInputError(f"{path}: no such image file; give the path of a PNG/JPEG of one object")
    try:
        rgba = load_rgba(path)
    except FeatureNeRFDataError as e:
        cause = type(e.__cause__).__name__ if e.__cause__ is not None else "unreadable"
        raise ViewerInputError(f"{path}: not a readable image ({cause}); give a PNG or JPEG file") from None
    img = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)
    return F.interpolate(img[None], size=size, mode="area")[0].clamp(0, 1)
