"""The smoothing study's pieces that need no training: its variants, per-variant evaluation files, the table and
the picture grid (``featurenerf-scene smooth-study`` runs them; :mod:`featurenerf_ns.scripts.smooth_study`).

Every variant trains n3f-tiny on the same scene with the same ray patches (so the radiance field sees the same
rays: the feature loss does not reach it) and differs only in the feature loss's regulariser and mask source.
"""

from __future__ import annotations

import glob
import io
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch

from featurenerf_ns.model_components.segment_edit import SegmentEdit, feature_distance, region_query


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    args: Tuple[str, ...]
    oracle: bool = False
    patches: bool = True
    """Trained with the study's ray patches (False: the preset's uniform rays, a reference row)."""


def variants(sam_checkpoint: Optional[Path] = None) -> Dict[str, Variant]:
    mask = ("--pipeline.model.smoothing.kind", "mask", "--pipeline.datamanager.masks.kind")
    sam = ("--pipeline.datamanager.masks.sam-checkpoint", str(sam_checkpoint)) if sam_checkpoint else ()
    tv = ("--pipeline.model.smoothing.kind", "tv")

    def guided(guide: str) -> Tuple[str, ...]:  # edge-aware TV
        return tv + ("--pipeline.model.smoothing.tv-guide", guide)

    def pooled(kind: str) -> Tuple[str, ...]:  # the teacher target pooled in the segments of a mask source
        return ("--pipeline.datamanager.masks.kind", kind, "--pipeline.datamanager.segment-pooling", "0.5")

    out = [
        Variant("naive-rays", "naive, uniform rays (the preset; reference)", (), patches=False),
        Variant("naive", "naive distillation", ()),
        Variant("tv", "TV", tv),
        Variant("tv-rgb", "edge-aware TV (colour-weighted; ours)", guided("rgb")),
        Variant("tv-rgbd", "edge-aware TV, rgb + depth (ours)", guided("rgb+depth")),
        Variant("bilateral", "bilateral target", ("--pipeline.model.smoothing.kind", "bilateral")),
        Variant("mask-superpixel", "blur in superpixels", mask + ("superpixel",)),
        Variant("pool-superpixel", "teacher pooled in superpixels (ours)", pooled("superpixel")),
        Variant("pool-gt", "teacher pooled in GT instance masks (oracle)", pooled("gt"), oracle=True),
        Variant("pool-tv-rgb", "pooled in superpixels + edge-aware TV (ours)", pooled("superpixel") + guided("rgb")),
        Variant("mask-sam", "blur in SAM masks", mask + ("sam",) + sam),
        Variant("mask-gt", "blur in GT instance masks (oracle)", mask + ("gt",), oracle=True),
    ]
    return {v.name: v for v in out}


def step_seconds(run_dir: Path, from_step: int) -> Tuple[float, int]:
    """Median training step time (s) at or after ``from_step`` from the run's tensorboard events, and the count."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vals: List[float] = []
    for ev_file in sorted(run_dir.glob("events.out.tfevents.*")):
        ea = EventAccumulator(str(ev_file), size_guidance={"scalars": 0})
        ea.Reload()
        if "Train Iter (time)" in ea.Tags()["scalars"]:
            vals += [e.value for e in ea.Scalars("Train Iter (time)") if e.step >= from_step]
    return (float(np.median(vals)) if vals else float("nan")), len(vals)


# ---------------------------------------------------------------------------------------------------------- panels
@torch.no_grad()
def variant_panels(pipeline, example: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Arrays of one variant's grid row from the renders of :func:`~featurenerf_ns.eval.scene_tasks.scene_metrics`
    (cached there): feature PCA, distance map and removed / extracted renders at the example's edit frame, the 3D
    segment mask; the teacher's PCA and distance map of the same frame."""
    renders, scene = example["renders"], example["scene"]
    k, q, g, tau = int(example["object"]), int(example["query_frame"]), int(example["edit_frame"]), example["tau"]
    region = torch.from_numpy(scene.frames()["instance"][q] == k + 1)
    colors = pipeline.model.pca_colors()
    out: Dict[str, np.ndarray] = {}
    for name, feat in (("teacher", renders.teacher_feature), ("n3f", renders.n3f_feature)):
        f = feat(g)
        H, W, D = f.shape
        out[f"{name}_pca"] = colors(f.reshape(-1, D).cpu()).reshape(H, W, 3).numpy()
        out[f"{name}_distance"] = feature_distance(f, region_query(feat(q), region)).numpy()
    query = region_query(renders.n3f_feature(q), region)
    modes: Tuple[Literal["remove", "extract"], ...] = ("remove", "extract")
    for mode in modes:
        edit = SegmentEdit(query.to(pipeline.device), float(tau), mode)
        out[mode] = renders.render(g, edit, key=(k, mode))["rgb"].numpy()
    out["rgb"] = renders.render(g)["rgb"].numpy()
    out["seg_mask"] = np.asarray(example["seg_mask"], dtype=bool)
    out["meta"] = np.asarray([k, q, g, float(tau)], dtype=np.float64)
    return out


def save_panels(path: Path, panels: Dict[str, np.ndarray]) -> None:
    from featurenerf_ns.data.layout import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **panels)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------------- table
COLUMNS: List[Tuple[str, Optional[str], str]] = [
    ("step s (x naive)", None, ""),
    ("PSNR", "scene/heldout/psnr", "{:.2f}"),
    ("feat. cos", "scene/heldout/feature_cosine", "{:.3f}"),
    ("roughness in objects (lower: smoother)", "scene/smoothness/n3f_roughness", "{:.3f}"),
    ("edge contrast (higher: sharper)", "scene/smoothness/n3f_edge_contrast", "{:.3f}"),
    ("edge contrast of window means", "scene/smoothness/n3f_edge_contrast_band", "{:.3f}"),
    ("region contrast", "scene/smoothness/n3f_edge_contrast_regions", "{:.3f}"),
    ("boundary sharpness (window / region)", "scene/smoothness/n3f_boundary_sharpness", "{:.3f}"),
    ("retrieval mAP held-out", "scene/retrieval/n3f_heldout_map", "{:.1f}"),
    ("3D seg IoU (grid-cleaned)", "scene/segmentation3d/iou", "{:.1f}"),
    ("3D seg IoU (raw per-sample rule)", "scene/segmentation3d/iou_samples", "{:.1f}"),
    ("remove PSNR", "scene/editing/remove_psnr", "{:.2f}"),
    ("extract PSNR", "scene/editing/extract_psnr", "{:.2f}"),
    ("amodal IoU", "scene/amodal/amodal_iou", "{:.1f}"),
]


def seed_run(name: str, seed: Optional[int]) -> str:
    """Run (and evaluation file) name of a variant at an extra seed (None: the preset's seed)."""
    return name if seed is None else f"{name}_seed{seed}"


def load_evaluations(out: Path, order: Sequence[str]) -> Dict[str, List[dict]]:
    """Per variant (in ``order``), its evaluations: ``<name>.json`` (the preset's seed) first, then every
    ``<name>_seed<k>.json`` by k."""
    found: Dict[str, List[dict]] = {}
    for name in order:
        seeded = {}  # seed -> path; the regex keeps e.g. "tv-rgb_seed1" out of "tv"'s runs
        for p in (out / "eval").glob(f"{glob.escape(name)}_seed*.json"):
            m = re.fullmatch(rf"{re.escape(name)}_seed(\d+)\.json", p.name)
            if m:
                seeded[int(m.group(1))] = p
        paths = [out / "eval" / f"{name}.json"] + [seeded[k] for k in sorted(seeded)]
        runs = [json.loads(p.read_text()) for p in paths if p.is_file()]
        if runs:
            found[name] = runs
    return found


def _cell(values: Sequence[Optional[float]], fmt: str, runs: int) -> str:
    """One table cell: the value, or mean ± sd over the runs that have it (with their count if some lack it)."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "-"
    if len(v) == 1:
        return fmt.format(v[0]) + (f" (1 of {runs})" if runs > 1 else "")
    cell = f"{fmt.format(float(np.mean(v)))} ± {fmt.format(float(np.std(v)))}"
    return cell + (f" ({len(v)} of {runs})" if len(v) < runs else "")


def study_table(evals: Dict[str, List[dict]], labels: Dict[str, str]) -> str:
    """Markdown: one row per evaluated variant (mean ± sd over its seeds when it has several runs; sd over the
    runs, numpy's population sd), teacher-2D's smoothness and retrieval as a reference row, the do-nothing floors of
    editing underneath (first run)."""
    head = "| variant | runs | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    base_runs = [ev.get("step_s") for ev in evals.get("naive", [])]
    base_v = [x for x in base_runs if x is not None and np.isfinite(x)]
    base = float(np.mean(base_v)) if base_v else None
    for name, runs in evals.items():
        cells = []
        for title, key, fmt in COLUMNS:
            if key is None:
                st = [ev.get("step_s", float("nan")) for ev in runs]
                s = float(np.nanmean(st)) if any(np.isfinite(st)) else float("nan")
                cells.append(f"{s:.3f} ({s / base:.2f}x)" if base else f"{s:.3f}")
            else:
                cells.append(_cell([ev["results"].get(key) for ev in runs], fmt, len(runs)))
        lines.append(f"| {labels.get(name, name)} | {len(runs)} | " + " | ".join(cells) + " |")
    if evals:
        m = next(iter(evals.values()))[0]["results"]
        ref = {
            "scene/smoothness/n3f_roughness": m.get("scene/smoothness/teacher2d_roughness"),
            "scene/smoothness/n3f_edge_contrast": m.get("scene/smoothness/teacher2d_edge_contrast"),
            "scene/smoothness/n3f_edge_contrast_band": m.get("scene/smoothness/teacher2d_edge_contrast_band"),
            "scene/smoothness/n3f_edge_contrast_regions": m.get("scene/smoothness/teacher2d_edge_contrast_regions"),
            "scene/smoothness/n3f_boundary_sharpness": m.get("scene/smoothness/teacher2d_boundary_sharpness"),
            "scene/retrieval/n3f_heldout_map": m.get("scene/retrieval/teacher2d_heldout_map"),
        }
        cells = [fmt.format(ref[key]) if key in ref and ref[key] is not None else "-" for _, key, fmt in COLUMNS]
        lines.append("| teacher-2D (bilinear map, reference) | - | " + " | ".join(cells) + " |")
        lines.append("")
        nan = float("nan")
        lines.append(
            "Floors (same frames, first run): remove, unedited render "
            f"{m.get('scene/editing/remove_unedited_psnr', nan):.2f};"
            f" extract, unedited {m.get('scene/editing/extract_unedited_psnr', nan):.2f},"
            f" empty render {m.get('scene/editing/extract_empty_psnr', nan):.2f}."
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- grid
def study_grid(out: Path, order: Sequence[str], labels: Dict[str, str], scene) -> Optional[bytes]:
    """PNG: one row per variant with panels (feature PCA, distance map, 3D segment top view, removed, extracted)
    and a first row for the teacher; None when no variant has panels yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = [(n, out / "eval" / f"{n}_panels.npz") for n in order]
    rows = [(n, np.load(f)) for n, f in files if f.is_file()]
    if not rows:
        return None
    surf = scene.surface()
    pts, owner = surf["points"], surf["point_object"]
    k, q, g, tau = rows[0][1]["meta"]
    k, g = int(k), int(g)
    inst = scene.frames()["instance"][g]
    titles = ["feature PCA", f"distance to object {k}'s query", "3D segment (top view)", "removed", "extracted"]
    fig, axes = plt.subplots(len(rows) + 1, 5, figsize=(12.5, 2.6 * (len(rows) + 1)), squeeze=False)
    first = rows[0][1]
    axes[0, 0].imshow(np.clip(first["teacher_pca"], 0, 1))
    axes[0, 1].imshow(first["teacher_distance"], cmap="viridis_r", vmin=0, vmax=1.5)
    axes[0, 1].contour(inst == k + 1, levels=[0.5], colors="white", linewidths=0.6)
    axes[0, 2].imshow(np.clip(first["rgb"], 0, 1))
    axes[0, 0].set_ylabel("teacher-2D", fontsize=9)
    for j, t in enumerate(["teacher PCA", "teacher distance", f"render, frame {g}"]):
        axes[0, j].set_title(t, fontsize=8)
    for r, (name, p) in enumerate(rows, start=1):
        ax = axes[r]
        ax[0].imshow(np.clip(p["n3f_pca"], 0, 1))
        ax[1].imshow(p["n3f_distance"], cmap="viridis_r", vmin=0, vmax=1.5)
        ax[1].contour(inst == k + 1, levels=[0.5], colors="white", linewidths=0.6)
        ax[2].scatter(pts[:, 0], pts[:, 1], s=0.5, c="0.85")
        ax[2].scatter(pts[owner == k, 0], pts[owner == k, 1], s=1, c="tab:blue")
        ax[2].scatter(pts[p["seg_mask"], 0], pts[p["seg_mask"], 1], s=1, c="tab:red")
        ax[2].set_aspect("equal")
        ax[3].imshow(np.clip(p["remove"], 0, 1))
        ax[4].imshow(np.clip(p["extract"], 0, 1))
        ax[0].set_ylabel(textwrap.fill(labels.get(name, name), 26), fontsize=9)  # long labels: two lines
        if r == 1:
            for j, t in enumerate(titles):
                ax[j].set_title(t, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    for j in range(3, 5):
        axes[0, j].axis("off")
    fig.suptitle(
        f"object {k} ({scene.categories[k]}), held-out frame {g}: blue = object, red = predicted 3D segment; "
        "distance maps bright = near",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the suptitle above the titles
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
