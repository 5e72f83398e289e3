"""``featurenerf-scene``: N3F's scene tasks of a trained run as files (metrics, a markdown table, the figure).

    featurenerf-data scene --out data/scene
    ns-train n3f-tiny --data data/scene
    featurenerf-scene report --load-config outputs/scene/n3f-tiny/<ts>/config.yml --out docs/n3f

Writes ``metrics.json`` (PSNR / SSIM / feature cosine of the held-out frames + every ``scene/...`` metric),
``results.md`` (the table, with the command) and ``figure.png`` (query region, teacher-2D and N3F distance maps
on a held-out frame, the 3D segment, removed and extracted renders).

    featurenerf-scene export --load-config <config.yml> --frame 0 --box 40 50 80 90 --out outputs/n3f_export

writes the scene's surface points with their features and a feature-space segment (PLY, npz, mesh; see
:mod:`featurenerf_ns.exporters.segment`).

    featurenerf-scene smooth-study --scene data/scene --out studies/smooth

trains and compares naive / TV / bilateral / mask-guided feature smoothing (:mod:`featurenerf_ns.scripts.smooth_study`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_bytes, atomic_write_json
from featurenerf_ns.eval.scene_figures import scene_figure
from featurenerf_ns.eval.scene_tasks import scene_metrics
from featurenerf_ns.pipelines.n3f_pipeline import N3FPipeline
from featurenerf_ns.utils.cli import make_console, run_subcommands

CONSOLE = make_console()

ROWS = [
    ("held-out PSNR / SSIM", "psnr", "ssim", "{:.2f} / {:.3f}"),
    ("rendered feature vs teacher, cosine (held-out)", "feature_cosine", None, "{:.3f}"),
    ("retrieval mAP, train galleries: teacher-2D / N3F", "scene/retrieval/teacher2d_train_map",
     "scene/retrieval/n3f_train_map", "{:.1f} / {:.1f}"),
    ("retrieval mAP, held-out galleries: teacher-2D / N3F", "scene/retrieval/teacher2d_heldout_map",
     "scene/retrieval/n3f_heldout_map", "{:.1f} / {:.1f}"),
    ("3D segmentation IoU (surface samples): cleaned on a grid / raw per-sample rule", "scene/segmentation3d/iou",
     "scene/segmentation3d/iou_samples", "{:.1f} / {:.1f}"),
    ("remove: PSNR / unedited render's PSNR (floor)", "scene/editing/remove_psnr",
     "scene/editing/remove_unedited_psnr", "{:.2f} / {:.2f}"),
    ("extract: PSNR / unedited render's PSNR (floor)", "scene/editing/extract_psnr",
     "scene/editing/extract_unedited_psnr", "{:.2f} / {:.2f}"),
    ("extract: empty (background-only) render's PSNR (floor)", "scene/editing/extract_empty_psnr", None,
     "{:.2f}"),
    ("feature roughness inside objects (held-out): teacher-2D / N3F", "scene/smoothness/teacher2d_roughness",
     "scene/smoothness/n3f_roughness", "{:.3f} / {:.3f}"),
    ("feature edge contrast across object boundaries: teacher-2D / N3F",
     "scene/smoothness/teacher2d_edge_contrast", "scene/smoothness/n3f_edge_contrast", "{:.3f} / {:.3f}"),
    ("feature edge contrast of window means (noise averaged out): teacher-2D / N3F",
     "scene/smoothness/teacher2d_edge_contrast_band", "scene/smoothness/n3f_edge_contrast_band", "{:.3f} / {:.3f}"),
    ("amodal mask IoU / GT visible mask as amodal (oracle reference)", "scene/amodal/amodal_iou",
     "scene/amodal/visible_mask_oracle_iou", "{:.1f} / {:.1f}"),
]  # fmt: skip


def results_table(metrics: dict) -> str:
    lines = ["| task | value |", "|---|---|"]
    for label, a, b, fmt in ROWS:
        if a not in metrics:
            continue
        if b is not None and b not in metrics:  # an older metrics file: the first figure only
            b, fmt, label = None, fmt.split(" / ")[0], label.split(":")[0]
        vals = [metrics[a]] + ([metrics[b]] if b else [])
        lines.append(f"| {label} | {fmt.format(*vals)} |")
    return "\n".join(lines) + "\n"


def load_n3f(config: Path) -> Tuple[N3FPipeline, Path, int]:
    """(pipeline in eval mode, checkpoint path, step) of a trained n3f / n3f-tiny run; one-line errors otherwise."""
    from nerfstudio.utils.eval_utils import eval_setup

    if not config.is_file():
        raise FeatureNeRFDataError(f"{config}: config not found; pass the config.yml of an ns-train run")
    _, loaded, ckpt, step = eval_setup(config, test_mode="test")
    if not isinstance(loaded, N3FPipeline):
        raise FeatureNeRFDataError(f"{config}: not an n3f / n3f-tiny run (pipeline {type(loaded).__name__})")
    loaded.eval()
    return loaded, ckpt, step


@dataclass
class Report:
    """Evaluate a trained n3f / n3f-tiny run on its generated scene and write metrics, table and figure."""

    load_config: Path
    out: Path = Path("outputs/n3f_report")

    def main(self) -> None:
        pipeline, ckpt, step = load_n3f(self.load_config)
        root = pipeline.scene_root
        if root is None:
            raise FeatureNeRFDataError(
                f"{self.load_config}: not an n3f run on a generated scene (no scene.json next to its data)"
            )
        t0 = time.perf_counter()
        pipeline.config.scene_tasks.enabled = False  # the base loop only: the scene tasks run below, once
        metrics = pipeline.get_average_eval_image_metrics(step=step)
        pipeline.eval()
        scene_m, ex = scene_metrics(pipeline, root, pipeline.config.scene_tasks, progress=CONSOLE.log)
        metrics.update(scene_m)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.out / "metrics.json",
            {"checkpoint": str(ckpt), "step": step, "eval_s": round(time.perf_counter() - t0, 1), "results": metrics},
        )
        md = (
            f"N3F on `{root}` ({pipeline.config.datamanager.teacher.name} teacher, checkpoint step {step}).\n\n"
            + results_table(metrics)
            + f"\n`featurenerf-scene report --load-config {self.load_config} --out {self.out}`\n"
        )
        atomic_write_bytes(self.out / "results.md", md.encode())
        if "object" in ex:
            png = scene_figure(ex["scene"], ex["renders"], ex, np.asarray(ex["points"]), np.asarray(ex["seg_mask"]))
            atomic_write_bytes(self.out / "figure.png", png)
        CONSOLE.print(results_table(metrics))
        CONSOLE.print(f"[green]wrote[/green] {self.out}/metrics.json, results.md, figure.png")


@dataclass
class Export:
    """Export a trained n3f / n3f-tiny scene's surface points with features (PLY + npz) and a feature-space segment
    of it (PLY points, optional mesh), selected by a box in a train frame (or, on a generated scene, an object's
    ground-truth visible region: an oracle selection, labelled so in export.json)."""

    load_config: Path
    out: Path = Path("outputs/n3f_export")
    frame: int = 0
    """Train frame (index in the dataparser's train split) the selection is drawn in."""
    box: Optional[Tuple[int, int, int, int]] = None
    """Selection box x0 y0 x1 y1 in pixels of the train frame (end-exclusive)."""
    object: Optional[int] = None
    """Generated scene only: select object k (0-based) by its ground-truth visible mask in the frame (oracle)."""
    tau: Optional[float] = None
    """Feature-distance threshold in [0, 2]; None: chosen in the selection frame alone (best 2D match)."""
    num_frames: int = 12
    """Train cameras whose renders give the surface points."""
    scale: float = 0.5
    """Render scale of those cameras (0.5: a 128 px frame gives up to 64x64 points)."""
    mesh_resolution: int = 128
    """Marching-cubes grid of the segment mesh (0: no mesh)."""
    mesh_level: float = 10.0
    """Density level of the mesh surface."""
    min_accumulation: float = 0.5
    """Pixels rendered with at least this accumulation count as surface (selection and surface points)."""
    clean: bool = True
    """Clean the segment on a grid as the scene tasks and the viewer do (the run's ``scene_tasks.cleanup_settings``
    and ``tau_sigma``; seeds: the selection's surface points); --no-clean: the raw per-point feature rule."""
    tau_sigma: Optional[float] = None
    """Density a voxel needs to join the cleaned segment; None: the run's ``scene_tasks.tau_sigma``."""

    def main(self) -> None:
        from featurenerf_ns.exporters.segment import box_mask, export_segment, frame_query, surface_cloud
        from featurenerf_ns.model_components.segment_edit import model_segment_volume
        from featurenerf_ns.utils.cli import progress_bar

        if (self.box is None) == (self.object is None):
            raise FeatureNeRFDataError("export: select with exactly one of --box x0 y0 x1 y1 or --object k")
        pipeline, ckpt, step = load_n3f(self.load_config)
        cams = pipeline.datamanager.train_dataset.cameras
        if not 0 <= self.frame < len(cams):
            raise FeatureNeRFDataError(
                f"export: --frame {self.frame} out of range; {self.load_config} has train frames 0..{len(cams) - 1}"
            )
        H, W = int(cams.height[self.frame, 0]), int(cams.width[self.frame, 0])
        if self.box is not None:
            region, what = box_mask(H, W, self.box), f"box {tuple(self.box)}"
        else:
            region, what = self._object_region(pipeline, H, W), f"object {self.object} (ground-truth mask: oracle)"
        query, tau_auto, seeds = frame_query(pipeline, self.frame, region, what, self.min_accumulation)
        tau = tau_auto if self.tau is None else float(self.tau)
        volume = None
        if self.clean:
            tasks = pipeline.config.scene_tasks
            with CONSOLE.status("cleaning the segment on a grid"):
                tau_sigma = tasks.tau_sigma if self.tau_sigma is None else float(self.tau_sigma)
                volume = model_segment_volume(pipeline.model, query, tau, tau_sigma, seeds, tasks.cleanup_settings)
        with progress_bar(True, "rendering surface points", min(self.num_frames, len(cams))) as advance:
            cloud = surface_cloud(
                pipeline, self.num_frames, self.scale, self.min_accumulation, progress=lambda i, n: advance()
            )
        info = {
            "checkpoint": str(ckpt),
            "step": step,
            "selection": f"{what} in train frame {self.frame}",
            "tau_source": "given" if self.tau is not None else "chosen in the selection frame",
        }
        summary = export_segment(
            pipeline, self.out, query, tau, cloud, self.mesh_resolution, self.mesh_level, info, volume=volume
        )
        CONSOLE.print(
            f"[green]wrote[/green] {self.out}/points.ply ({summary['points']} points), segment.ply "
            f"({summary['segment_points']}), points.npz, export.json; mesh: {summary.get('mesh', 'not asked')}"
        )

    def _object_region(self, pipeline: N3FPipeline, H: int, W: int):
        import torch

        from featurenerf_ns.data.procedural.scene_data import SceneData

        root = pipeline.scene_root
        if root is None:
            raise FeatureNeRFDataError(
                f"{self.load_config}: --object needs a generated scene (no scene.json); use --box"
            )
        scene = SceneData.load(root)
        assert self.object is not None
        if not 0 <= self.object < scene.num_objects:
            raise FeatureNeRFDataError(
                f"export: --object {self.object} out of range; the scene has {scene.num_objects} objects"
            )
        stem = Path(pipeline.datamanager.train_dataset.image_filenames[self.frame]).stem
        instance = scene.frames()["instance"][int(stem.split("_")[-1])]
        if instance.shape != (H, W):
            raise FeatureNeRFDataError(f"{root}: instance masks are {instance.shape}, train frame is {(H, W)}")
        return torch.from_numpy(instance == self.object + 1)


def entrypoint() -> None:
    from featurenerf_ns.scripts.smooth_study import SmoothStudy

    run_subcommands({"report": Report, "export": Export, "smooth-study": SmoothStudy}, __doc__, (FeatureNeRFDataError,))
