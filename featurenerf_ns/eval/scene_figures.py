"""The N3F report figure: query region, teacher and N3F distance maps, 3D segment, removed and extracted renders."""

from __future__ import annotations

import io
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch

from featurenerf_ns.model_components.segment_edit import SegmentEdit, feature_distance, region_query


def scene_figure(scene, renders, example: Dict[str, Any], seg_points: np.ndarray, seg_mask: np.ndarray) -> bytes:
    """PNG bytes of one object's row of panels. ``example``: object, query_frame, tau, edit_frame (from
    :func:`~featurenerf_ns.eval.scene_tasks.scene_metrics`); ``seg_points`` (M, 3) world surface samples and
    ``seg_mask`` (M,) the predicted 3D segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, q, g = int(example["object"]), int(example["query_frame"]), example["edit_frame"]
    inst = scene.frames()["instance"]
    region = torch.from_numpy(inst[q] == k + 1)
    q_img = np.asarray(renders.render(q)["rgb"]).copy()
    panels: List[Tuple[str, Optional[np.ndarray]]] = [(f"query region (frame {q})", _outline(q_img, region.numpy()))]
    for name, feat in (("teacher-2D", renders.teacher_feature), ("N3F", renders.n3f_feature)):
        query = region_query(feat(q), region)
        dist = feature_distance(feat(g), query).numpy()
        panels.append((f"{name} distance, frame {g} (bright: near)", dist))
    panels.append(("3D segment (top view)", None))
    modes: Tuple[Literal["remove", "extract"], ...] = ("remove", "extract")
    for mode in modes:
        edit = SegmentEdit(region_query(renders.n3f_feature(q), region), float(example["tau"]), mode)
        label = {"remove": "removed", "extract": "extracted"}[mode]
        panels.append((f"{label}, frame {g}", np.asarray(renders.render(g, edit, key=(k, mode))["rgb"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    for ax, (title, img) in zip(axes, panels):
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if img is None:
            owner = scene.surface()["point_object"]
            ax.scatter(seg_points[:, 0], seg_points[:, 1], s=1, c="0.8")
            ax.scatter(seg_points[owner == k, 0], seg_points[owner == k, 1], s=2, c="tab:blue", label="object")
            ax.scatter(seg_points[seg_mask, 0], seg_points[seg_mask, 1], s=2, c="tab:red", label="segment")
            ax.set_aspect("equal")
            ax.legend(fontsize=7, loc="lower right")
        elif img.ndim == 2:
            ax.imshow(img, cmap="viridis_r", vmin=0, vmax=1.5)
            ax.contour(inst[g] == k + 1, levels=[0.5], colors="white", linewidths=0.6)  # the object's true outline
        else:
            ax.imshow(np.clip(img, 0, 1))
    fig.suptitle(f"object {k} ({scene.categories[k]}): tau = {example['tau']:.2f}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _outline(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    edge = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
    out = img.copy()
    out[edge] = (1.0, 0.1, 0.1)
    return out
