"""A study's figures: PCK vs threshold (the paper's Fig. 3 layout) and learning curves, from its entries and runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
import numpy as np  # noqa: E402

from featurenerf_ns.eval.figures import save_fig  # noqa: E402
from featurenerf_ns.eval.metrics import PCK_THRESHOLDS_2D, PCK_THRESHOLDS_3D  # noqa: E402
from featurenerf_ns.eval.providers import PRIOR_LABELS  # noqa: E402
from featurenerf_ns.eval.study_results import METHOD_LABELS, Entry, family, sorted_entries  # noqa: E402


def pck_figure(entries: List[Entry], cat: str, path: Path) -> None:
    panels = [
        ("kp2d_cross", "2D, same view", PCK_THRESHOLDS_2D, "px at 128²"),
        ("kp2d_xview", "2D, cross-view", PCK_THRESHOLDS_2D, "px at 128²"),
        ("kp3d_cross", "3D, same view", PCK_THRESHOLDS_3D, "object units"),
        ("kp3d_xview", "3D, cross-view", PCK_THRESHOLDS_3D, "object units"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    for ax, (task, title, thr, unit) in zip(axes, panels):
        for e in sorted_entries([x for x in entries if x.category == cat]):
            ys = [e.mean(f"{task}/pck@{t:g}") for t in thr]
            if all(math.isnan(y) for y in ys):
                continue
            style = (
                ":"
                if e.key in PRIOR_LABELS or e.key == "untrained"
                else "--"
                if e.key == "teacher2d" or ":feature" in e.key
                else "-"
            )
            ax.plot(thr, ys, marker="o", label=e.label, linestyle=style)
        ax.set_title(f"{cat}: keypoints, {title}", fontsize=10)
        ax.set_xlabel(f"threshold ({unit})")
        ax.set_ylabel("PCK (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 4))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    save_fig(fig, path)
    plt.close(fig)


def curves_figure(curves: Sequence[Tuple[str, int, List[dict]]], cat: str, path: Path, label_seeds: bool) -> bool:
    """PSNR and cross-view 3D metrics vs step for every run of ``cat`` (internal solid, internal after ReLU dotted
    where the curve has it, distilled head dashed):
    ``curves`` = (method, seed, learning-curve points) per run; False (nothing written) when there are none."""
    panels = [
        ("psnr", "novel-view PSNR (dB)"),
        (f"{cat}/{{f}}/part3d_xview/miou", "cross-view 3D part mIoU"),
        (f"{cat}/{{f}}/kp3d_xview/pck@0.1", "cross-view 3D kp PCK@0.1"),
        (f"{cat}/{{f}}/part3d_cross/miou", "same-view 3D part mIoU"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.6))
    drew = False
    colors: dict = {}  # one colour per curve label in every panel (PSNR's FeatureNeRF = its internal feature's)
    for method, seed, rows in curves:
        if not rows:
            continue
        drew = True
        steps = [r["step"] for r in rows]
        for ax, (key, title) in zip(axes, panels):
            feats = ["nerf_feature", "nerf_feature_relu"]
            feats += ["feature"] if "nodistill" not in method and "{f}" in key else []
            for f in feats if "{f}" in key else [None]:
                k = key.format(f=f) if f else key
                ys = [r["metrics"].get(k) for r in rows]
                ys = [np.nan if y is None else y for y in ys]
                if all(np.isnan(ys)):
                    continue
                lab = METHOD_LABELS.get(
                    family(method) + (f":{f}" if f in ("feature", "nerf_feature_relu") else ""), method
                )
                name = f"{lab}" + (f" s{seed}" if label_seeds else "")
                ax.plot(
                    steps,
                    ys,
                    color=colors.setdefault(name, f"C{len(colors) % 10}"),
                    linestyle={"feature": "--", "nerf_feature_relu": ":"}.get(str(f), "-"),
                    marker=".",
                    label=name,
                )
            ax.set_title(f"{cat}: {title}", fontsize=10)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
    if not drew:
        plt.close(fig)
        return False
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    save_fig(fig, path)
    plt.close(fig)
    return True
