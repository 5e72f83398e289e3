"""``featurenerf-scene smooth-study``: naive vs TV vs bilateral vs mask-guided smoothing of the N3F feature field.

    featurenerf-scene smooth-study --scene data/scene --out studies/smooth

For each variant (:func:`featurenerf_ns.eval.smooth_study.variants`): ``ns-train n3f-tiny`` on the scene with
the preset's 1024 uniform rays plus 8 patches of 8 x 8 rays per batch and the variant's regulariser or target
(``<out>/runs/<variant>``), then the scene tasks on its checkpoint (``<out>/eval/<variant>.json`` and
``_panels.npz``, with the median feature-stage step time from the run's events); finally ``<out>/results.md`` (the
table), ``<out>/grid.png`` and ``<out>/metrics.json``.
Resumable: evaluated variants are skipped, a trained-but-unevaluated one is only evaluated, and a killed training
continues from its last checkpoint. ``--report-only`` rewrites the table and grid from what is there.
``--seeds 1 2`` also trains every variant with ``--machine.seed`` 1 and 2 (runs ``<variant>_seed<k>``): the table
then gives mean ± sd over the three runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_bytes, atomic_write_json
from featurenerf_ns.eval.scene_tasks import SceneTaskConfig
from featurenerf_ns.utils.cli import make_console

CONSOLE = make_console()
DEFAULT_VARIANTS = (
    "naive-rays", "naive", "tv", "tv-rgb", "bilateral", "mask-superpixel", "pool-superpixel", "mask-gt", "pool-gt",
)  # fmt: skip


@dataclass
class SmoothStudy:
    """Train and evaluate the smoothing variants on a generated scene; write the table and the picture grid."""

    scene: Path = Path("data/scene")
    out: Path = Path("studies/smooth")
    variants: Tuple[str, ...] = DEFAULT_VARIANTS
    """Any of naive-rays (uniform rays: the preset), naive, tv, tv-rgb, tv-rgbd, bilateral, mask-superpixel,
    pool-superpixel, pool-gt (oracle), pool-tv-rgb, mask-sam (needs --sam-checkpoint), mask-gt (oracle); labels and
    arguments in :func:`featurenerf_ns.eval.smooth_study.variants`."""
    patch_size: int = 8
    rays_per_batch: int = 1536
    """Rays per batch of every patch variant: the preset's 1024 uniform rays plus ``patch_fraction`` of the batch as
    patches (1536 x 0.34 = 8 patches of 64). All-patch or half-patch batches at the preset's 1024 rays cost the
    radiance field 1.8 dB and retrieval 22 points (2026-12-06: ``--rays-per-batch 1024 --patch-fraction 0.5``, the
    README's first smoothing table). naive-rays keeps the preset's 1024 uniform rays."""
    patch_fraction: float = 0.34
    train_args: str = ""
    """Extra ns-train arguments for every variant, one string (give it with '=')."""
    seeds: Tuple[int, ...] = ()
    """More seeds per variant: each is also trained with ``--machine.seed k`` as run ``<variant>_seed<k>``; the
    table then shows mean ± sd over the preset's seed and these (the downstream numbers vary a lot by seed)."""
    sam_checkpoint: Optional[Path] = None
    tasks: SceneTaskConfig = field(default_factory=lambda: SceneTaskConfig(edit_frames=2))
    """The scene tasks of each evaluation (edit frames per object: 2 here, 4 in ns-eval)."""
    report_only: bool = False

    def main(self) -> None:
        from featurenerf_ns.eval.smooth_study import seed_run, variants

        table = variants(self.sam_checkpoint)
        unknown = [v for v in self.variants if v not in table]
        if unknown:
            raise FeatureNeRFDataError(f"smooth-study: unknown variants {unknown}; choose from {sorted(table)}")
        if "mask-sam" in self.variants and self.sam_checkpoint is None:
            raise FeatureNeRFDataError("smooth-study: mask-sam needs --sam-checkpoint <local sam_vit_*.pth>")
        if not (self.scene / "scene.json").is_file():
            raise FeatureNeRFDataError(
                f"{self.scene}: no scene.json; generate it with featurenerf-data scene --out {self.scene}"
            )
        if not self.report_only:
            for name in self.variants:
                for seed in (None, *self.seeds):
                    run = seed_run(name, seed)
                    if (self.out / "eval" / f"{run}.json").is_file():
                        CONSOLE.print(f"{run}: evaluated already ({self.out}/eval/{run}.json)")
                        continue
                    extra = () if seed is None else ("--machine.seed", str(seed))
                    run_dir = self.train(run, table[name].args + extra, table[name].patches)
                    self.evaluate(run, run_dir)
        self.report()

    # ------------------------------------------------------------------ training
    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name / "n3f-tiny" / "run"

    def train(self, name: str, args: Tuple[str, ...], patches: bool = True) -> Path:
        run_dir = self.run_dir(name)
        done = run_dir / "train_done.json"
        if done.is_file():
            return run_dir
        bindir = Path(sys.executable).parent
        cmd: List[str] = [
            str(bindir / "ns-train"), "n3f-tiny", "--data", str(self.scene), "--output-dir", str(self.out / "runs"),
            "--experiment-name", name, "--timestamp", "run", "--vis", "tensorboard",
            "--pipeline.max-train-minutes", "None",
            *(
                (
                    "--pipeline.datamanager.patch-size", str(self.patch_size),
                    "--pipeline.datamanager.train-num-rays-per-batch", str(self.rays_per_batch),
                    "--pipeline.datamanager.patch-fraction", str(self.patch_fraction),
                )
                if patches
                else ()
            ),
            *args, *shlex.split(self.train_args),
        ]  # fmt: skip
        ckpts = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
        if ckpts:
            cmd += ["--load-dir", str(run_dir / "nerfstudio_models")]
            CONSOLE.print(f"{name}: continuing from {ckpts[-1].name}")
        shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
        CONSOLE.rule(f"[bold]{name}")
        CONSOLE.print(f"$ {shown}")
        t = time.perf_counter()
        env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
        subprocess.run(cmd, check=True, env=env)
        atomic_write_json(done, {"command": shown, "wall_s": round(time.perf_counter() - t, 1)})
        return run_dir

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, name: str, run_dir: Path) -> None:
        from featurenerf_ns.eval.scene_tasks import scene_metrics
        from featurenerf_ns.eval.smooth_study import save_panels, step_seconds, variant_panels
        from featurenerf_ns.scripts.scene import load_n3f

        CONSOLE.print(f"{name}: evaluating {run_dir}")
        t = time.perf_counter()
        pipeline, ckpt, step = load_n3f(run_dir / "config.yml")
        metrics, example = scene_metrics(pipeline, self.scene, self.tasks, progress=CONSOLE.log)
        start = min(int(pipeline.model.config.feature_start_step) + 20, step // 2)
        step_s, n = step_seconds(run_dir, start)
        done = json.loads((run_dir / "train_done.json").read_text())
        (self.out / "eval").mkdir(parents=True, exist_ok=True)
        if "object" in example:
            save_panels(self.out / "eval" / f"{name}_panels.npz", variant_panels(pipeline, example))
        atomic_write_json(
            self.out / "eval" / f"{name}.json",
            {
                "variant": name,
                "checkpoint": str(ckpt),
                "step": step,
                "step_s": step_s,
                "step_s_from": start,
                "step_s_count": n,
                "train_wall_s": done["wall_s"],
                "command": done["command"],
                "eval_s": round(time.perf_counter() - t, 1),
                "edit_frames": self.tasks.edit_frames,
                "results": metrics,
            },
        )
        del pipeline

    # ------------------------------------------------------------------ report
    def report(self) -> None:
        from featurenerf_ns.data.procedural.scene_data import SceneData
        from featurenerf_ns.eval.smooth_study import load_evaluations, study_grid, study_table, variants

        table = variants(self.sam_checkpoint)
        order = [n for n in table if n in self.variants] + [n for n in table if n not in self.variants]
        evals = load_evaluations(self.out, order)
        if not evals:
            raise FeatureNeRFDataError(f"{self.out}: no evaluated variant yet (eval/<variant>.json)")
        labels = {n: v.label for n, v in table.items()}
        md = [
            f"# Smoothing study on `{self.scene}` (n3f-tiny, {self.patch_size} x {self.patch_size} ray patches)\n",
            study_table(evals, labels),
            "\nStep time: median training step of the feature stage (from the run's events), on 2 CPU cores.",
            "Retrieval on 10 held-out galleries; editing on "
            f"{next(iter(evals.values()))[0]['edit_frames']} held-out "
            "frames per object; PSNR, cosine and smoothness on the 10 held-out galleries.\n",
            "Commands:\n",
        ]
        md += [f"- `{ev['command']}`" for runs in evals.values() for ev in runs]
        cmd = f"featurenerf-scene smooth-study --scene {self.scene} --out {self.out}"
        if tuple(self.variants) != DEFAULT_VARIANTS:
            cmd += " --variants " + " ".join(self.variants)
        if (self.rays_per_batch, self.patch_fraction) != (SmoothStudy.rays_per_batch, SmoothStudy.patch_fraction):
            cmd += f" --rays-per-batch {self.rays_per_batch} --patch-fraction {self.patch_fraction}"
        if self.seeds:
            cmd += " --seeds " + " ".join(map(str, self.seeds))
        if self.train_args:
            cmd += f' --train-args="{self.train_args}"'
        md += [f"\n`{cmd}`\n"]
        atomic_write_bytes(self.out / "results.md", "\n".join(md).encode())
        atomic_write_json(self.out / "metrics.json", evals)
        png = study_grid(self.out, order, labels, SceneData.load(self.scene))
        if png is not None:
            atomic_write_bytes(self.out / "grid.png", png)
        CONSOLE.print(study_table(evals, labels))
        CONSOLE.print(f"[green]wrote[/green] {self.out}/results.md, metrics.json, grid.png")
