"""Export what a FeatureNeRF model sees of one object: its surface as a point cloud with the 3D features there.

Surface points (the dataset's object frame): the model, conditioned on one or more source images, renders each of
``cameras`` (target views of the object); every pixel with accumulation a >= ``min_accumulation`` gives

    x = o + t d      o, d (unit) the pixel's ray, t = sum_i w_i t_i / sum_i w_i (nerfstudio's expected depth,
                     already normalised by the accumulation a = sum_i w_i)                                  (N, 3)

with its rendered colour (N, 3). The field is then queried *at* x (``eval.providers.field_point_features``, viewed
from the first source camera as in the evaluation): ``nerf_feature`` (N, 512 | 128) and, for distilled models,
``feature`` (N, D), so the exported features are the 3D features themselves, not blends along rays.

Optional labels: each point takes the part label of its nearest (cosine) labelled source point (``transfer``:
features (P, D) and labels (P,) of an annotated instance, e.g. its ShapeNet-part points under its own
conditioning), the paper's zero-shot 3D part transfer. PCA colours: a PCA-3 of the exported feature fitted on the
cloud itself (``teachers.pca.PcaColors``).

Files: ``cloud.ply`` (binary PLY: x, y, z, red, green, blue = rendered colour, then pca_r/g/b (uint8) and ``part``
(int32, -1 without labels)), ``features.npz`` (points, rgb, view, pca, part and every feature, float32),
``export.json`` (what was exported and from what). All written atomically. Own code: nerfstudio's point-cloud
exporter keeps colour and depth only, and needs nerfstudio's datamanager cameras, not a conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from nerfstudio.models.base_model import Model

from featurenerf_ns.cameras import camera_rays, pinhole_camera
from featurenerf_ns.data.layout import atomic_write_bytes, atomic_write_json, npz_bytes
from featurenerf_ns.eval.metrics import nn_match
from featurenerf_ns.eval.providers import field_point_features
from featurenerf_ns.exporters.segment import ExportError, write_point_ply
from featurenerf_ns.teachers.pca import PcaColors

CLOUD_PLY, FEATURES_NPZ, EXPORT_JSON = "cloud.ply", "features.npz", "export.json"


@dataclass
class FeatureCloud:
    points: torch.Tensor
    """(N, 3) surface points, world (= the dataset's object) frame."""
    rgb: torch.Tensor
    """(N, 3) rendered colour in [0, 1]."""
    view: torch.Tensor
    """(N,) index into the exported cameras of the render each point came from."""
    features: Dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> (N, D) the field's feature at the point."""
    part: Optional[torch.Tensor] = None
    """(N,) transferred part label (int64), or None."""


@torch.no_grad()
def render_surface(model, c2w: torch.Tensor, focal: float, resolution: int, min_accumulation: float):
    """One render of the model's current conditioning from camera (c2w (4, 4), focal in px) at ``resolution``:
    (outputs, rows v (N,), columns u (N,), surface points x (N, 3)) of the N pixels with accumulation >=
    ``min_accumulation``, x = o + t d with nerfstudio's expected depth t (module docstring)."""
    hw = (resolution, resolution)
    out = Model.get_outputs_for_camera(model, pinhole_camera(c2w, focal, hw).to(model.device))
    acc = out["accumulation"][..., 0].float().cpu()
    v, u = torch.nonzero(acc >= min_accumulation, as_tuple=True)
    o, d = camera_rays(c2w[None].expand(len(u), 4, 4).float(), focal, hw, u.float(), v.float())
    t = out["depth"][..., 0].float().cpu()[v, u]  # normalised by the accumulation already
    return out, v, u, o + t[:, None] * d


@torch.no_grad()
def feature_cloud(
    model,
    sources,
    maps,
    cameras: Sequence[Tuple[torch.Tensor, float]],
    resolution: int,
    names: Sequence[str] = ("nerf_feature", "feature"),
    min_accumulation: float = 0.5,
) -> FeatureCloud:
    """The surface seen in ``cameras`` ((c2w (4, 4), focal in px at ``resolution``) each) by ``model`` conditioned
    on ``sources`` (one object's ``SourceViews``) and their encoder ``maps``; features ``names`` at the points."""
    have = model.feature_names()
    names = [n for n in names if n in have]
    if not names:
        raise ExportError(f"export: the model has none of the features asked for (it has {', '.join(have)})")
    pts, rgbs, views = [], [], []
    with model.conditioned(sources, maps):
        for k, (c2w, focal) in enumerate(cameras):
            out, v, u, x = render_surface(model, c2w, focal, resolution, min_accumulation)
            if not len(u):
                continue
            pts.append(x)
            rgbs.append(out["rgb"].float().cpu()[v, u])
            views.append(torch.full((len(u),), k, dtype=torch.long))
        if not pts:
            raise ExportError(
                f"export: no pixel of the {len(cameras)} renders reaches accumulation {min_accumulation}; the model "
                "renders no object here (an untrained run?) — lower --min-accumulation or train longer"
            )
        points = torch.cat(pts)
        feats = {k: v.cpu() for k, v in field_point_features(model, points, names).items()}
    return FeatureCloud(points, torch.cat(rgbs).clamp(0, 1), torch.cat(views), feats)


def transfer_parts(feature: torch.Tensor, source_feature: torch.Tensor, source_labels: torch.Tensor) -> torch.Tensor:
    """(N,) label of each row of ``feature`` (N, D): the label of its nearest (cosine) row of ``source_feature``
    (P, D) with labels ``source_labels`` (P,)."""
    idx, _ = nn_match(feature, source_feature)
    return source_labels.to(idx.device)[idx].cpu()


def write_cloud(out: Path, cloud: FeatureCloud, pca_of: str, info: Dict[str, Any]) -> Dict[str, Any]:
    """``cloud.ply``, ``features.npz`` and ``export.json`` under ``out`` (see the module docstring); returns the
    summary written to export.json."""
    if pca_of not in cloud.features:
        raise ExportError(f"export: no feature {pca_of!r} to colour by (have {', '.join(cloud.features)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pca = PcaColors.fit(cloud.features[pca_of].float())(cloud.features[pca_of].float()).clamp(0, 1).numpy()
    n = len(cloud.points)
    part = (cloud.part if cloud.part is not None else torch.full((n,), -1)).numpy().astype(np.int32)
    pca_u8 = (pca * 255).round().astype(np.uint8)
    extra: Dict[str, np.ndarray] = {"pca_r": pca_u8[:, 0], "pca_g": pca_u8[:, 1], "pca_b": pca_u8[:, 2], "part": part}
    pts, rgb = cloud.points.numpy().astype(np.float32), cloud.rgb.numpy().astype(np.float32)
    write_point_ply(out / CLOUD_PLY, pts, rgb, extra)
    arrays = {"points": pts, "rgb": rgb, "view": cloud.view.numpy(), "pca": pca.astype(np.float32), "part": part}
    arrays.update({k: v.float().numpy() for k, v in cloud.features.items()})
    atomic_write_bytes(out / FEATURES_NPZ, npz_bytes(arrays))
    labels, counts = np.unique(part[part >= 0], return_counts=True)
    summary = dict(
        info,
        points=n,
        features={k: list(v.shape[1:]) for k, v in cloud.features.items()},
        pca_of=pca_of,
        part_counts={int(k): int(c) for k, c in zip(labels, counts)},
        files=[CLOUD_PLY, FEATURES_NPZ, EXPORT_JSON],
    )
    atomic_write_json(out / EXPORT_JSON, summary)
    return summary


def cloud_figure(cloud_npz: Path, path: Path, title: str = "") -> None:
    """``cloud.png``: the exported points seen from the front-left and from above, coloured by rendered colour,
    feature PCA and transferred part (when there are labels); matplotlib scatter, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from featurenerf_ns.eval.figures import save_fig
    from featurenerf_ns.utils.palette import part_colors

    d = np.load(cloud_npz)
    pts = d["points"]
    panels = [("rendered colour", d["rgb"]), ("feature PCA", d["pca"])]
    if (d["part"] >= 0).any():
        panels.append(("transferred part", part_colors(np.maximum(d["part"], 0))))
    fig = plt.figure(figsize=(3.2 * len(panels), 6.0))
    for row, (elev, azim) in enumerate(((15, -60), (80, -90))):
        for col, (name, colours) in enumerate(panels):
            ax = fig.add_subplot(2, len(panels), row * len(panels) + col + 1, projection="3d")
            ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=np.clip(colours, 0, 1), s=4, depthshade=False)
            ax.view_init(elev=elev, azim=azim)
            ax.set_box_aspect(np.ptp(pts, axis=0) + 1e-6)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    save_fig(fig, path)
