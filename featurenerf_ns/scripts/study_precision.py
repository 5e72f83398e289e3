"""``featurenerf-study precision``: does bfloat16 training change the result? Issue 14's accuracy check.

Trains the same method three times for the same step budget through the study machinery (resumable, evaluated on
protocol v2 like every study run):

* ``float32`` seed 0 and seed 1: their difference is the run-to-run noise (seed changes initialisation and
  data order);
* ``bfloat16`` seed 0: same initialisation and data order as float32 seed 0, so its difference to that run is due
  to precision alone;
* with ``--bf16-seeds 0 1``, also ``bfloat16`` seed 1, compared with float32 seed 1 in the same way (a second
  paired comparison: one bf16 run can land anywhere in its own seed spread; session 23's seed 0 put the distilled
  head 5 points above float32, its seed 1 inside the float32 range).

A metric passes when ``|bf16 - fp32 seed 0| <= max(|fp32 seed 1 - fp32 seed 0|, tolerance)``, with a small floor
(``tolerance``) so that two float32 runs that happen to agree to 0.01 do not make every difference "significant".
One noise sample is a crude estimate of the spread; the report says so. The training loss is read from the runs'
tensorboard events (``Train Loss``, every ``steps_per_log`` steps) and compared as its mean over the last 20% of
steps. The training seconds per step of each run (without evaluation callbacks) give the real training speed-up.

Writes ``<out>/precision.md``, ``<out>/precision.json`` and ``<out>/loss_curves.png``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from featurenerf_ns.data.layout import atomic_write_bytes, atomic_write_json, read_jsonl
from featurenerf_ns.scripts.study import CONSOLE, Run, StudyError

RUNS: Tuple[Tuple[str, int], ...] = (("float32", 0), ("float32", 1), ("bfloat16", 0))
"""(precision, seed) of the three trainings always made; a run's folder is ``<out>/<precision>/``."""

METRICS: Tuple[Tuple[str, str, float], ...] = (
    ("psnr", "novel-view PSNR (dB)", 0.05),
    ("ssim", "novel-view SSIM", 0.002),
    ("nerf_feature/part3d_xview/miou", "3D part mIoU, cross-view (internal)", 0.5),
    ("nerf_feature/kp3d_xview/pck@0.1", "3D kp PCK@0.1, cross-view (internal)", 0.5),
    ("nerf_feature/part2d_xview/miou", "2D part mIoU, cross-view (internal)", 0.5),
    ("nerf_feature/part3d_cross/miou", "3D part mIoU, same-view (internal)", 0.5),
    ("feature/part3d_xview/miou", "3D part mIoU, cross-view (distilled head)", 0.5),
    ("feature/kp3d_xview/pck@0.1", "3D kp PCK@0.1, cross-view (distilled head)", 0.5),
)
"""(result key without the category, label, tolerance floor)."""


def read_train_loss(run: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(steps, loss) of ``Train Loss`` from the tensorboard event files of a run folder, sorted by step; a step
    logged twice (a resumed run) keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run.glob("events.out.tfevents.*"))
    if not files:
        raise StudyError(f"{run}: no tensorboard event files (train with --vis tensorboard, as the study does)")
    by_step: Dict[int, float] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if "Train Loss" in acc.Tags().get("scalars", []):
            for e in acc.Scalars("Train Loss"):
                by_step[int(e.step)] = float(e.value)
    if not by_step:
        raise StudyError(f"{run}: event files hold no 'Train Loss' scalar")
    steps = np.array(sorted(by_step))
    return steps, np.array([by_step[s] for s in steps])


def tail_mean(values: np.ndarray, frac: float = 0.2) -> float:
    """Mean of the last ``frac`` of a sequence (at least one value)."""
    n = max(1, int(round(len(values) * frac)))
    return float(np.mean(values[-n:]))


def verdict(bf16: float, fp32: Tuple[float, float], floor: float) -> Tuple[float, float, bool]:
    """(difference to fp32 seed 0, noise = |fp32 seed 1 - seed 0|, within noise?) for one metric."""
    diff = bf16 - fp32[0]
    noise = abs(fp32[1] - fp32[0])
    return diff, noise, bool(abs(diff) <= max(noise, floor))


@dataclass
class Precision(Run):
    """Train float32 x 2 seeds and bfloat16 x 1 (or 2) seeds of one method, evaluate, and write the comparison (the
    float32 seeds are fixed by ``RUNS``; ``--seeds`` is not used)."""

    out: Path = Path("studies/precision")
    categories: Tuple[str, ...] = ("chair",)
    methods: Tuple[str, ...] = ("featurenerf-tiny",)
    steps: int = 1000
    curve_every: int = 250
    eval_pairs: int = 100
    baselines: bool = False
    report_only: bool = False
    """Only write the report from runs already trained and evaluated."""
    bf16_seeds: Tuple[int, ...] = (0,)
    """bfloat16 seeds, each compared with the float32 run of the same seed: (0,) or (0, 1)."""

    def runs(self) -> Tuple[Tuple[str, int], ...]:
        if self.bf16_seeds not in ((0,), (0, 1)):
            raise StudyError(f"featurenerf-study precision: --bf16-seeds {self.bf16_seeds}: give 0, or 0 1")
        return RUNS + tuple(("bfloat16", s) for s in self.bf16_seeds if s != 0)

    def _study(self, precision: str) -> Run:
        """The study of one precision's runs (its folder ``<out>/<precision>/``, all its seeds)."""
        if len(self.categories) != 1 or len(self.methods) != 1:
            raise StudyError("featurenerf-study precision: give one --categories and one --methods")
        kw = {k: getattr(self, k) for k in Run.__dataclass_fields__}
        kw.update(
            out=self.out / precision,
            seeds=tuple(s for p, s in self.runs() if p == precision),
            train_args=f"--pipeline.model.precision {precision} {self.train_args}".strip(),
        )
        return Run(**kw)

    def main(self) -> None:
        if not self.report_only:
            for precision in ("float32", "bfloat16"):
                self._study(precision).main()
        self.report()

    def report(self) -> dict:

        cat, method = self.categories[0], self.methods[0]
        runs: Dict[str, dict] = {}
        for precision, seed in self.runs():
            st = self._study(precision)
            ev = st.eval_path(cat, method, seed)
            if not ev.is_file():
                raise StudyError(f"{ev}: missing; run `featurenerf-study precision --out {self.out}` first")
            rec = json.loads(ev.read_text())
            run = st.run_dir(cat, method, seed)
            steps, loss = read_train_loss(run)
            last = _last_curve_point(run)
            runs[f"{precision}/seed{seed}"] = {
                "results": {k.split("/", 1)[1] if k.startswith(cat + "/") else k: v for k, v in rec["results"].items()},
                "train_s": last.get("train_s"),
                "train_cpu_s": last.get("train_cpu_s"),
                "step": last.get("step"),
                "loss_steps": steps.tolist(),
                "loss": loss.tolist(),
                "loss_tail": tail_mean(loss),
            }
        a, b, c = (runs[f"{p}/seed{s}"] for p, s in RUNS)
        d = runs.get("bfloat16/seed1")  # the second paired comparison, when asked for
        rows = []
        for key, label, floor in METRICS + (("loss_tail", "train loss, mean of last 20% of steps", 1e-4),):
            get = (lambda r: r["loss_tail"]) if key == "loss_tail" else (lambda r: r["results"].get(key, float("nan")))
            diff, noise, ok = verdict(get(c), (get(a), get(b)), floor)
            row = {
                "metric": label,
                "key": key,
                "fp32_s0": get(a),
                "fp32_s1": get(b),
                "bf16_s0": get(c),
                "bf16_minus_fp32": diff,
                "noise": noise,
                "floor": floor,
                "within_noise": ok,
            }
            if d is not None:  # bf16 seed 1 against fp32 seed 1 (same initialisation and data order), same noise
                diff1, _, ok1 = verdict(get(d), (get(b), get(a)), floor)
                row.update(
                    bf16_s1=get(d),
                    bf16_s1_minus_fp32_s1=diff1,
                    within_noise_s1=ok1,
                    fp32_mean=(get(a) + get(b)) / 2,
                    bf16_mean=(get(c) + get(d)) / 2,
                )
            rows.append(row)
        speed = {k: _per_step(r, "train_s") for k, r in runs.items()}
        cpu_speed = {k: _per_step(r, "train_cpu_s") for k, r in runs.items()}
        summary = {
            "category": cat,
            "method": method,
            "steps": self.steps,
            "rows": rows,
            "seconds_per_step": speed,
            "cpu_seconds_per_step": cpu_speed,
            "all_within_noise": all(r["within_noise"] for r in rows),
            "all_within_noise_s1": all(r["within_noise_s1"] for r in rows) if d is not None else None,
        }
        atomic_write_json(self.out / "precision.json", {**summary, "runs": runs})
        atomic_write_bytes(self.out / "loss_curves.png", _loss_plot(runs))
        md = _markdown(summary, self.out)
        atomic_write_bytes(self.out / "precision.md", md.encode())
        CONSOLE.print(md)
        return summary


def _last_curve_point(run: Path) -> dict:
    """The run's last learning-curve point: its training clock (wall and CPU seconds without the evaluation
    callbacks) up to that step. (A run's final steps after its last point are not on the clock.)"""

    path = run / "learning_curve.jsonl"
    points = read_jsonl(path) if path.is_file() else []
    if not points:
        raise StudyError(f"{path}: no learning-curve points (train with --pipeline.correspondence.callback-every > 0)")
    return points[-1]


def _per_step(r: dict, key: str) -> float:
    return r[key] / r["step"] if r.get(key) and r.get("step") else float("nan")


def _fmt(v: Optional[float], nd: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _markdown(s: dict, out: Path) -> str:
    sp = s["seconds_per_step"]
    lines = [
        f"# bfloat16 vs float32: {s['method']} on {s['category']}, {s['steps']} steps",
        "",
        "Generated by `featurenerf-study precision`. bf16 seed 0 shares initialisation and data order with fp32 "
        "seed 0; the noise column is |fp32 seed 1 - fp32 seed 0| (one sample of the run-to-run spread: crude). "
        "A row passes when |bf16 - fp32 s0| <= max(noise, floor).",
        "",
    ]
    two = s.get("all_within_noise_s1") is not None
    if two:
        lines += [
            "bf16 seed 1 is compared with fp32 seed 1 (same initialisation and data order) against the same noise; "
            "the last two columns are the two-seed means.",
            "",
            "| metric | fp32 s0 | fp32 s1 | bf16 s0 | bf16 - fp32 s0 | noise | within noise | bf16 s1 "
            "| bf16 s1 - fp32 s1 | within noise (s1) | fp32 mean | bf16 mean |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            "| metric | fp32 s0 | fp32 s1 | bf16 s0 | bf16 - fp32 s0 | noise | within noise |",
            "|---|---|---|---|---|---|---|",
        ]
    for r in s["rows"]:
        nd = 4 if r["key"] in ("ssim", "loss_tail") else 2
        line = (
            f"| {r['metric']} | {_fmt(r['fp32_s0'], nd)} | {_fmt(r['fp32_s1'], nd)} | {_fmt(r['bf16_s0'], nd)}"
            f" | {r['bf16_minus_fp32']:+.{nd}f} | {_fmt(r['noise'], nd)} | "
            f"{'yes' if r['within_noise'] else '**no**'} |"
        )
        if two:
            line += (
                f" {_fmt(r['bf16_s1'], nd)} | {r['bf16_s1_minus_fp32_s1']:+.{nd}f} | "
                f"{'yes' if r['within_noise_s1'] else '**no**'} | {_fmt(r['fp32_mean'], nd)} | "
                f"{_fmt(r['bf16_mean'], nd)} |"
            )
        lines.append(line)
    lines += [
        "",
        "Training seconds per step up to each run's last learning-curve point (evaluation callbacks excluded; wall "
        "clock, then CPU seconds, which other jobs on the machine inflate less): "
        + ", ".join(f"{k} {_fmt(v, 3)} s / {_fmt(s['cpu_seconds_per_step'][k], 3)} CPU-s" for k, v in sp.items())
        + f"; bf16 speed-up over fp32 seed 0: {_fmt(sp['float32/seed0'] / sp['bfloat16/seed0'], 2)}x wall, "
        f"{_fmt(s['cpu_seconds_per_step']['float32/seed0'] / s['cpu_seconds_per_step']['bfloat16/seed0'], 2)}x CPU.",
        "",
        f"Verdict: {'all metrics within run-to-run noise' if s['all_within_noise'] else 'NOT all within noise'}"
        + (
            f" (seed 0); seed 1: {'all within noise' if s['all_within_noise_s1'] else 'NOT all within noise'}"
            if two
            else ""
        )
        + f". Loss curves: `{out / 'loss_curves.png'}`.",
        "",
    ]
    return "\n".join(lines)


def _loss_plot(runs: Dict[str, dict]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in runs.items():
        steps, loss = np.array(r["loss_steps"]), np.array(r["loss"])
        k = max(1, len(loss) // 25)  # moving average over ~4% of the run, for readability
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, label=name, lw=1.5, ls="--" if name.startswith("bfloat16") else "-")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (moving average)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
