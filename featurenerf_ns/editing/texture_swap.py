"""3D part texture swap with a FeatureNeRF model (the paper's appendix B): the target object rendered with one part
coloured as the source object's same part.

Source s (an annotated instance): conditioned on its source views, the field is queried at its P annotated surface
points y_j with part labels l_j: features g_j = f_s(y_j) (P, D) and colours c_j = rgb_s(y_j) (P, 3) (viewed from
its first source camera, as everywhere in the evaluation). Target t (an instance or a photo), conditioned on its own
views, rendered from camera k: accumulation a, colour r and expected depth give the surface point x of every pixel
with a >= ``min_accumulation`` (as :mod:`featurenerf_ns.exporters.feature_cloud`), and its feature f_t(x). Then

    label(x)  = l_{j*},   j* = argmax_j cos(f_t(x), g_j)                    (zero-shot 3D part transfer)
    r'(x)     = a * c_{j'}, j' = argmax_{j : l_j = part} cos(f_t(x), g_j)    if label(x) = part, else r(x)

i.e. every target surface point of the chosen part takes the colour the source field predicts at the source point
of that part whose feature is nearest. The edit is applied at the expected surface point of each pixel, not at
every ray sample as a volumetric edit would be: one nearest-neighbour search per pixel instead of per sample (64 x
fewer), which is the same on opaque surfaces (the renders' accumulation is ~0 or ~1 almost everywhere).

Own code: nerfstudio has no conditioned-field editing. The surface points are the exporter's
(:func:`~featurenerf_ns.exporters.feature_cloud.render_surface`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch

from featurenerf_ns.eval.metrics import nn_match
from featurenerf_ns.eval.providers import field_point_features
from featurenerf_ns.exporters.feature_cloud import render_surface


class TextureSwapError(ValueError):
    """A texture swap that cannot be made (unknown part, part absent from the source); one line."""


@dataclass
class SourcePart:
    """What the source gives the swap: its labelled points' features, labels and colours."""

    features: torch.Tensor
    """(P, D) field feature at the annotated points."""
    labels: torch.Tensor
    """(P,) part label 1..L (int64)."""
    rgb: torch.Tensor
    """(P, 3) the source field's colour at the points, in [0, 1]."""


@dataclass
class SwapViews:
    """Renders of the target from V cameras at R x R, before and after the edit."""

    rgb: np.ndarray
    """(V, R, R, 3) the target as the model renders it (on black)."""
    edited: np.ndarray
    """(V, R, R, 3) the same with the part re-coloured."""
    labels: np.ndarray
    """(V, R, R) transferred part label per pixel (0 where a < min_accumulation)."""
    accumulation: np.ndarray
    """(V, R, R)."""


@torch.no_grad()
def source_part(model, sources, maps, points: np.ndarray, labels: np.ndarray, feature: str) -> SourcePart:
    """:class:`SourcePart` of a source conditioned on ``sources`` / ``maps`` with annotated ``points`` (P, 3) and
    ``labels`` (P,)."""
    with model.conditioned(sources, maps):
        out = field_point_features(model, torch.from_numpy(np.asarray(points)).float(), [feature, "rgb"])
    return SourcePart(out[feature].cpu(), torch.from_numpy(np.asarray(labels).astype(np.int64)), out["rgb"].cpu())


@torch.no_grad()
def texture_swap(
    model,
    sources,
    maps,
    cameras: Sequence[Tuple[torch.Tensor, float]],
    resolution: int,
    source: SourcePart,
    part: int,
    feature: str,
    min_accumulation: float = 0.5,
) -> SwapViews:
    """Render the target (conditioned on ``sources`` / ``maps``) from ``cameras`` ((c2w (4, 4), focal in px at
    ``resolution``) each) with part label ``part`` re-coloured from ``source`` (module docstring)."""
    in_part = source.labels == part
    if not bool(in_part.any()):
        raise TextureSwapError(f"texture swap: the source has no annotated point of part {part}; pick another part")
    hw = (resolution, resolution)
    R = resolution
    rgbs, edits, labs, accs = [], [], [], []
    with model.conditioned(sources, maps):
        for c2w, focal in cameras:
            out, v, u, x = render_surface(model, c2w, focal, resolution, min_accumulation)
            acc = out["accumulation"][..., 0].float().cpu()
            rgb = out["rgb"].float().cpu().clamp(0, 1)
            edited = rgb.clone()
            lab = torch.zeros(hw, dtype=torch.long)
            if len(u):
                f = field_point_features(model, x, [feature])[feature].cpu()
                idx, _ = nn_match(f, source.features)
                lab[v, u] = source.labels[idx]
                sel = lab[v, u] == part
                if sel.any():
                    j, _ = nn_match(f[sel], source.features[in_part])
                    colour = source.rgb[in_part][j]
                    edited[v[sel], u[sel]] = (acc[v[sel], u[sel]][:, None] * colour).clamp(0, 1)
            rgbs.append(rgb.numpy())
            edits.append(edited.numpy())
            labs.append(lab.numpy())
            accs.append(acc.numpy())
    assert len(rgbs) == len(cameras) and rgbs[0].shape[:2] == (R, R)
    return SwapViews(np.stack(rgbs), np.stack(edits), np.stack(labs), np.stack(accs))


def orbit_cameras(n: int, elevation_deg: float, focal: float) -> list:
    """n cameras on a ring around the object (azimuths evenly spaced from 0), at the dataset's camera distance:
    [(c2w (4, 4), focal)]."""
    from featurenerf_ns.data.procedural.render import look_at, spherical_position

    return [
        (
            torch.from_numpy(look_at(spherical_position(2 * np.pi * i / n, np.deg2rad(elevation_deg)))).float(),
            focal,
        )
        for i in range(n)
    ]


def psnr_in(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) of images a, b (..., 3) over the pixels of ``mask`` (...); NaN for an empty mask."""
    if not mask.any():
        return float("nan")
    mse = float(((a[mask] - b[mask]) ** 2).mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred & gt| / |pred | gt| of bool masks; NaN when both are empty."""
    union = int((pred | gt).sum())
    return float((pred & gt).sum() / union) if union else float("nan")
