"""FeatureNeRF pipeline: nerfstudio's VanillaPipeline plus source-view conditioning and a wall-clock budget.

Conditioning travels in the batch: every batch of the data manager (train rays, eval rays, eval images) carries
its objects' source views as ``batch["source"]``, and each model call of the pipeline runs inside
``model.conditioned(batch["source"])``, so no conditioning outlives the call that it belongs to. nerfstudio's
all-images loop is reused through a loader that enters the conditioning of each (camera, batch) it yields.

``ns-eval`` (and the all-images eval callback) add the correspondence metrics of
:mod:`featurenerf_ns.eval.correspondence` to PSNR/SSIM, keyed ``<category>/<feature>/<task>/<metric>``; a
training callback logs them on a small pair subset every N steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.data.datamanager import FeatureNeRFDataManager, FeatureNeRFDataManagerConfig, FixedEvalImages
from featurenerf_ns.eval.correspondence import CorrespondenceConfig, evaluate, num_steps
from featurenerf_ns.eval.protocols import resolve_protocol
from featurenerf_ns.eval.providers import FeatureProvider, ModelProvider, PositionPrior, TeacherProvider
from featurenerf_ns.fields.featurenerf_field import SourceViews
from featurenerf_ns.models.featurenerf import FeatureNeRFModelConfig
from featurenerf_ns.pipelines.builder import setup_pipeline
from featurenerf_ns.pipelines.callbacks import LearningCurve, scheduler_alignment_callback, time_budget_callback
from featurenerf_ns.teachers import TeacherError
from featurenerf_ns.utils import compat  # noqa: F401  (torch.load safe globals for --load-dir / ns-eval)
from featurenerf_ns.utils.cli import progress_bar
from featurenerf_ns.viewer.panel import FeatureViewerPanel
from featurenerf_ns.viewer.patch import prefer_localhost_for_ns_viewer


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
    datamanager: FeatureNeRFDataManager

    def __init__(
        self, config: FeatureNeRFPipelineConfig, device, test_mode="val", world_size=1, local_rank=0, grad_scaler=None
    ):
        # hand-overs: the model's ``distill`` tells the data manager whether to load a teacher; the teacher cache's
        # feature size becomes the model's distilled head size (pipelines.builder)
        setup_pipeline(
            self, config, device, test_mode, world_size, local_rank, grad_scaler,
            datamanager_kwargs={"distill": config.model.distill},
            model_kwargs={
                "patch_size": config.datamanager.patch_size,
                "patch_rays": config.datamanager.patch_rays,
                "rays_per_object": config.datamanager.rays_per_object,
            },
        )  # fmt: skip

        self.featurenerf = FeatureViewerPanel(self)  # the viewer's controls ("Custom Elements / featurenerf")
        prefer_localhost_for_ns_viewer()
        self.model.set_default_conditioning(self.default_conditioning)

    def default_conditioning(self) -> Tuple[SourceViews, str]:
        """(sources, description) of what renders without a conditioning show (``ns-render``): the first evaluated
        instance seen from the data manager's eval source view."""
        dm = self.datamanager
        inst = dm.eval_ids[0]
        it = dm.instance(inst)
        view = dm.config.eval_source_view % it.rgba.shape[0]
        return dm.sources([it], torch.tensor([[view]])), f"instance {inst} from its view {view}"

    # ------------------------------------------------------------------ conditioned model calls
    def _ray_losses(self, module, ray_bundle, batch):
        """(outputs, losses, metrics) of one ray batch, the forward pass conditioned on its ``batch["source"]``."""
        with self.model.conditioned(batch["source"]):
            outputs = module(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(outputs, batch)
        return outputs, self.model.get_loss_dict(outputs, batch, metrics_dict), metrics_dict

    @profiler.time_function
    def get_train_loss_dict(self, step: int):
        return self._ray_losses(self._model, *self.datamanager.next_train(step))  # _model: DDP when world_size > 1

    @profiler.time_function
    def get_eval_loss_dict(self, step: int):
        self.eval()
        out = self._ray_losses(self.model, *self.datamanager.next_eval(step))
        self.train()
        return out

    @profiler.time_function
    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        camera, batch = self.datamanager.next_eval_image(step)
        with self.model.conditioned(batch["source"]):
            outputs = self.model.get_outputs_for_camera(camera)
        metrics_dict, images_dict = self.model.get_image_metrics_and_images(outputs, batch)
        metrics_dict["num_rays"] = (camera.height * camera.width * camera.size).item()
        self.train()
        return metrics_dict, images_dict

    def get_average_image_metrics(self, data_loader, image_prefix: str, step=None, output_path=None, get_std=False):
        """nerfstudio's all-images loop, each image rendered from its own batch's source views."""
        return super().get_average_image_metrics(
            ConditionedImages(self.model, data_loader), image_prefix, step, output_path, get_std
        )

    @property
    def correspondence_config(self) -> CorrespondenceConfig:
        # configs saved before the field existed load without it (yaml restores attributes, not defaults)
        c = getattr(self.config, "correspondence", None)
        if c is None:
            c = self.config.correspondence = CorrespondenceConfig()
        return c

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attrs) + [
            scheduler_alignment_callback(attrs),
            time_budget_callback(self.config.max_train_minutes, attrs),
        ]
        if self.correspondence_config.callback_every > 0 and self.local_rank == 0:
            callbacks.append(LearningCurve(self, attrs).callback())
        return callbacks

    @torch.no_grad()
    def novel_view_metrics(self, instances: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Mean PSNR/SSIM over the fixed eval images (or every eval target view of ``instances``), each a novel view
        of a held-out instance from its one input view, without the correspondence metrics (ns-eval adds those)."""
        import numpy as np

        dm = self.datamanager
        images = dm.fixed_indices_eval_dataloader if instances is None else FixedEvalImages(dm, list(instances))
        vals: Dict[str, list] = {}
        with self.model.evaluating():
            for camera, batch in ConditionedImages(self.model, images):
                out = self.model.get_outputs_for_camera(camera)
                m, _ = self.model.get_image_metrics_and_images(out, batch)
                for key in ("psnr", "ssim"):
                    vals.setdefault(key, []).append(float(m[key]))
        return {k: float(np.mean(v)) for k, v in vals.items()}

    # ------------------------------------------------------------------ evaluation
    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path=None, get_std: bool = False):
        """PSNR/SSIM of novel views (nerfstudio's loop), plus the correspondence metrics."""
        metrics = super().get_average_eval_image_metrics(step=step, output_path=output_path, get_std=get_std)
        c = self.correspondence_config
        if c.enabled:
            metrics.update(
                self.correspondence_metrics(
                    c.num_pairs, teacher=c.teacher_baseline, priors=getattr(c, "priors", False)
                )[0]
            )
        return metrics

    def correspondence_metrics(
        self,
        num_pairs: Optional[int],
        features: Optional[Sequence[str]] = None,
        teacher: bool = False,
        keep: int = 0,
        progress: bool = True,
        priors: bool = False,
        model: bool = True,
    ) -> Tuple[Dict[str, float], list]:
        """Correspondence metrics of this model (and optionally the 2D teacher baseline and the position priors)
        on the first ``num_pairs`` pairs of each kind of the category's protocol; ``keep`` = cross-instance pairs
        whose predictions are returned for figures; ``model=False`` scores only the baselines. Empty (with a
        warning) when the data has no annotations."""

        c = self.correspondence_config
        dm = self.datamanager
        cat = dm.cat
        if not cat.has_annotations:
            CONSOLE.print(
                f"[yellow]correspondence metrics skipped: {cat.layout.category_file} missing (no annotations)[/yellow]"
            )
            return {}, []
        proto = resolve_protocol(cat, c.split, c.protocol, pairs=getattr(c, "pairs", "protocol")).subset(num_pairs)
        if not proto.cross_instance and progress:
            CONSOLE.print(
                f"[yellow]no cross-instance pairs: split {c.split!r} of {cat.layout.split_file} has "
                f"{len(cat.ids(c.split))} instance(s); only novel-view tasks are scored[/yellow]"
            )
        resolution = c.resolution or dm.config.image_size or cat.instance(cat.ids(c.split)[0]).width
        providers: List[FeatureProvider] = []
        if model:
            providers.append(ModelProvider(self.model, dm, features or c.features, c.chunk))
        if teacher:
            try:
                providers.append(TeacherProvider(cat, dm.config.teacher.setup(device=str(self.device))))
            except (TeacherError, OSError) as e:
                CONSOLE.print(f"[yellow]teacher-2D baseline skipped: {e}[/yellow]")
        if priors:
            providers += [PositionPrior(cat, "view"), PositionPrior(cat, "object")]
        metrics: Dict[str, float] = {}
        examples: list = []
        with self.model.evaluating():
            for prov in providers:
                with progress_bar(
                    progress,
                    f"correspondence ({'/'.join(prov.names)}, {len(proto.cross_instance)}+"
                    f"{len(proto.novel_view)}+{len(proto.cross_view)} pairs)",
                    num_steps(proto, c.tasks),
                ) as advance:
                    m, ex = evaluate(prov, cat, proto, c.tasks, resolution, keep=keep, progress=advance)
                metrics.update({f"{cat.category}/{k}": v for k, v in m.items()})
                examples.append(ex)
        return metrics, _merge_examples(examples)


class ConditionedImages:
    """A (camera, batch) loader whose items are used with the model conditioned on their ``batch["source"]``: the
    conditioning is entered when an item is yielded and left when the next one is asked for (or the loop ends)."""

    def __init__(self, model, images):
        self.model, self.images = model, images

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        for camera, batch in self.images:
            with self.model.conditioned(batch["source"]):
                yield camera, batch


def _merge_examples(per_provider: List[list]) -> list:
    """Examples of several providers (same pairs) -> one list of dicts holding every provider's predictions."""
    if not per_provider:
        return []
    out = [dict(e) for e in per_provider[0]]
    for more in per_provider[1:]:
        for base, e in zip(out, more):
            base.update({k: v for k, v in e.items() if isinstance(v, dict)})
    return out
