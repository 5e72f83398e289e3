"""N3F (Tschernezki et al., 3DV 2022) as a nerfstudio model: nerfacto's radiance field plus a distilled feature field.

Rendering (R rays, S samples per ray, D = teacher PCA dimension):

    w (R, S)   nerfacto's compositing weights of the final samples
    F(r) = sum_k stopgrad(w_k) f(x_k)                     (R, D)   rendered feature
    loss = rgb MSE + nerfacto's proposal / distortion terms + feature_weight * mean_r ||F(r) - Phi(r)||^2

``stopgrad(w)``: the feature loss does not move density (N3F and the smoothing paper); the feature branch
(:mod:`featurenerf_ns.fields.n3f_field`) has its own parameters, so the feature loss leaves the radiance field
untouched altogether. Staged training: for ``feature_start_step`` steps only the radiance field trains (N3F trains
RGB first, then distils; it reports that from-scratch distillation ends similar but slower).

``feature_weight``: N3F used 0.001 on vanilla NeRF with sum-of-squares losses and 1.0 on NeuralDiff. Here the
feature branch is trained alone by its own loss under Adam, which is invariant to a constant loss scale, so the
weight mostly sets how the logged total is composed; default 1.0.

Feature smoothing (``smoothing``, :mod:`featurenerf_ns.model_components.feature_smoothing`): the first
``patch_rays`` rays of a train batch are ray patches (the pipeline hands over the data manager's patch size and
count); a TV, bilateral or in-segment-blur term of their rendered feature joins the feature loss as
``feature_smooth_loss``; it reaches only the feature branch too.

Outputs besides nerfacto's: ``feature`` (R, D) and ``feature_pca`` (R, 3), the rendered feature coloured by a
PCA-3 fitted once on training teacher features (:meth:`set_pca_colors`; saved in the checkpoint, so colours are
the same in every frame, render and session). Inside ``with model.editing(SegmentEdit(...))`` the densities of
the final samples are masked by a feature-space segment (remove / extract, N3F Sec. 4.3) before compositing.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.model_components.losses import scale_gradients_by_distance_squared
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor
from torch.nn import Parameter

from featurenerf_ns.fields.n3f_field import N3FFeatureField
from featurenerf_ns.model_components.feature_smoothing import FeatureSmoothingConfig, smoothing_loss
from featurenerf_ns.model_components.image_metrics import offline_lpips
from featurenerf_ns.model_components.segment_edit import SegmentEdit
from featurenerf_ns.models.viewer_routing import ViewerRouting
from featurenerf_ns.teachers.pca import FeaturePCA, PcaColors
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory


@dataclass
class N3FModelConfig(NerfactoModelConfig):
    _target: Type = field(default_factory=lambda: N3FModel)
    feature_weight: float = 1.0
    """lambda of the feature loss (see the module docstring for the official values)."""
    feature_start_step: int = 0
    """Radiance field only before this step (N3F: RGB first, then distillation)."""
    feature_num_levels: int = 12
    feature_max_res: int = 1024
    feature_log2_hashmap_size: int = 19
    feature_features_per_level: int = 4
    feature_hidden_dim: int = 64
    feature_num_layers: int = 2
    smoothing: FeatureSmoothingConfig = field(default_factory=FeatureSmoothingConfig)
    """Smoothing regulariser of the rendered feature (needs ``--pipeline.datamanager.patch-size`` > 1)."""


class N3FModel(ViewerRouting, NerfactoModel):
    config: N3FModelConfig
    pca_mean: Tensor
    pca_components: Tensor
    pca_lo: Tensor
    pca_hi: Tensor

    def populate_modules(self):
        keep_freed_memory()  # large activations are reused instead of page-faulted in every step (utils/cpu_malloc)
        if self.config.predict_normals:
            raise ValueError("n3f: predict_normals is not supported; pass --pipeline.model.predict-normals False")
        with offline_lpips():  # nerfacto builds LPIPS, which would download AlexNet: local weights or none
            super().populate_modules()
        dim = self.kwargs.get("teacher_feature_dim")  # from the pipeline: the data manager's teacher cache
        if dim is None:
            raise ValueError("n3f: the model needs teacher_feature_dim from its pipeline (N3FPipeline)")
        c = self.config
        self.feature_field = N3FFeatureField(
            self.scene_box.aabb,
            int(dim),
            spatial_distortion=self.field.spatial_distortion,
            num_levels=c.feature_num_levels,
            max_res=c.feature_max_res,
            log2_hashmap_size=c.feature_log2_hashmap_size,
            features_per_level=c.feature_features_per_level,
            hidden_dim=c.feature_hidden_dim,
            num_layers=c.feature_num_layers,
            implementation=c.implementation,
        )
        self.patch_size = int(self.kwargs.get("patch_size", 1))  # from the pipeline: the data manager's patches,
        self.patch_rays = int(self.kwargs.get("patch_rays", 0))  # the first patch_rays rays of a train batch
        if c.smoothing.kind != "none" and self.patch_size < 2:
            raise ValueError(
                f"n3f: feature smoothing {c.smoothing.kind!r} needs ray patches; "
                "pass --pipeline.datamanager.patch-size 8"
            )
        d = int(dim)
        self.register_buffer("pca_mean", torch.zeros(d))
        self.register_buffer("pca_components", torch.zeros(3, d))
        self.register_buffer("pca_lo", torch.zeros(3))
        self.register_buffer("pca_hi", torch.ones(3))
        self.step = 0
        self.edit: Optional[SegmentEdit] = None

    # ------------------------------------------------------------------ setup helpers
    def set_pca_colors(self, colors: PcaColors) -> None:
        self.pca_mean.copy_(torch.as_tensor(colors.pca.mean))
        self.pca_components.copy_(torch.as_tensor(colors.pca.components))
        self.pca_lo.copy_(colors.lo)
        self.pca_hi.copy_(colors.hi)

    def pca_colors(self) -> PcaColors:
        pca = FeaturePCA(self.pca_mean.cpu().numpy(), self.pca_components.cpu().numpy(), torch.zeros(3).numpy())
        return PcaColors(pca, self.pca_lo.cpu(), self.pca_hi.cpu())

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        groups["fields"] = groups["fields"] + list(self.feature_field.parameters())
        return groups

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        def set_step(step: int) -> None:
            self.step = step

        callbacks = super().get_training_callbacks(training_callback_attributes)
        callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step))
        return callbacks

    @contextmanager
    def editing(self, edit: Optional[SegmentEdit]) -> Iterator[None]:
        """Renders inside the scope apply ``edit`` to the density (None: no edit); the previous edit is restored."""
        previous, self.edit = self.edit, edit
        try:
            yield
        finally:
            self.edit = previous

    def _edited(self, density_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """A proposal network's density function with the current edit applied: removed matter must also vanish
        from the proposal densities, otherwise the final samples stay packed on the removed surface and the
        space behind it is never sampled (the removed object leaves a dark ghost)."""
        edit = self.edit
        assert edit is not None

        def edited(positions: Tensor, times: Optional[Tensor] = None) -> Tensor:
            sigma = density_fn(positions) if times is None else density_fn(positions, times)
            return sigma * edit.density_scale(self.feature_field(positions), positions).to(sigma)

        return edited

    @property
    def distilling(self) -> bool:
        return not self.training or self.step >= self.config.feature_start_step

    # ------------------------------------------------------------------ rendering
    def get_outputs(self, ray_bundle: RayBundle):  # type: ignore[override]
        if self.training:
            self.camera_optimizer.apply_to_raybundle(ray_bundle)
        density_fns = self.density_fns if self.edit is None else [self._edited(fn) for fn in self.density_fns]
        ray_samples, weights_list, ray_samples_list = self.proposal_sampler(ray_bundle, density_fns=density_fns)
        field_outputs = self.field.forward(ray_samples)
        if self.config.use_gradient_scaling:
            field_outputs = scale_gradients_by_distance_squared(field_outputs, ray_samples)
        positions = ray_samples.frustums.get_positions()
        feats = self.feature_field(positions) if self.distilling else None  # (R, S, D)
        density = field_outputs[FieldHeadNames.DENSITY]
        if self.edit is not None and feats is not None:
            density = density * self.edit.density_scale(feats, positions)
        weights = ray_samples.get_weights(density)
        weights_list.append(weights)
        ray_samples_list.append(ray_samples)
        outputs: Dict[str, Any] = {
            "rgb": self.renderer_rgb(rgb=field_outputs[FieldHeadNames.RGB], weights=weights),
            "accumulation": self.renderer_accumulation(weights=weights),
            "expected_depth": self.renderer_expected_depth(weights=weights, ray_samples=ray_samples),
        }
        with torch.no_grad():
            outputs["depth"] = self.renderer_depth(weights=weights, ray_samples=ray_samples)
        if self.training:
            outputs["weights_list"] = weights_list
            outputs["ray_samples_list"] = ray_samples_list
        for i in range(self.config.num_proposal_iterations):
            outputs[f"prop_depth_{i}"] = self.renderer_depth(weights=weights_list[i], ray_samples=ray_samples_list[i])
        if feats is not None:
            outputs["feature"] = (weights.detach().float() * feats).sum(dim=-2)
            if not self.training:
                outputs["feature_pca"] = self.pca_colors()(outputs["feature"].cpu()).to(outputs["feature"].device)
        return outputs

    # ------------------------------------------------------------------ 3D queries
    @torch.no_grad()
    def query(self, positions: Tensor, chunk: int = 65536) -> Tuple[Tensor, Tensor]:
        """positions (N, 3) in the model's frame -> (features (N, D), density (N,))."""
        feats, dens = [], []
        for s in range(0, positions.shape[0], chunk):
            p = positions[s : s + chunk]
            feats.append(self.feature_field(p))
            dens.append(self.field.density_fn(p[:, None, :]).reshape(-1))
        return torch.cat(feats), torch.cat(dens)

    # ------------------------------------------------------------------ losses and metrics
    def get_metrics_dict(self, outputs, batch):
        metrics = super().get_metrics_dict(outputs, batch)
        if "feature" in outputs and "feature" in batch:
            with torch.no_grad():
                target = batch["feature"].to(outputs["feature"])
                metrics["feature_mse"] = ((outputs["feature"] - target) ** 2).sum(-1).mean()
        return metrics

    def get_loss_dict(self, outputs, batch, metrics_dict=None):
        losses = super().get_loss_dict(outputs, batch, metrics_dict)
        if "feature" in outputs and "feature" in batch:
            target = batch["feature"].to(outputs["feature"])
            losses["feature_loss"] = self.config.feature_weight * ((outputs["feature"] - target) ** 2).sum(-1).mean()
            sm = self.config.smoothing
            n = self.patch_rays
            if sm.kind != "none" and self.training and 0 < n <= outputs["feature"].shape[0]:
                seg = batch.get("segment")
                losses["feature_smooth_loss"] = self.config.feature_weight * smoothing_loss(
                    outputs["feature"][:n],
                    sm,
                    self.patch_size,
                    seg[:n] if seg is not None else None,
                    outputs["rgb"][:n],
                    outputs["depth"][:n] if "depth" in outputs else None,
                )
        return losses

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR / SSIM (LPIPS with local weights), feature cosine to the teacher; images: rgb, accumulation, depth,
        teacher | rendered feature in the stable PCA colours."""
        gt = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        pred = outputs["rgb"]
        a, b = torch.moveaxis(gt, -1, 0)[None], torch.moveaxis(pred, -1, 0)[None]
        metrics = {"psnr": float(self.psnr(a, b).item()), "ssim": float(self.ssim(a, b))}
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(a, b))
        images = {
            "img": torch.cat([gt, pred], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        if "feature" in outputs and "feature" in batch:
            f = outputs["feature"]
            target = batch["feature"].to(f)
            metrics["feature_cosine"] = float(torch.nn.functional.cosine_similarity(f, target, dim=-1).mean())
            colors = self.pca_colors()
            images["feature_pca"] = torch.cat([colors(target.cpu()), colors(f.cpu())], dim=1)
        return metrics, images
