"""Zero-shot transfer of an annotated reference's keypoints and parts onto a user's photo (featurenerf-infer).

The photo, prepared like a training render (:mod:`featurenerf_ns.data.photo`), is assumed to be taken from view
``v`` of the reference's fixed camera set (default 0, the canonical one): the model is conditioned on it with that
camera and renders its features F_p (P, D) at the P foreground pixels. The reference is conditioned on its own view
``v_r`` and renders F_r (Q, D) at its Q annotated foreground pixels and F_k (K, D) at its K visible keypoints. Then,
with cosine nearest neighbours (as the 2D protocol tasks):

    part(p)     = label of argmax_q cos(F_p[p], F_r[q])         for every photo foreground pixel p,
    keypoint(k) = pixel of argmax_p cos(F_k[k], F_p[p])          for every visible reference keypoint k,

and the results are mapped back to the photo's own pixels (:meth:`PreparedPhoto.to_photo`; pixels of the photo's
mask that fall between model pixels take the label of the nearest labelled one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from featurenerf_ns.data.photo import PreparedPhoto
from featurenerf_ns.eval.correspondence import ViewGT
from featurenerf_ns.eval.metrics import nn_match
from featurenerf_ns.eval.providers import render_pixel_features


@dataclass
class PhotoTransfer:
    labels: np.ndarray
    """(R, R) int: transferred part label per model pixel (0 off the photo's mask)."""
    photo_labels: np.ndarray
    """(h, w) int: the same at the photo's pixels (0 off its mask)."""
    keypoints: List[Dict[str, Any]]
    """One per visible reference keypoint: id, name, x, y (photo pixels), u, v (model pixels), similarity."""


def pixel_grid(mask: np.ndarray) -> torch.Tensor:
    """(P, 2) pixel centres (x + 0.5, y + 0.5) of a (H, W) bool mask's pixels, row-major."""
    ys, xs = np.nonzero(mask)
    return torch.from_numpy(np.stack([xs, ys], 1).astype(np.float32) + 0.5)


def fill_from_nearest(labels: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``labels`` (h, w) with every pixel of ``where`` that is 0 given the label of its nearest labelled pixel."""
    from scipy.ndimage import distance_transform_edt

    if not (labels > 0).any():
        return labels
    _, (iy, ix) = distance_transform_edt(labels == 0, return_indices=True)
    return np.where(where, labels[iy, ix], 0)


def to_photo_labels(photo: PreparedPhoto, labels: np.ndarray) -> np.ndarray:
    """Model-resolution labels (R, R) -> labels at the photo's pixels (h, w), nearest model pixel, filled inside the
    photo's mask."""
    h, w = photo.photo_mask.shape
    xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    uv = photo.to_model(np.stack([xs.ravel(), ys.ravel()], 1))
    R = labels.shape[0]
    ij = np.floor(uv).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < R) & (ij[:, 1] >= 0) & (ij[:, 1] < R)
    out = np.zeros(h * w, labels.dtype)
    out[inside] = labels[ij[inside, 1], ij[inside, 0]]
    return fill_from_nearest(out.reshape(h, w) * photo.photo_mask, photo.photo_mask)


@torch.no_grad()
def transfer_to_photo(
    model,
    photo: PreparedPhoto,
    photo_sources,
    photo_maps: torch.Tensor,
    photo_camera: Tuple[torch.Tensor, float],
    reference_sources,
    reference_maps: torch.Tensor,
    reference_camera: Tuple[torch.Tensor, float],
    reference_gt: ViewGT,
    feature: str,
    keypoint_names: List[str],
) -> PhotoTransfer:
    """The transfer of the module docstring. ``*_camera``: (c2w (4, 4), focal in pixels at the model resolution R);
    ``reference_gt``: the reference view's annotations at R."""
    R = photo.mask.shape[0]
    xy_p = pixel_grid(photo.mask)
    with model.conditioned(photo_sources, photo_maps):
        f_p = render_pixel_features(model, photo_camera[0], photo_camera[1], xy_p, R, [feature])[feature]
    vis = np.flatnonzero(reference_gt.kp_visible)
    kp_xy = torch.from_numpy(reference_gt.kp_xy[vis].astype(np.float32))
    rc2w, rfocal = reference_camera
    with model.conditioned(reference_sources, reference_maps):
        f_r = render_pixel_features(model, rc2w, rfocal, reference_gt.fg_xy, R, [feature])[feature]
        f_k = render_pixel_features(model, rc2w, rfocal, kp_xy, R, [feature])[feature]
    idx, _ = nn_match(f_p, f_r)
    labels = np.zeros((R, R), np.int64)
    ij = (xy_p - 0.5).long().numpy()
    labels[ij[:, 1], ij[:, 0]] = reference_gt.fg_labels[idx.cpu().numpy()]
    keypoints: List[Dict[str, Any]] = []
    if len(vis):
        kidx, _ = nn_match(f_k, f_p)
        fk = torch.nn.functional.normalize(f_k.float(), dim=-1)
        fp = torch.nn.functional.normalize(f_p[kidx].float(), dim=-1)
        sim = (fk * fp).sum(-1).cpu().numpy()
        uv = xy_p[kidx.cpu()].numpy().astype(np.float64)
        xy = photo.to_photo(uv)
        for j, k in enumerate(vis):
            keypoints.append(
                dict(
                    id=int(k),
                    name=keypoint_names[k] if k < len(keypoint_names) else str(k),
                    x=float(xy[j, 0]),
                    y=float(xy[j, 1]),
                    u=float(uv[j, 0]),
                    v=float(uv[j, 1]),
                    similarity=float(sim[j]),
                )
            )
    return PhotoTransfer(labels=labels, photo_labels=to_photo_labels(photo, labels), keypoints=keypoints)


def transfer_figure(
    path,
    photo: PreparedPhoto,
    result: PhotoTransfer,
    reference_rgb: np.ndarray,
    reference_gt: ViewGT,
    part_names: List[str],
    title: str = "",
) -> None:
    """``overlay.png``: the annotated reference view (its parts and keypoints), what the model saw (the prepared
    photo), and the photo with the transferred parts blended in and the transferred keypoints (same colours and
    numbers as the reference's); matplotlib, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from featurenerf_ns.eval.figures import save_fig
    from featurenerf_ns.utils.palette import part_colors

    R = reference_gt.resolution
    ref_lab = np.zeros((R, R), np.int64)
    ij = np.floor(reference_gt.fg_xy.numpy()).astype(np.int64)
    ref_lab[ij[:, 1], ij[:, 0]] = reference_gt.fg_labels

    def blend(rgb: np.ndarray, lab: np.ndarray) -> np.ndarray:
        return np.where((lab > 0)[..., None], 0.45 * rgb + 0.55 * part_colors(lab), rgb)

    cmap = plt.get_cmap("tab20")
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.2))
    axes[0].imshow(blend(reference_rgb, ref_lab))
    axes[0].set_title("reference (annotated)", fontsize=9)
    vis = np.flatnonzero(reference_gt.kp_visible)
    for k in vis:
        x, y = reference_gt.kp_xy[k]
        axes[0].scatter([x - 0.5], [y - 0.5], s=30, color=cmap(k % 20), edgecolors="white", linewidths=0.8)
        axes[0].annotate(
            str(k), (x - 0.5, y - 0.5), color="white", fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    axes[1].imshow(photo.image)
    axes[1].set_title(f"model input (foreground: {photo.foreground})", fontsize=9)
    axes[2].imshow(blend(photo.photo_rgb, result.photo_labels))
    axes[2].set_title("photo: transferred parts and keypoints", fontsize=9)
    for kp in result.keypoints:
        k = kp["id"]
        axes[2].scatter([kp["x"] - 0.5], [kp["y"] - 0.5], s=30, color=cmap(k % 20), edgecolors="white", linewidths=0.8)
        axes[2].annotate(str(k), (kp["x"] - 0.5, kp["y"] - 0.5), color="white", fontsize=6, xytext=(3, 3),
                         textcoords="offset points")  # fmt: skip
    for ax in axes:
        ax.set_axis_off()
    present = sorted(set(np.unique(ref_lab)) - {0})
    handles = [
        Patch(
            color=tuple(part_colors(np.array(lab)).tolist()),
            label=part_names[lab - 1] if lab <= len(part_names) else str(lab),
        )
        for lab in present
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    save_fig(fig, path)
    plt.close(fig)
