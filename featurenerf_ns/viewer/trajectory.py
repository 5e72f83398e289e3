"""A trained FeatureNeRF model rendered along a camera trajectory: an orbit around the conditioned object, or a camera
path saved by nerfstudio's viewer. Every frame gives RGB, depth, accumulation and the PCA colours of each feature;
the PCA is fitted once, on the render of the first source view (what the encoder saw), so colours are stable across
frames and mean the same thing as in the viewer's "instance" PCA mode (:func:`~featurenerf_ns.viewer.compose.
fit_pca_colors`, :func:`~featurenerf_ns.viewer.compose.compose_outputs`): the viewer's outputs, offline, for
``featurenerf-render``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model
from nerfstudio.utils import colormaps

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.viewer.compose import compose_outputs, fit_pca_colors
from featurenerf_ns.viewer.inputs import Conditioning

OUTPUTS = ("rgb", "depth", "accumulation", "feature_pca", "nerf_feature_pca")
"""What a trajectory render can write per frame (``feature_pca`` only for models that distil)."""


def orbit_poses(poses: np.ndarray, frames: int, elevation_deg: float) -> List[torch.Tensor]:
    """``frames`` camera-to-world matrices (4, 4) on a ring around the origin at ``elevation_deg`` above the
    z = 0 plane (the data's up axis), azimuths evenly spaced from 0, at the median distance of the instance's own
    cameras ``poses`` (V, 4, 4) from the origin (so any dataset's camera distance is kept)."""
    from featurenerf_ns.data.procedural.render import look_at, spherical_position

    if frames < 1:
        raise FeatureNeRFDataError(f"--frames {frames}: give at least 1 frame")
    radius = float(np.median(np.linalg.norm(np.asarray(poses)[:, :3, 3], axis=1)))
    el = np.deg2rad(elevation_deg)
    return [
        torch.from_numpy(look_at(spherical_position(2 * np.pi * i / frames, el, radius))).float() for i in range(frames)
    ]


def path_cameras(path: Path) -> Tuple[Cameras, float]:
    """(cameras, seconds) of a camera path JSON written by nerfstudio's viewer (its Render tab), read with
    nerfstudio's own reader; one-line errors."""
    from nerfstudio.cameras.camera_paths import get_path_from_json

    if not path.is_file():
        raise FeatureNeRFDataError(f"{path}: camera path not found; save one from the viewer's Render tab")
    try:
        data = json.loads(path.read_text())
        cameras = get_path_from_json(data)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise FeatureNeRFDataError(
            f"{path}: not a nerfstudio camera path ({type(e).__name__}: {e}); save one from the viewer's Render tab"
        ) from None
    if len(cameras) == 0:
        raise FeatureNeRFDataError(f"{path}: the camera path has no cameras; add keyframes in the viewer")
    return cameras, float(data.get("seconds", len(cameras)))


def _frame_outputs(
    out: Dict[str, torch.Tensor], pca, outputs: Sequence[str], depth_range: Tuple[float, float]
) -> Dict[str, np.ndarray]:
    """(H, W, *) model outputs -> {name: (H, W, 3) float in [0, 1]} for ``outputs``; depth coloured over the fixed
    ``depth_range`` (the model's near and far planes), so its colours do not change from frame to frame either."""
    composed = compose_outputs(out, pca, "nerf_feature", None, 0.0, None)
    res: Dict[str, np.ndarray] = {}
    for name in outputs:
        if name == "depth":
            near, far = depth_range
            img = colormaps.apply_depth_colormap(
                out["depth"], accumulation=out["accumulation"], near_plane=near, far_plane=far
            )
        elif name == "accumulation":
            img = composed["accumulation"].expand(*composed["accumulation"].shape[:-1], 3)
        else:
            img = composed[name]
        res[name] = img.float().clamp(0, 1).cpu().numpy()
    return res


def check_outputs(model, outputs: Sequence[str]) -> List[str]:
    """``outputs`` validated for this model (``feature_pca`` needs a distilled head), or when empty every output it
    has but accumulation; one-line error otherwise."""
    have = [o for o in OUTPUTS if o != "feature_pca" or "feature" in model.feature_names()]
    if not outputs:
        return [o for o in have if o != "accumulation"]
    bad = [o for o in outputs if o not in have]
    if bad:
        raise FeatureNeRFDataError(f"--outputs {' '.join(bad)}: choose from {', '.join(have)}")
    return list(outputs)


@torch.no_grad()
def render_trajectory(
    model,
    cond: Conditioning,
    cameras: Sequence[Cameras],
    fit_camera: Cameras,
    outputs: Sequence[str],
    advance: Optional[Callable[[], None]] = None,
) -> Dict[str, np.ndarray]:
    """{output: (N, H, W, 3) float in [0, 1]} of the N single-camera renders ``cameras`` (all the same size) of the
    model conditioned on ``cond``; the PCA colours fitted on ``fit_camera``'s render (the first source view)."""

    def render(camera: Cameras) -> Dict[str, torch.Tensor]:
        o = Model.get_outputs_for_camera(model, camera.to(model.device))
        return {k: v.float() for k, v in o.items()}

    frames: Dict[str, List[np.ndarray]] = {name: [] for name in outputs}
    with model.conditioned(cond.sources, cond.maps), warnings.catch_warnings():
        # nerfstudio's ray generation indexes with lists, which torch >= 2.8 warns about once per line: noise here
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        pca = fit_pca_colors([render(fit_camera)], model.feature_names())
        for camera in cameras:
            for name, img in _frame_outputs(
                render(camera), pca, outputs, (model.config.near, model.config.far)
            ).items():
                frames[name].append(img)
            if advance is not None:
                advance()
    return {name: np.stack(v) for name, v in frames.items()}


def side_by_side(panels: Sequence[Tuple[str, np.ndarray]], scale: int = 2) -> np.ndarray:
    """One labelled frame (uint8 (H', W', 3)) from named (H, W, 3) images in [0, 1], left to right, each upscaled by
    ``scale`` (nearest), with its name above it."""
    from PIL import Image, ImageDraw

    from featurenerf_ns.utils.images import to_uint8

    H, W = panels[0][1].shape[:2]
    cell_w, cell_h, pad, top = W * scale, H * scale, 4, 14
    canvas = Image.new("RGB", (len(panels) * (cell_w + pad) - pad, cell_h + top), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (name, img) in enumerate(panels):
        x = k * (cell_w + pad)
        draw.text((x + 2, 1), name, fill=(0, 0, 0))
        im = Image.fromarray(to_uint8(img)).resize((cell_w, cell_h), Image.Resampling.NEAREST)
        canvas.paste(im, (x, top))
    return np.asarray(canvas)
