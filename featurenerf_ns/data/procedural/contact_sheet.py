"""Contact sheet of a generated dataset: per category a few instances, each as the RGB render and the
same view with its part-label overlay and 2D keypoints (filled = visible, ring = occluded)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.utils.palette import part_colors


def _pick_view(poses: np.ndarray) -> int:
    """The view closest to a front-left three-quarter view at ~25 degrees elevation."""
    target = np.array(
        [
            np.cos(np.deg2rad(25)) * np.cos(np.deg2rad(-60)),
            np.cos(np.deg2rad(25)) * np.sin(np.deg2rad(-60)),
            np.sin(np.deg2rad(25)),
        ]
    )
    dirs = poses[:, :3, 3] / np.linalg.norm(poses[:, :3, 3], axis=1, keepdims=True)
    return int(np.argmax(dirs @ target))


def make_contact_sheet(root: Path, out: Path, categories: Optional[Sequence[str]] = None, instances: int = 4) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    root = Path(root)
    if categories is None:
        categories = sorted(p.stem for p in (root / "splits").glob("*.json"))
    if not categories:
        raise FileNotFoundError(
            f"{root / 'splits'}: no generated categories found; run featurenerf-data procedural first"
        )
    datas: List[CategoryData] = [CategoryData(root, c) for c in categories]
    fig, axes = plt.subplots(len(datas), 2 * instances, figsize=(2.0 * 2 * instances, 2.35 * len(datas)), squeeze=False)
    for row, data in enumerate(datas):
        ids = (data.ids("test") + data.ids("val") + data.ids("train"))[:instances]
        for col in range(instances):
            ax_rgb, ax_ann = axes[row, 2 * col], axes[row, 2 * col + 1]
            for ax in (ax_rgb, ax_ann):
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
            if col >= len(ids):
                continue
            inst = ids[col]
            rec = data.instance(inst)
            v = _pick_view(rec.poses)
            rgba = np.asarray(Image.open(rec.image_paths[v]).convert("RGBA"), dtype=np.float64) / 255.0
            rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]) * 1.0  # white background for viewing
            ax_rgb.imshow(rgb)
            style = data.instance_meta(inst).get("style", {})
            tag = next((str(style[k]) for k in ("base", "body_style", "style", "structure") if k in style), "")
            ax_rgb.set_title(f"{inst} {tag}", fontsize=7)
            views = data.view_annotations(inst)
            labels = views["parts"][v]
            overlay = 0.35 * rgb.mean(axis=2, keepdims=True).repeat(3, 2) + 0.65
            fg = labels > 0
            overlay[fg] = 0.45 * rgb[fg] + 0.55 * part_colors(labels[fg])
            ax_ann.imshow(overlay)
            uv, vis = views["kp2d"][v], views["kp_visible"][v]
            ok = np.isfinite(uv).all(axis=1)
            # imshow puts pixel (row i, col j) centre at (j, i); our keypoints have centres at +0.5.
            ax_ann.scatter(
                uv[ok & vis, 0] - 0.5, uv[ok & vis, 1] - 0.5, s=14, c="black", edgecolors="white", linewidths=0.6
            )
            ax_ann.scatter(
                uv[ok & ~vis, 0] - 0.5,
                uv[ok & ~vis, 1] - 0.5,
                s=14,
                facecolors="none",
                edgecolors="black",
                linewidths=0.8,
            )
            ax_ann.set_xlim(-0.5, rgb.shape[1] - 0.5)
            ax_ann.set_ylim(rgb.shape[0] - 0.5, -0.5)
        axes[row, 0].set_ylabel(data.category, fontsize=10)
        handles = [
            # matplotlib's stubs omit arrays from ColorType; an RGB array is a valid colour at runtime
            plt.Line2D([], [], marker="s", ls="", color=part_colors(i + 1), label=n)  # type: ignore[arg-type]
            for i, n in enumerate(data.part_names)
        ]
        axes[row, -1].legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize=7,
            frameon=False,
            title=f"parts ({len(data.part_names)})",
            title_fontsize=7,
        )
    fig.suptitle("Procedural benchmark: RGB | part labels + keypoints (filled = visible, ring = occluded)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
