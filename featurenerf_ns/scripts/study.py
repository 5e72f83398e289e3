"""``featurenerf-study``: train FeatureNeRF, the no-distill baseline and the no-coord ablation for a fixed step
budget on several categories and seeds, evaluate them on protocol v2 (same-view + cross-view pairs) next to the
teacher-2D baseline, the position priors and the untrained network, and write the paper's tables and figures.

    featurenerf-study run --out studies/cpu30 --categories chair airplane --steps 5000     # train + evaluate
    featurenerf-study report --out studies/cpu30 --md docs/results.md    # tables, figures (settings from study.json)
    featurenerf-study status --out studies/cpu30
    featurenerf-study precision --out studies/precision   # bf16 vs fp32 at equal steps, with fp32 seed noise

Resumable: every run lives in ``<out>/runs/<category>/<method>/seed<k>/`` (nerfstudio's layout); a killed run
continues from its last checkpoint (``--load-dir``, to the same step budget), a finished one is marked by
``train_done.json`` and skipped, and an evaluation is redone only when its checkpoint changed. Runs go one after
another (two trainings on 2 cores halve each other's speed), ordered so that the comparisons that matter finish
first: every category's FeatureNeRF and no-distill runs, then the ablation, then further seeds.

The budget is in steps, not minutes, so methods are compared at equal work whatever else the machine does; the
training seconds of each run (without its evaluation callbacks) are recorded from its learning curve.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from featurenerf_ns.data.layout import atomic_write_bytes, atomic_write_json, read_jsonl
from featurenerf_ns.pipelines.untrained import untrained_pipeline
from featurenerf_ns.utils.cli import make_console

CONSOLE = make_console(soft_wrap=True)
DEFAULT_METHODS = ("featurenerf-tiny", "featurenerf-nodistill-tiny", "featurenerf-nocoord-tiny")
SPEC_KEYS = ("steps", "train_args", "curve_every", "curve_pairs", "image_size")
"""Settings that change what a run trains: a study folder refuses a second value (other runs were made with the
first)."""


class StudyError(ValueError):
    """Bad study input; one line naming the file and the fix."""


@dataclass
class _Study:
    """Options every study command shares."""

    out: Path = Path("studies/cpu")
    """Study folder (runs, evaluations, report)."""
    data: Path = Path("data/shapenet")
    """Data root with one folder per category (the embedded benchmark by default)."""
    categories: Tuple[str, ...] = ("chair", "airplane")
    methods: Tuple[str, ...] = DEFAULT_METHODS
    seeds: Tuple[int, ...] = (0,)
    steps: int = 5000
    """Training steps per run (the same for every method)."""
    image_size: int = 64
    curve_every: int = 500
    """Learning-curve point (correspondence on a few pairs + novel-view PSNR) every this many steps."""
    curve_pairs: int = 6
    """Pairs of each kind (same-view, novel-view, cross-view) per learning-curve point."""
    eval_pairs: int = 100
    """Pairs of each kind of the final evaluation (the first k of protocol v2: a uniform random subset)."""
    train_args: str = ""
    """Extra ns-train arguments for every run, as one string (give it with '='), e.g.
    --train-args="--pipeline.datamanager.foreground-ray-fraction 0.5"."""

    def adopt_stored_settings(self) -> None:
        """The study's own settings from ``<out>/study.json`` (so ``--out`` alone names a study to report or
        show)."""
        path = self.out / "study.json"
        if not path.is_file():
            raise StudyError(
                f"{path}: not a study folder (no study.json); run `featurenerf-study run --out {self.out}` first"
            )
        d = json.loads(path.read_text())
        for k, v in d.get("spec", {}).items():
            setattr(self, k, v)
        self.categories, self.methods, self.seeds = tuple(d["categories"]), tuple(d["methods"]), tuple(d["seeds"])
        self.eval_pairs = int(d.get("eval_pairs", self.eval_pairs))

    # ------------------------------------------------------------------ layout
    def run_dir(self, cat: str, method: str, seed: int) -> Path:
        return self.out / "runs" / cat / method / f"seed{seed}"

    def eval_path(self, cat: str, method: str, seed: int) -> Path:
        return self.out / "eval" / cat / f"{method}_seed{seed}.json"

    def baseline_path(self, cat: str) -> Path:
        return self.out / "eval" / cat / "baselines.json"

    def plan(self) -> List[Tuple[str, str, int]]:
        """(category, method, seed) in the order they are trained: for each seed, the distill-vs-no-distill runs of
        every category first, then the other methods."""
        first = [m for m in self.methods if "nocoord" not in m]
        rest = [m for m in self.methods if m not in first]
        return [(c, m, s) for s in self.seeds for group in (first, rest) for c in self.categories for m in group]

    def spec(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in SPEC_KEYS}

    def check_spec(self) -> None:
        """Writes ``<out>/study.json`` on first use; refuses settings that differ from the stored ones. The stored
        categories, methods and seeds are the union over every run command, so a command that adds one seed or
        category (``--seeds 2``) extends the study that ``report`` and ``status`` show instead of replacing it."""

        path = self.out / "study.json"
        mine = self.spec()
        lists: Dict[str, list] = {
            "categories": list(self.categories),
            "methods": list(self.methods),
            "seeds": list(self.seeds),
        }
        if path.is_file():
            whole = json.loads(path.read_text())
            for key in lists:
                before = list(whole.get(key, []))
                lists[key] = before + [v for v in lists[key] if v not in before]
            stored = whole.get("spec", {})
            diff = [k for k in SPEC_KEYS if k in stored and stored[k] != mine[k]]
            if diff:
                k = diff[0]
                raise StudyError(
                    f"{path}: this study was made with {k}={stored[k]!r}, not {mine[k]!r}; pass the same "
                    f"settings to continue it, or use another --out"
                )
        atomic_write_json(
            path,
            {
                "spec": mine,
                **lists,
                "data": str(self.data),
                "eval_pairs": self.eval_pairs,
            },
        )


def latest_checkpoint(run: Path) -> Optional[Tuple[int, Path]]:
    """(step, path) of the newest ``step-*.ckpt`` of a run, or None."""
    ckpts = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))
    if not ckpts:
        return None
    return int(ckpts[-1].stem.split("-")[1]), ckpts[-1]


def drop_stale_curve(path: Path, start: int) -> int:
    """Removes learning-curve points at or after ``start`` (the step training resumes from): points an earlier
    attempt wrote after its last checkpoint, or all of them when its checkpoints are gone, would otherwise appear
    twice and carry a clock the resumed run does not continue. Returns how many were dropped (atomic rewrite)."""

    if not path.is_file():
        return 0
    points = read_jsonl(path)
    keep = [p for p in points if int(p["step"]) < start]
    if len(keep) < len(points):
        atomic_write_bytes(path, "".join(json.dumps(p, sort_keys=True) + "\n" for p in keep).encode())
        CONSOLE.print(
            f"{path}: dropped {len(points) - len(keep)} learning-curve points at or after step {start} "
            "(written after the last checkpoint this run resumes from)"
        )
    return len(points) - len(keep)


def _bin(name: str) -> str:
    """The console script ``name`` next to this interpreter (its environment's), else the one on PATH (e.g. the
    ``bin/`` of a ``pip install --target`` folder, as on the GPU machines: scripts/gpu_check.sh)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else (shutil.which(name) or str(here))


def train_command(st: _Study, cat: str, method: str, seed: int, remaining: int, load_dir: Optional[Path]) -> List[str]:
    cmd = [
        _bin("ns-train"),
        method,
        "--data",
        str(st.data / cat),
        "--output-dir",
        str(st.out / "runs"),
        "--experiment-name",
        cat,
        "--timestamp",
        f"seed{seed}",
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        str(remaining),
        "--machine.seed",
        str(seed),
        "--pipeline.datamanager.seed",
        str(seed),
        "--pipeline.max-train-minutes",
        "None",
        "--pipeline.datamanager.image-size",
        str(st.image_size),
        "--pipeline.correspondence.callback-every",
        str(st.curve_every),
        "--pipeline.correspondence.callback-pairs",
        str(st.curve_pairs),
    ]
    if load_dir is not None:
        cmd += ["--load-dir", str(load_dir)]
    return cmd + shlex.split(st.train_args)


def train_run(st: _Study, cat: str, method: str, seed: int) -> dict:
    """Trains one run to ``st.steps`` (resuming from its last checkpoint); returns its train_done record."""

    run = st.run_dir(cat, method, seed)
    done = run / "train_done.json"
    if done.is_file():
        return json.loads(done.read_text())
    last = latest_checkpoint(run)
    start = last[0] + 1 if last else 0
    drop_stale_curve(run / "learning_curve.jsonl", start)
    if start < st.steps:
        cmd = train_command(st, cat, method, seed, st.steps - start, run / "nerfstudio_models" if last else None)
        shown = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
        CONSOLE.rule(f"[bold]{cat} / {method} / seed {seed}: steps {start} -> {st.steps}")
        CONSOLE.print(f"$ {shown}")
        env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env).returncode
        if rc != 0:
            raise StudyError(
                f"{run}: ns-train exited with {rc} (see its output above); fix the cause and re-run "
                "featurenerf-study run to resume from the last checkpoint"
            )
        wall = time.perf_counter() - t0
    else:
        shown, wall = "(already trained)", 0.0
    last = latest_checkpoint(run)
    if last is None or last[0] + 1 < st.steps:
        raise StudyError(
            f"{run}: ns-train stopped at step {last[0] + 1 if last else 0} of {st.steps}; re-run to resume"
        )
    curve = read_jsonl(run / "learning_curve.jsonl") if (run / "learning_curve.jsonl").is_file() else []
    rec = {
        "category": cat,
        "method": method,
        "seed": seed,
        "steps": last[0] + 1,
        "checkpoint": str(last[1]),
        "train_s": curve[-1]["train_s"] if curve else None,  # up to the last curve point (train_s_step)
        "train_s_step": curve[-1]["step"] if curve else None,
        "train_cpu_s": curve[-1].get("train_cpu_s") if curve else None,
        "last_wall_s": round(wall, 1),
        "command": shown,
    }
    atomic_write_json(done, rec)
    return rec


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation


def _load_pipeline(config_path: Path):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, ckpt, step = eval_setup(config_path, test_mode="test")
    return pipeline, ckpt, step


def _novel_view(pipeline, ids: List[str]) -> Dict[str, float]:
    """PSNR/SSIM over every (instance, target view) of ``ids`` (each from its one input view)."""
    m = pipeline.novel_view_metrics(ids)
    m["eval_images"] = float(len(ids) * len(pipeline.datamanager.config.eval_target_views))
    return m


EVAL_FEATURES = ("nerf_feature", "feature", "nerf_feature_centred", "nerf_feature_relu")
"""Features of a run's final evaluation: internal, distilled head (distilled models), the internal feature
centred per object (:data:`featurenerf_ns.eval.providers.CENTRED`; evaluations before 2026-12-02 session 6 lack it)
and the internal feature after its ReLU (the heads' input; evaluations before 2026-12-06 lack it)."""


def evaluate_run(st: _Study, cat: str, method: str, seed: int, rec: dict) -> dict:
    """Protocol-v2 correspondence (:data:`EVAL_FEATURES`) and novel-view PSNR/SSIM of one trained run."""

    path = st.eval_path(cat, method, seed)
    if path.is_file():
        d = json.loads(path.read_text())
        if d.get("checkpoint") == rec["checkpoint"] and d.get("eval_pairs") == st.eval_pairs:
            return d
    run = st.run_dir(cat, method, seed)
    CONSOLE.rule(f"[bold]evaluate {cat} / {method} / seed {seed}")
    t0 = time.perf_counter()
    pipeline, ckpt, step = _load_pipeline(run / "config.yml")
    ids = list(pipeline.datamanager.cat.ids("test"))
    results = _novel_view(pipeline, ids)
    m, _ = pipeline.correspondence_metrics(st.eval_pairs, features=EVAL_FEATURES, teacher=False)
    results.update(m)
    d = {
        "experiment_name": cat,
        "method_name": method,
        "seed": seed,
        "checkpoint": rec["checkpoint"],
        "step": step + 1,
        "train_s": rec.get("train_s"),
        "train_cpu_s": rec.get("train_cpu_s"),
        "eval_pairs": st.eval_pairs,
        "eval_s": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    atomic_write_json(path, d)
    CONSOLE.print(f"{path}: PSNR {results.get('psnr', float('nan')):.2f} in {d['eval_s']:.0f} s")
    return d


def evaluate_baselines(st: _Study, cat: str, rec: dict) -> dict:
    """Once per category: the teacher-2D baseline, the position priors, the untrained network (the architecture
    of the first method at its seeded initialisation) and the all-black PSNR floor, on the same pairs/images."""

    path = st.baseline_path(cat)
    if path.is_file():
        d = json.loads(path.read_text())
        if d.get("eval_pairs") == st.eval_pairs:
            return d
    CONSOLE.rule(f"[bold]baselines {cat}: teacher 2D, position priors, untrained network")
    t0 = time.perf_counter()
    run = st.run_dir(cat, rec["method"], rec["seed"])
    pipeline, _, _ = _load_pipeline(run / "config.yml")
    results, _ = pipeline.correspondence_metrics(st.eval_pairs, teacher=True, priors=True, model=False)
    # the untrained network: same config, fresh weights (seed 0), the same pairs

    fresh = untrained_pipeline(run / "config.yml")
    m_init, _ = fresh.correspondence_metrics(st.eval_pairs, features=("nerf_feature",), teacher=False)
    results.update({k.replace("/nerf_feature/", "/untrained/"): v for k, v in m_init.items()})
    ids = list(pipeline.datamanager.cat.ids("test"))
    init_nvs = _novel_view(fresh, ids)
    results["untrained_psnr"] = init_nvs["psnr"]
    results["black_psnr"] = black_psnr(pipeline, ids)
    d = {
        "experiment_name": cat,
        "method_name": "baselines",
        "eval_pairs": st.eval_pairs,
        "eval_s": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    atomic_write_json(path, d)
    return d


def black_psnr(pipeline, ids: List[str]) -> float:
    """PSNR of predicting black everywhere on the same eval images (the floor any model must beat)."""
    import torch

    dm = pipeline.datamanager
    ps = []
    for inst in ids:
        it = dm.instance(inst)
        for v in dm.config.eval_target_views:
            img = it.rgb(v % it.rgba.shape[0])
            ps.append(float(-10 * torch.log10(img.pow(2).mean())))
    return float(np.mean(ps))


@dataclass
class Run(_Study):
    """Train every (category, method, seed) of the study to the step budget, evaluating each when it is done."""

    evaluate: bool = True
    baselines: bool = True
    """Also evaluate the baselines (teacher 2D, priors, untrained network) once per category."""

    def main(self) -> None:
        self.check_spec()
        for cat in self.categories:
            if not (self.data / "img" / cat).is_dir() and not (self.data / cat).is_dir():
                raise StudyError(
                    f"{self.data}: no category {cat!r}; generate it with `featurenerf-data procedural "
                    f"--category {cat} --out {self.data}`"
                )
        plan = self.plan()
        CONSOLE.print(
            f"study {self.out}: {len(plan)} runs of {self.steps} steps: "
            + ", ".join(f"{c}/{m}/s{s}" for c, m, s in plan)
        )
        first_of_cat: Dict[str, dict] = {}
        for cat, method, seed in plan:
            rec = train_run(self, cat, method, seed)
            if self.evaluate:
                evaluate_run(self, cat, method, seed, rec)
                if self.baselines and cat not in first_of_cat:
                    first_of_cat[cat] = rec
                    evaluate_baselines(self, cat, rec)
        CONSOLE.print(
            f"[green]study {self.out}: all {len(plan)} runs trained[/green]; "
            f"`featurenerf-study report --out {self.out}` writes the tables"
        )


@dataclass
class Status(_Study):
    """Print which runs of the study in ``--out`` (its stored settings) are trained, in progress or waiting, and which
    evaluations exist."""

    def main(self) -> None:
        self.adopt_stored_settings()
        for cat, method, seed in self.plan():
            run = self.run_dir(cat, method, seed)
            last = latest_checkpoint(run)
            state = "done" if (run / "train_done.json").is_file() else (f"at step {last[0] + 1}" if last else "waiting")
            ev = "evaluated" if self.eval_path(cat, method, seed).is_file() else "-"
            CONSOLE.print(f"{cat:10s} {method:28s} seed {seed}: {state:14s} {ev}")
