"""N3F pipeline: nerfstudio's VanillaPipeline with the teacher hand-over, a time budget and the scene metrics.

Hand-over at setup (explicit, no metadata mutation): the data manager's teacher cache gives the model its feature
size, and a PCA-3 colouring fitted once on training teacher features (so ``feature_pca`` colours are the same in
every render; the checkpoint stores them). ``ns-eval`` adds, when the data is a generated scene
(:mod:`featurenerf_ns.data.procedural.scene`), the tasks of :mod:`featurenerf_ns.eval.scene_tasks` (retrieval mAP
of teacher-2D and N3F, 3D segmentation IoU, removal / extraction PSNR, amodal IoU) to PSNR/SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.data.n3f_datamanager import N3FDataManager, N3FDataManagerConfig
from featurenerf_ns.data.procedural.scene import SCENE_FILE
from featurenerf_ns.eval.scene_tasks import SceneTaskConfig, scene_metrics
from featurenerf_ns.models.n3f import N3FModel, N3FModelConfig
from featurenerf_ns.pipelines.builder import setup_pipeline
from featurenerf_ns.pipelines.callbacks import time_budget_callback
from featurenerf_ns.teachers.pca import PcaColors
from featurenerf_ns.utils import compat  # also registers torch.load safe globals for --load-dir / ns-eval
from featurenerf_ns.viewer.n3f_panel import N3FViewerPanel
from featurenerf_ns.viewer.patch import prefer_localhost_for_ns_viewer


@dataclass
class N3FPipelineConfig(VanillaPipelineConfig):
    _target: Type = field(default_factory=lambda: N3FPipeline)
    datamanager: N3FDataManagerConfig = field(default_factory=N3FDataManagerConfig)
    model: N3FModelConfig = field(default_factory=N3FModelConfig)
    max_train_minutes: Optional[float] = None
    """Stop training (and save the checkpoint) after this much wall-clock time; None = only max_num_iterations."""
    scene_tasks: SceneTaskConfig = field(default_factory=SceneTaskConfig)
    """Retrieval / segmentation / editing / amodal metrics of ns-eval on a generated scene."""


class N3FPipeline(VanillaPipeline):
    config: N3FPipelineConfig
    datamanager: N3FDataManager
    model: N3FModel

    def __init__(
        self, config: N3FPipelineConfig, device, test_mode="val", world_size=1, local_rank=0, grad_scaler=None
    ):
        compat.fill_missing_fields(config)  # a config.yml of an older run lacks the fields added since
        no_masks = config.datamanager.masks.kind == "none"
        if config.model.smoothing.needs_segments() and no_masks and test_mode != "inference":
            raise ValueError(
                "n3f: smoothing 'mask' needs image segments; pass --pipeline.datamanager.masks.kind superpixel "
                "(or sam with --pipeline.datamanager.masks.sam-checkpoint, or gt on a generated scene: oracle)"
            )
        # hand-overs (pipelines.builder): the teacher cache's feature size and the data manager's ray patches
        dm = config.datamanager
        patch_rays = dm.train_patch_rays
        if config.model.smoothing.kind != "none" and dm.patch_size > 1 and patch_rays == 0:
            raise ValueError(
                f"n3f: {dm.train_num_rays_per_batch} rays x patch fraction {dm.patch_fraction} hold no "
                f"{dm.patch_size} x {dm.patch_size} patch; raise --pipeline.datamanager.patch-fraction"
            )
        setup_pipeline(
            self, config, device, test_mode, world_size, local_rank, grad_scaler,
            model_kwargs={"patch_size": dm.patch_size, "patch_rays": patch_rays},
        )  # fmt: skip
        if self.datamanager.teacher_cache is not None:
            self.model.set_pca_colors(self._teacher_pca_colors())
        self.n3f = N3FViewerPanel(self)  # the viewer's controls ("Custom Elements / n3f")
        prefer_localhost_for_ns_viewer()

    def _teacher_pca_colors(self) -> PcaColors:
        """PCA-3 colours of up to 40,000 teacher feature vectors of evenly spaced train frames (deterministic)."""
        assert self.datamanager.teacher_cache is not None
        maps = self.datamanager.teacher_cache.features("train")  # (V, D, h, w)
        views = np.unique(np.linspace(0, len(maps) - 1, min(10, len(maps))).round().astype(int))
        feats = (
            torch.from_numpy(np.asarray(maps[views], dtype=np.float32)).permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        )
        return PcaColors.fit(feats[:: max(1, len(feats) // 40000)])

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        return super().get_training_callbacks(attrs) + [time_budget_callback(self.config.max_train_minutes, attrs)]

    @property
    def scene_root(self) -> Optional[Path]:
        """The generated scene this model was trained on (None for any other dataset)."""
        data = self.datamanager.config.data or self.datamanager.config.dataparser.data
        root = Path(data) if data is not None else None
        if root is not None and root.is_file():
            root = root.parent
        return root if root is not None and (root / SCENE_FILE).is_file() else None

    def get_average_image_metrics(self, data_loader, image_prefix: str, step=None, output_path=None, get_std=False):
        """nerfstudio's all-images loop, each batch given its teacher feature map (for ``feature_cosine``)."""
        if self.datamanager.teacher_cache is not None:
            data_loader = _WithTeacherFeatures(data_loader, self.datamanager)
        return super().get_average_image_metrics(data_loader, image_prefix, step, output_path, get_std)

    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path=None, get_std: bool = False):
        """PSNR/SSIM/feature cosine of the held-out frames (nerfstudio's loop), plus the scene tasks."""
        metrics = super().get_average_eval_image_metrics(step=step, output_path=output_path, get_std=get_std)
        if self.config.scene_tasks.enabled:
            root = self.scene_root
            if root is None:
                CONSOLE.print("[yellow]scene tasks skipped: the data is not a generated scene (no scene.json)[/yellow]")
            else:
                self.eval()
                metrics.update(scene_metrics(self, root, self.config.scene_tasks)[0])
                self.train()
        return metrics


class _WithTeacherFeatures:
    """A (camera, batch) loader of eval images whose batches gain ``feature`` (H, W, D), the teacher map."""

    def __init__(self, loader, datamanager: N3FDataManager):
        self.loader, self.dm = loader, datamanager

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for camera, batch in self.loader:
            batch = dict(batch, feature=self.dm.eval_feature_map(int(batch["image_idx"])).to(self.dm.device))
            yield camera, batch
