"""``featurenerf-scene``: N3F's scene tasks of a trained run as files (metrics, a markdown table, the figure).

    featurenerf-data scene --out data/scene
    ns-train n3f-tiny --data data/scene
    featurenerf-scene report --load-config outputs/scene/n3f-tiny/<ts>/config.yml --out docs/n3f

Writes ``metrics.json`` (PSNR / SSIM / feature cosine of the held-out frames + every ``scene/...`` metric),
``results.md`` (the table, with the command) and ``figure.png`` (query region, teacher-2D and N3F distance maps
on a held-out frame, the 3D segment, removed and extracted renders).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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
    ("3D segmentation IoU (surface samples)", "scene/segmentation3d/iou", None, "{:.1f}"),
    ("remove: PSNR / unedited render's PSNR (floor)", "scene/editing/remove_psnr",
     "scene/editing/remove_unedited_psnr", "{:.2f} / {:.2f}"),
    ("extract: PSNR / unedited render's PSNR (floor)", "scene/editing/extract_psnr",
     "scene/editing/extract_unedited_psnr", "{:.2f} / {:.2f}"),
    ("amodal mask IoU / GT visible mask as amodal (oracle reference)", "scene/amodal/amodal_iou",
     "scene/amodal/visible_mask_oracle_iou", "{:.1f} / {:.1f}"),
]  # fmt: skip


def results_table(metrics: dict) -> str:
    lines = ["| task | value |", "|---|---|"]
    for label, a, b, fmt in ROWS:
        if a not in metrics or (b is not None and b not in metrics):
            continue
        vals = [metrics[a]] + ([metrics[b]] if b else [])
        lines.append(f"| {label} | {fmt.format(*vals)} |")
    return "\n".join(lines) + "\n"


@dataclass
class Report:
    """Evaluate a trained n3f / n3f-tiny run on its generated scene and write metrics, table and figure."""

    load_config: Path
    out: Path = Path("outputs/n3f_report")

    def main(self) -> None:
        from nerfstudio.utils.eval_utils import eval_setup

        if not self.load_config.is_file():
            raise FeatureNeRFDataError(f"{self.load_config}: config not found; pass the config.yml of an ns-train run")
        _, loaded, ckpt, step = eval_setup(self.load_config, test_mode="test")
        if not isinstance(loaded, N3FPipeline):
            raise FeatureNeRFDataError(
                f"{self.load_config}: not an n3f / n3f-tiny run (pipeline {type(loaded).__name__})"
            )
        pipeline = loaded
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


def entrypoint() -> None:
    run_subcommands({"report": Report}, __doc__, (FeatureNeRFDataError,))
