"""The FeatureNeRF pipeline's training callbacks: the wall-clock budget (with a console ETA that knows it), the
learning-rate schedulers' step counter on a resume, and the learning curve (correspondence metrics and novel-view
PSNR/SSIM every N steps, appended to ``<run>/learning_curve.jsonl``, which a study reads back)."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.data.layout import append_jsonl, read_jsonl

if TYPE_CHECKING:
    from featurenerf_ns.pipelines.featurenerf_pipeline import FeatureNeRFPipeline


def time_budget_callback(max_train_minutes: Optional[float], attrs: TrainingCallbackAttributes) -> TrainingCallback:
    """After every iteration: stop training once ``max_train_minutes`` of wall-clock time have passed since the
    first iteration (None = no budget), and point the console ETA at the step where training will really end."""
    budget = max_train_minutes * 60.0 if max_train_minutes is not None else None
    t0: list = []  # the first iteration's time (set on the first call)

    def check(step: int) -> None:
        if not t0:
            t0.append(time.perf_counter())
        elif (
            budget is not None
            and time.perf_counter() - t0[0] > budget
            and attrs.trainer is not None
            and not attrs.trainer.stop_training
        ):
            CONSOLE.print(f"[yellow]time budget of {max_train_minutes:g} min reached at step {step}; stopping[/yellow]")
            attrs.trainer.stop_training = True
        _fix_eta(attrs.trainer, step, None if budget is None else budget - (time.perf_counter() - t0[0]))

    return TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], check)


def scheduler_alignment_callback(attrs: TrainingCallbackAttributes) -> TrainingCallback:
    """Before the first iteration: put every learning-rate scheduler's counter at the training step, so schedules
    are in absolute steps. A fresh run or a resume from a checkpoint with scheduler state is already there (no-op);
    a resume from a checkpoint saved without one (``--load-dir`` of a run from before the presets had a scheduler)
    would otherwise count from 0 at the resumed step."""
    done: list = []

    def align(step: int) -> None:
        if done or attrs.optimizers is None:
            return
        done.append(step)
        for sched in attrs.optimizers.schedulers.values():
            if sched.last_epoch != step:
                sched.last_epoch = step - 1
                with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
                    warnings.simplefilter("ignore", UserWarning)
                    sched.step()

    return TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], align)


class LearningCurve:
    """Every ``callback_every`` steps: correspondence metrics on ``callback_pairs`` pairs of each kind (internal
    feature before and after its ReLU, distilled head) and novel-view PSNR/SSIM on the fixed eval images; logged to
    tensorboard/wandb (``Correspondence/...``, ``Eval Curve/...``), one console line, and one JSON line appended to
    ``<run>/learning_curve.jsonl`` (step, training seconds without these evaluations, metrics). A resumed run
    appends to the same file and continues its clock."""

    def __init__(self, pipeline: "FeatureNeRFPipeline", attrs: TrainingCallbackAttributes) -> None:
        self.pipeline = pipeline
        base = getattr(attrs.trainer, "base_dir", None) if attrs.trainer is not None else None
        self.path = Path(base) / "learning_curve.jsonl" if base is not None else None
        self.clock: Optional[_CurveClock] = None

    def callback(self) -> TrainingCallback:
        c = self.pipeline.correspondence_config
        return TrainingCallback(
            [TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self, update_every_num_iters=c.callback_every
        )

    def __call__(self, step: int) -> None:
        p = self.pipeline
        c = p.correspondence_config
        if self.clock is None:
            self.clock = _CurveClock.resuming(self.path)
        t_start, cpu_start = time.perf_counter(), time.process_time()
        metrics, _ = p.correspondence_metrics(
            c.callback_pairs, features=("nerf_feature", "nerf_feature_relu", "feature"), teacher=False, progress=False
        )
        if getattr(c, "callback_images", True):
            nvs = p.novel_view_metrics()
            metrics.update(nvs)
            for k, v in nvs.items():
                writer.put_scalar(name=f"Eval Curve/{k}", scalar=v, step=step)
        for k, v in metrics.items():
            if "/num_" not in k and "/" in k:
                writer.put_scalar(name=f"Correspondence/{k}", scalar=v, step=step)
        self.clock.exclude(time.perf_counter() - t_start, time.process_time() - cpu_start)
        if metrics:
            short = {
                k.split("/", 1)[-1]: v
                for k, v in metrics.items()
                if k.endswith(("pck@0.1", "miou", "psnr")) and ("nerf_feature/" in k or "/" not in k)
            }
            CONSOLE.print(
                f"step {step} eval ({c.callback_pairs} pairs/kind): "
                + ", ".join(f"{k.replace('nerf_feature/', '')} {v:.1f}" for k, v in short.items())
            )
        if self.path is not None:
            train_s, train_cpu_s = self.clock.training_seconds()
            append_jsonl(
                self.path,
                {
                    "step": int(step),
                    "train_s": round(train_s, 2),
                    "train_cpu_s": round(train_cpu_s, 2),
                    "eval_s": round(time.perf_counter() - t_start, 2),
                    "metrics": {k: (None if v != v else float(v)) for k, v in metrics.items()},
                },
            )


@dataclass
class _CurveClock:
    """Training time of a run without its learning-curve evaluations, wall and CPU (this process, all threads: not
    inflated by other work on the machine or a paused process), continued from the run it resumes."""

    wall0: float
    cpu0: float
    wall_offset: float = 0.0
    cpu_offset: float = 0.0
    wall_excluded: float = 0.0
    cpu_excluded: float = 0.0

    @classmethod
    def resuming(cls, path: Optional[Path]) -> "_CurveClock":
        last = read_jsonl(path)[-1:] if path is not None and path.is_file() else []
        return cls(
            time.perf_counter(),
            time.process_time(),
            float(last[0].get("train_s", 0.0)) if last else 0.0,
            float(last[0].get("train_cpu_s", 0.0)) if last else 0.0,
        )

    def exclude(self, wall_s: float, cpu_s: float) -> None:
        self.wall_excluded += wall_s
        self.cpu_excluded += cpu_s

    def training_seconds(self) -> Tuple[float, float]:
        return (
            self.wall_offset + time.perf_counter() - self.wall0 - self.wall_excluded,
            self.cpu_offset + time.process_time() - self.cpu0 - self.cpu_excluded,
        )


def _fix_eta(trainer, step: int, remaining_s: Optional[float]) -> None:
    """Points nerfstudio's console ETA (and progress fraction) at the step where training will really end: after
    a resume the loop ends at start + max_num_iterations (nerfstudio assumes max_num_iterations), and with a time
    budget at about step + remaining_s / (mean step time). The trainer computes the ETA right after this callback
    as (writer max_iter - step) x mean step time."""
    if trainer is None:
        return
    end = getattr(trainer, "_start_step", 0) + trainer.config.max_num_iterations
    if remaining_s is not None:
        avg = writer.GLOBAL_BUFFER.get("events", {}).get(writer.EventName.ITER_TRAIN_TIME.value, {}).get("avg")
        if avg:
            end = min(end, step + max(1, int(max(remaining_s, 0.0) / avg)))
    writer.GLOBAL_BUFFER["max_iter"] = end
