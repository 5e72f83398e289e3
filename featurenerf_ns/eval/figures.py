"""The figures of a correspondence report: PCK vs threshold per task and qualitative source -> target transfers."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import numpy as np

from featurenerf_ns.eval.providers import PRIOR_LABELS
from featurenerf_ns.utils.palette import part_colors, part_colors_uint8

if TYPE_CHECKING:
    pass

from featurenerf_ns.data.instances import load_rgba
from featurenerf_ns.data.layout import atomic_write_bytes
from featurenerf_ns.eval.tables import PCK_TASKS, Row


def pck_plot(rows: List[Row], category: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crow = [r for r in rows if r.category == category]
    fig, axes = plt.subplots(1, len(PCK_TASKS), figsize=(4.2 * len(PCK_TASKS), 3.6))
    for ax, (task, title, thr, unit) in zip(axes, PCK_TASKS):
        for r in crow:
            ys = [r.get(task, f"pck@{t:g}") for t in thr]
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot(
                thr,
                ys,
                marker="o",
                label=r.label,
                linestyle="--" if r.source == "teacher2d" else ":" if r.source in PRIOR_LABELS else "-",
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"threshold ({unit})")
        ax.set_ylabel("PCK (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{category}: keypoint transfer PCK vs threshold", fontsize=11)
    fig.tight_layout()
    save_fig(fig, path)
    plt.close(fig)


def save_fig(fig, path: Path) -> None:

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def _overlay(rgb: np.ndarray, xy: np.ndarray, labels: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    img = rgb.copy()
    ij = np.floor(xy).astype(int)
    img[ij[:, 1], ij[:, 0]] = (alpha * part_colors_uint8(labels) + (1 - alpha) * img[ij[:, 1], ij[:, 0]]).astype(
        np.uint8
    )
    return img


def qualitative_figure(cat, per_run: List[Tuple[str, list]], k: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    base = per_run[0][1][k]
    s, t, res = base["source"], base["target"], base["resolution"]
    vs, vt = base["source_view"], base["target_view"]

    def rgb(inst, v):
        a = load_rgba(cat.instance(inst).image_paths[v])[..., :3]
        return np.asarray(Image.fromarray((a * 255).round().astype(np.uint8)).resize((res, res), Image.BILINEAR))

    src_img, tgt_img = rgb(s, vs), rgb(t, vt)
    rows: List[Tuple[str, Dict[str, Any]]] = []  # (label, example dict of one feature)
    for label, examples in per_run:
        ex = examples[k]
        for key, name in (
            ("teacher2d", "Teacher 2D"),
            ("nerf_feature", label),
            ("feature", f"{label}, distilled head"),
        ):
            if key in ex and (key != "teacher2d" or not any(r[0] == "Teacher 2D" for r in rows)):
                rows.append((name, ex[key]))
    cmap = plt.get_cmap("tab20")
    truth_3d = next((e for _, e in rows if "points_target" in e), None)
    fig, axes = plt.subplots(len(rows), 6, figsize=(15.5, 2.7 * len(rows)), squeeze=False)
    for i, (name, e) in enumerate(rows):
        ax = axes[i]
        ax[0].imshow(src_img)
        ax[1].imshow(tgt_img)
        if "kp_ids" in e:
            for j, kid in enumerate(e["kp_ids"]):
                c = cmap(int(kid) % 20)
                ax[0].scatter(*e["kp_source"][j], color=c, s=28, edgecolors="white", linewidths=0.6)
                ax[1].scatter(*e["kp_pred"][j], color=c, s=28, edgecolors="white", linewidths=0.6)
                ax[1].scatter(*e["kp_target"][j], color=c, s=34, marker="x")
                ax[1].plot(
                    [e["kp_pred"][j][0], e["kp_target"][j][0]],
                    [e["kp_pred"][j][1], e["kp_target"][j][1]],
                    color=c,
                    lw=0.7,
                )
        ax[2].imshow(_overlay(src_img, e["source_fg"], e["source_labels"]))
        ax[3].imshow(_overlay(tgt_img, e["target_fg"], e["target_pred_labels"]))
        if "points_target" in e:
            p, lab = e["points_target"], e["labels_target_pred"]
            ax[4].scatter(p[:, 0], p[:, 2], c=part_colors(lab), s=2)
            ax[4].set_aspect("equal")
        if i == 0 and truth_3d is not None:  # the target's annotated parts, once: what column 5 should show
            p, lab = truth_3d["points_target"], truth_3d["labels_target"]
            ax[5].scatter(p[:, 0], p[:, 2], c=part_colors(lab), s=2)
            ax[5].set_aspect("equal")
        else:
            ax[5].axis("off")
        ax[0].set_ylabel(name, fontsize=8)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
    for j, title in enumerate(
        [
            "source keypoints",
            "transferred (o) vs truth (x)",
            "source parts",
            "transferred parts (2D)",
            "transferred parts (3D, front)",
            "target parts (3D, annotation)",
        ]
    ):
        axes[0, j].set_title(title, fontsize=9)
    title = (
        f"{cat.category}: {s} -> {t}, view {vs} (each conditioned on that view)"
        if vs == vt
        else f"{cat.category}, cross-view: {s} view {vs} -> {t} view {vt} (each conditioned on its own view; "
        "3D parts shown in the object frame)"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_fig(fig, path)
    plt.close(fig)
