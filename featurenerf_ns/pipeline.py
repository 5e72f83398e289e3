"""FeatureNeRF pipeline: nerfstudio's VanillaPipeline plus source-view conditioning and a wall-clock budget.

The data manager hands every batch's source views straight to ``model.set_sources`` (also for the eval images
that ns-eval iterates), so nerfstudio's own train/eval loops run unchanged. ``ns-eval`` (and the all-images eval
callback) add the correspondence metrics of :mod:`featurenerf_ns.correspondence` to PSNR/SSIM, keyed
``<category>/<feature>/<task>/<metric>``; a training callback logs them on a small pair subset every N steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns import compat  # noqa: F401  (torch.load safe globals for --load-dir / ns-eval)
from featurenerf_ns.correspondence import CorrespondenceConfig
from featurenerf_ns.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.model import FeatureNeRFModelConfig


@dataclass
class FeatureNeRFPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: FeatureNeRFPipeline)
    datamanager: FeatureNeRFDataManagerConfig = field(default_factory=FeatureNeRFDataManagerConfig)
    model: FeatureNeRFModelConfig = field(default_factory=FeatureNeRFModelConfig)
    max_train_minutes: Optional[float] = None
    """Stop training (and save the checkpoint) after this much wall-clock time; None = only max_num_iterations."""
    correspondence: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)
    """Keypoint/part transfer metrics in ns-eval and the training callback."""


class FeatureNeRFPipeline(VanillaPipeline):
    config: FeatureNeRFPipelineConfig

    def __init__(self, config: FeatureNeRFPipelineConfig, device, test_mode="val", world_size=1, local_rank=0, grad_scaler=None):
        if not config.model.distill:
            config.datamanager.distill = False
        super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank, grad_scaler=grad_scaler)
        self.local_rank = local_rank
        self.datamanager.on_sources = self.model.set_sources
        self._t0: Optional[float] = None
        from featurenerf_ns.viewer import FeatureViewerPanel, prefer_localhost_for_ns_viewer

        self.featurenerf = FeatureViewerPanel(self)  # the viewer's controls ("Custom Elements / featurenerf")
        prefer_localhost_for_ns_viewer()

    @property
    def correspondence_config(self) -> CorrespondenceConfig:
        # configs saved before the field existed load without it (yaml restores attributes, not defaults)
        c = getattr(self.config, "correspondence", None)
        if c is None:
            c = self.config.correspondence = CorrespondenceConfig()
        return c

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attrs)
        if self.config.max_train_minutes is not None:
            budget = self.config.max_train_minutes * 60.0

            def check(step: int) -> None:
                if self._t0 is None:
                    self._t0 = time.perf_counter()
                elif time.perf_counter() - self._t0 > budget and attrs.trainer is not None and not attrs.trainer.stop_training:
                    CONSOLE.print(f"[yellow]time budget of {self.config.max_train_minutes:g} min reached at step {step}; stopping[/yellow]")
                    attrs.trainer.stop_training = True

            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], check))
        c = self.correspondence_config
        if c.callback_every > 0 and self.local_rank == 0:

            def correspondence(step: int) -> None:
                metrics, _ = self.correspondence_metrics(c.callback_pairs, features=("nerf_feature",), teacher=False,
                                                         progress=False)
                for k, v in metrics.items():
                    if "/num_" not in k:
                        writer.put_scalar(name=f"Correspondence/{k}", scalar=v, step=step)
                if metrics:
                    short = {k.split("/", 2)[-1]: v for k, v in metrics.items() if k.endswith(("pck@10", "pck@0.1", "miou"))}
                    CONSOLE.print(f"step {step} correspondence ({c.callback_pairs} pairs): "
                                  + ", ".join(f"{k} {v:.1f}" for k, v in short.items()))

            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], correspondence,
                                              update_every_num_iters=c.callback_every))
        return callbacks

    # ------------------------------------------------------------------ evaluation
    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path=None, get_std: bool = False):
        """PSNR/SSIM of novel views (nerfstudio's loop), plus the correspondence metrics."""
        metrics = super().get_average_eval_image_metrics(step=step, output_path=output_path, get_std=get_std)
        c = self.correspondence_config
        if c.enabled:
            metrics.update(self.correspondence_metrics(c.num_pairs, teacher=c.teacher_baseline)[0])
        return metrics

    def correspondence_metrics(self, num_pairs: Optional[int], features: Optional[Sequence[str]] = None,
                               teacher: bool = False, keep: int = 0, progress: bool = True) -> Tuple[Dict[str, float], list]:
        """Correspondence metrics of this model (and optionally the 2D teacher baseline) on the first ``num_pairs``
        pairs of each kind of the category's protocol; ``keep`` = cross-instance pairs whose predictions are
        returned for figures. Empty (with a warning) when the data has no annotations."""
        from featurenerf_ns.correspondence import ModelProvider, TeacherProvider, evaluate, num_steps
        from featurenerf_ns.protocols import resolve_protocol

        c = self.correspondence_config
        dm = self.datamanager
        cat = dm.cat
        if not cat.has_annotations:
            CONSOLE.print(f"[yellow]correspondence metrics skipped: {cat.layout.category_file} missing (no annotations)[/yellow]")
            return {}, []
        proto = resolve_protocol(cat, c.split, c.protocol).subset(num_pairs)
        if not proto.cross_instance and progress:
            CONSOLE.print(f"[yellow]no cross-instance pairs: split {c.split!r} of {cat.layout.split_file} has "
                          f"{len(cat.ids(c.split))} instance(s); only novel-view tasks are scored[/yellow]")
        resolution = c.resolution or dm.config.image_size or cat.instance(cat.ids(c.split)[0]).width
        providers = [ModelProvider(self.model, dm, features or c.features, c.chunk)]
        if teacher:
            from featurenerf_ns.teachers import TeacherError

            try:
                providers.append(TeacherProvider(cat, dm.config.teacher.setup(device=str(self.device))))
            except (TeacherError, OSError) as e:
                CONSOLE.print(f"[yellow]teacher-2D baseline skipped: {e}[/yellow]")
        was_training = self.model.training
        conditioning = (self.model._sources, self.model._maps)
        self.model.eval()
        metrics: Dict[str, float] = {}
        examples: list = []
        try:
            for prov in providers:
                with _progress(progress, f"correspondence ({'/'.join(prov.names)}, {len(proto.cross_instance)}+"
                                         f"{len(proto.novel_view)} pairs)", num_steps(proto, c.tasks)) as advance:
                    m, ex = evaluate(prov, cat, proto, c.tasks, resolution, keep=keep, progress=advance)
                metrics.update({f"{cat.category}/{k}": v for k, v in m.items()})
                examples.append(ex)
        finally:
            self.model.train(was_training)
            self.model._sources, self.model._maps = conditioning
        return metrics, _merge_examples(examples)


def _merge_examples(per_provider: List[list]) -> list:
    """Examples of several providers (same pairs) -> one list of dicts holding every provider's predictions."""
    if not per_provider:
        return []
    out = [dict(e) for e in per_provider[0]]
    for more in per_provider[1:]:
        for base, e in zip(out, more):
            base.update({k: v for k, v in e.items() if isinstance(v, dict)})
    return out


class _progress:
    """A rich progress bar (or nothing) yielding an ``advance()`` callable."""

    def __init__(self, enabled: bool, description: str, total: int):
        self.enabled, self.description, self.total = enabled, description, total
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=CONSOLE, transient=False)
        self.bar.__enter__()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
