"""FeatureNeRF pipeline: nerfstudio's VanillaPipeline plus source-view conditioning and a wall-clock budget.

The data manager hands every batch's source views straight to ``model.set_sources`` (also for the eval images
that ns-eval iterates), so nerfstudio's own train/eval loops run unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns import compat  # noqa: F401  (torch.load safe globals for --load-dir / ns-eval)
from featurenerf_ns.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.model import FeatureNeRFModelConfig


@dataclass
class FeatureNeRFPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: FeatureNeRFPipeline)
    datamanager: FeatureNeRFDataManagerConfig = field(default_factory=FeatureNeRFDataManagerConfig)
    model: FeatureNeRFModelConfig = field(default_factory=FeatureNeRFModelConfig)
    max_train_minutes: Optional[float] = None
    """Stop training (and save the checkpoint) after this much wall-clock time; None = only max_num_iterations."""


class FeatureNeRFPipeline(VanillaPipeline):
    config: FeatureNeRFPipelineConfig

    def __init__(self, config: FeatureNeRFPipelineConfig, device, test_mode="val", world_size=1, local_rank=0, grad_scaler=None):
        if not config.model.distill:
            config.datamanager.distill = False
        super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank, grad_scaler=grad_scaler)
        self.datamanager.on_sources = self.model.set_sources
        self._t0: Optional[float] = None

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
        return callbacks
