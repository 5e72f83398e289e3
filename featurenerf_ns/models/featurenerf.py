"""The FeatureNeRF nerfstudio Model: encoder + image-conditioned field, coarse/fine volume rendering of colour,
depth, accumulation, the distilled feature and the internal NeRF feature; L_rec + λ_d L_distill + λ_c L_coord.

Conditioning: each forward pass runs inside ``with model.conditioned(batch["source"])`` (the pipeline enters
it around every model call; the data manager's batches carry the source views of their objects); rays carry
their object's index (0..B-1) in ``camera_indices`` and arrive grouped per object with equal counts (the data
manager guarantees it; a single camera's rays are object 0).
"""

from __future__ import annotations

import contextlib
import typing
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components.ray_samplers import UniformSampler
from nerfstudio.model_components.renderers import AccumulationRenderer, DepthRenderer, RGBRenderer
from nerfstudio.model_components.scene_colliders import NearFarCollider
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from nerfstudio.utils.rich_utils import CONSOLE
from torch.nn import Parameter

from featurenerf_ns.data.layout import FAR, NEAR, FeatureNeRFDataError
from featurenerf_ns.encoders.image_encoder import EncoderConfig
from featurenerf_ns.fields.featurenerf_field import FeatureNeRFField, FieldConfig, SourceViews
from featurenerf_ns.model_components.feature_smoothing import FeatureSmoothingConfig, smoothing_loss
from featurenerf_ns.model_components.image_metrics import local_lpips
from featurenerf_ns.model_components.pdf_sampling import sample_pdf
from featurenerf_ns.models.viewer_routing import ViewerRouting
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory
from featurenerf_ns.utils.precision import ThreadPrecision, autocast_context, resolve_precision


@dataclass
class FeatureNeRFModelConfig(ModelConfig):
    _target: Type = field(default_factory=lambda: FeatureNeRFModel)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    smoothing: FeatureSmoothingConfig = field(default_factory=FeatureSmoothingConfig)
    """Smoothing of the rendered distilled feature on ray patches (``--pipeline.datamanager.patch-size`` > 1); tv
    or bilateral (mask-guided: N3F only so far). Added to the distillation loss at its scale: distill_weight x the
    term / D (the distillation MSE averages over the D channels, the term sums them)."""
    field: FieldConfig = field(default_factory=FieldConfig)
    near: float = NEAR
    far: float = FAR
    num_coarse_samples: int = 64
    num_importance_samples: int = 16
    num_depth_samples: int = 16
    """Fine samples drawn from N(coarse depth, depth_std) (official: 16, std 0.01)."""
    depth_std: float = 0.01
    distill: bool = True
    """Render and supervise the distilled teacher feature (False: the paper's 'NeRF feature' baseline)."""
    feature_dim: int = 384
    """Teacher feature dimension when the data manager does not provide one (it does, from the teacher cache)."""
    predict_coords: bool = True
    distill_weight: float = 0.25
    coord_weight: float = 0.25
    coord_loss: Literal["per_sample", "ray_mean"] = "per_sample"
    """per_sample: mean over samples of ||x_hat - x||^2 (paper); ray_mean: ||mean over a ray's samples of
    (x_hat - x)||^2 (official code)."""
    fine_reuses_coarse: bool = True
    """Fine pass: evaluate only the new (importance + depth) points and reuse the coarse points' field outputs
    (one shared field), bins = Voronoi cells of the merged points; False: re-evaluate every fine bin (official)."""
    background_color: Literal["black", "white"] = "black"
    enable_collider: bool = True
    collider_params: Optional[Dict[str, float]] = None
    precision: str = "auto"
    """Autocast of the encoder and the field, in training and renders (see :mod:`featurenerf_ns.utils.precision`):
    auto = bfloat16 on CPUs with bf16 matrix instructions (AMX / AVX512-BF16) and bf16 GPUs, float16 on other GPUs,
    float32 elsewhere; float32 forces the reference numerics. Master weights, compositing, losses and the sampling
    pdf are float32 in every case. Official: float32."""
    eval_num_rays_per_chunk: int = 256
    """Rays per chunk of camera renders (small chunks keep the field's activations in cache: 7.8 -> 3.7 s per
    128² image on 2 cores at 4096 -> 256)."""


class FeatureNeRFModel(ViewerRouting, Model):
    config: FeatureNeRFModelConfig

    def populate_modules(self):
        keep_freed_memory()  # large activations are reused instead of page-faulted in every step (utils/cpu_malloc)
        # (the base class would build a collider from collider_params; ours keeps the near plane at inference)
        c = self.config
        self.collider = NearFarCollider(c.near, c.far, reset_near_plane=False) if c.enable_collider else None
        self.patch_size = int(self.kwargs.get("patch_size", 1))  # from the pipeline: the data manager's patches
        self.patch_rays = int(self.kwargs.get("patch_rays", 0))  # at the start of each object's block of rays
        self.rays_per_object = int(self.kwargs.get("rays_per_object", 0))
        if c.smoothing.kind == "mask":
            raise ValueError("featurenerf: mask-guided smoothing is implemented for n3f only; use tv or bilateral")
        if c.smoothing.kind != "none" and (self.patch_size < 2 or self.patch_rays == 0):
            raise ValueError(
                f"featurenerf: feature smoothing {c.smoothing.kind!r} needs ray patches; pass "
                "--pipeline.datamanager.patch-size 8 (and enough rays per object for one patch)"
            )
        self.encoder = c.encoder.setup()
        teacher_dim = self.kwargs.get("teacher_feature_dim")  # from the pipeline (the data manager's cache)
        self.feature_dim = int(teacher_dim if teacher_dim is not None else c.feature_dim) if c.distill else 0
        self.field = FeatureNeRFField(c.field, self.encoder.out_dim, self.feature_dim, c.predict_coords)
        self.sampler = UniformSampler(num_samples=c.num_coarse_samples)
        self.renderer_rgb = RGBRenderer(background_color=c.background_color)
        self.renderer_depth = DepthRenderer(method="expected")
        self.renderer_accumulation = AccumulationRenderer()
        self._sources: Optional[SourceViews] = None
        self._maps: Optional[torch.Tensor] = None
        self._default_conditioning: Optional[Callable[[], Tuple[SourceViews, str]]] = None
        self._precision_local = ThreadPrecision()  # per-thread override: the viewer's "Render precision"
        from torchmetrics.functional import structural_similarity_index_measure

        self.ssim = structural_similarity_index_measure
        self.lpips = local_lpips()

    # ------------------------------------------------------------------ conditioning
    def set_sources(self, sources: SourceViews, maps: Optional[torch.Tensor] = None) -> None:
        """Condition the field on these source views until the next change (encoded lazily and cached while not
        training; ``maps``: their encoding, when already computed for exactly these views with these weights). For a
        scope that restores the previous conditioning use :meth:`conditioned`; the correspondence providers call
        this inside :meth:`evaluating`, which restores it on exit."""
        self._sources = sources.to(self.device)
        self._maps = maps

    def set_default_conditioning(self, make: Optional[Callable[[], Tuple[SourceViews, str]]]) -> None:
        """What a render made outside any conditioning uses: nerfstudio's ``ns-render`` calls
        ``get_outputs_for_camera`` on the bare model. ``make() -> (sources, description)`` runs once, at the first
        such render (not in a training forward, where a missing conditioning stays an error); the pipeline installs
        the first evaluated instance's eval source view. ``featurenerf-render`` chooses the instance and views."""
        self._default_conditioning = make

    @contextlib.contextmanager
    def conditioned(self, sources: Optional[SourceViews] = None, maps: Optional[torch.Tensor] = None):
        """``with model.conditioned(sources[, maps]):`` renders and queries inside see these source views (``maps``:
        their encoding, when already computed for exactly these views); without arguments the current conditioning
        is kept. On exit, whatever happened inside, the previous conditioning (e.g. training's batch) is restored."""
        saved = (self._sources, self._maps)
        if sources is not None:
            self._sources, self._maps = sources.to(self.device), maps
        try:
            yield self
        finally:
            self._sources, self._maps = saved

    @contextlib.contextmanager
    def evaluating(self):
        """``with model.evaluating():`` eval mode and :meth:`conditioned` (kept) for the block; the training mode and
        conditioning are restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            with self.conditioned():
                yield self
        finally:
            self.train(was_training)

    def feature_names(self) -> List[str]:
        """The per-point features this model has: ``nerf_feature`` (the internal MLP feature, before activation:
        the official choice), ``nerf_feature_relu`` (the same after the ReLU: the input of every head; across views
        the better descriptor in studies/diag13_anatomy) and, when it distils, ``feature`` (the distilled head)."""
        return ["nerf_feature", "nerf_feature_relu"] + (["feature"] if self.config.distill else [])

    def resolve_feature(self, name: str, where: str = "") -> str:
        """``name``, or for ``auto`` the descriptor our tools use by default (the distilled head where there is one,
        the better cross-view descriptor in studies/cpu30); one-line error naming ``where`` for an unknown one."""
        have = self.feature_names()
        feat = ("feature" if self.config.distill else "nerf_feature") if name == "auto" else name
        if feat not in have:
            raise FeatureNeRFDataError(
                f"{where or 'model'}: --feature {name} unknown for this model; choose {' or '.join(have)}"
            )
        return feat

    def get_sources(self) -> SourceViews:
        """The current conditioning (a method, not a property: nerfstudio's viewer reads every attribute)."""
        if self._sources is None and self._default_conditioning is not None and not self._grad_training():
            sources, what = self._default_conditioning()
            self.set_sources(sources)
            CONSOLE.print(
                f"[yellow]featurenerf: no conditioning set: rendering {what} (to choose: featurenerf-render "
                "--instance ID --source-views V)[/yellow]"
            )
        if self._sources is None:
            raise RuntimeError(
                "FeatureNeRFModel: no source views set; render inside `with model.conditioned(batch['source'])` "
                "(the pipeline does this for every model call)"
            )
        return self._sources

    def encoded_sources(self) -> torch.Tensor:
        src = self.get_sources()
        if self._maps is not None and not self._grad_training():
            return self._maps
        with self.autocast():
            maps = self.encoder(src.images.flatten(0, 1))
        if not self._grad_training():
            self._maps = maps
        return maps

    def active_precision(self) -> str:
        """The precision the encoder and field run in now (config, or the viewer's override), resolved for the
        device."""
        # configs saved before the option existed load without it: they ran float32
        override = self._precision_local.get()
        return resolve_precision(override or getattr(self.config, "precision", "float32"), self.device)

    @contextlib.contextmanager
    def precision_override(self, precision: Optional[str]):
        """Run this thread's forward passes in ``precision`` (None: the config's) without touching other threads
        (the viewer renders in its own thread while ns-train trains)."""
        prev = self._precision_local.get()
        self._precision_local.set(precision)
        try:
            yield
        finally:
            self._precision_local.set(prev)

    def autocast(self):
        """Autocast context of the encoder and the field (a no-op in float32)."""
        return autocast_context(self.device, self.active_precision())

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {
            "encoder": [p for p in self.encoder.parameters() if p.requires_grad],
            "field": list(self.field.parameters()),
        }

    # ------------------------------------------------------------------ rendering
    def _field(
        self,
        ray_samples: RaySamples,
        B: int,
        src: SourceViews,
        maps: torch.Tensor,
        per_sample_features: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Field outputs per sample (R, S, .) for rays grouped into B objects conditioned on ``src`` (encoded as
        ``maps``); the distilled feature only as its head input ``nerf_feature_relu`` unless ``per_sample_features``
        (rendering composites the basis, then applies the linear head)."""
        pos = ray_samples.frustums.get_positions()  # (R, S, 3)
        R, S = pos.shape[:2]
        dirs = ray_samples.frustums.directions
        with self.autocast():
            out = self.field(
                pos.reshape(B, (R // B) * S, 3),
                dirs.reshape(B, (R // B) * S, 3),
                maps,
                src,
                tuple(src.images.shape[-2:]),
                features=per_sample_features,
            )
        if self._grad_training():  # outputs no loss reads are neither cast nor composited
            out = {
                k: v
                for k, v in out.items()
                if k != "nerf_feature" and (k != "nerf_feature_relu" or self.config.distill)
            }
        # compositing, losses and the sampling pdf run in float32 whatever the field's precision
        return {k: v.float().reshape(R, S, -1) for k, v in out.items()}

    def _grad_training(self) -> bool:
        """A training forward whose outputs feed the losses (not an evaluation or a callback under no_grad)."""
        return self.training and torch.is_grad_enabled()

    def _render(
        self,
        ray_samples: RaySamples,
        f: Dict[str, torch.Tensor],
        parts: Optional[Tuple[torch.Tensor, List[Dict[str, torch.Tensor]]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Volume rendering of field outputs f (R, S, .) over ``ray_samples``. With ``parts`` = (order, [f_a, f_b]),
        f holds only the density in sample order and the outputs are those of f_a and f_b, whose concatenation
        along samples, sorted by ``order``, is the sample order: weights are mapped back instead of gathering the
        wide features (composited sums do not depend on the order)."""
        weights = ray_samples.get_weights(f["density"])
        if parts is None:
            w_parts, f_parts = [weights], [f]
        else:
            order, f_parts = parts
            w_u = torch.zeros_like(weights).scatter_(1, order[..., None], weights)
            w_parts = list(torch.split(w_u, [p["density"].shape[1] for p in f_parts], dim=1))

        def composite(key: str) -> torch.Tensor:
            # sum_s w[r, s] f[r, s, :] as a batched (1 x S) @ (S x C) product: no (R, S, C) temporary in the forward
            # and two products in the backward (fwd + bwd at 512 rays x 32 samples x 128: 2.0 -> 1.1 ms; x 96 x 512:
            # 35 -> 16 ms; equal to 2e-5)
            return typing.cast(
                torch.Tensor,
                sum(torch.bmm(w.transpose(1, 2), p[key]).squeeze(1) for w, p in zip(w_parts, f_parts)),
            )

        out = {
            "rgb": self.renderer_rgb(rgb=torch.cat([p["rgb"] for p in f_parts], 1), weights=torch.cat(w_parts, 1)),
            "depth": self.renderer_depth(weights=weights, ray_samples=ray_samples),
            "accumulation": self.renderer_accumulation(weights=weights),
            "weights": weights,
        }
        have = f_parts[0]  # a training forward's field outputs hold only what its losses read (see _field)
        if "nerf_feature" in have:
            out["nerf_feature"] = composite("nerf_feature")
        if "nerf_feature_relu" in have:
            out["nerf_feature_relu"] = composite("nerf_feature_relu")
        if self.config.distill:
            if "feature" in have:
                out["feature"] = composite("feature")
            else:
                out["feature"] = self.field.composite_feature(out["nerf_feature_relu"], out["accumulation"])
        if self.config.predict_coords and not self._grad_training():  # the coordinate loss reads per-sample residuals
            out["coords"] = composite("coords")
        return out

    def _groups(self, ray_bundle: RayBundle) -> Tuple[int, SourceViews, torch.Tensor]:
        """(object groups B, their source views, their encoder maps) for one forward over the bundle; the model's
        conditioning is not changed. A bundle whose rays all belong to one object k of a multi-object conditioning
        (a camera render, e.g. the viewer during training) is rendered against object k alone."""
        sources = self.get_sources()
        B = sources.num_objects
        R = ray_bundle.origins.shape[0]
        if B == 1:
            return 1, sources, self.encoded_sources()
        idx = ray_bundle.camera_indices
        if idx is None:
            raise ValueError(
                f"FeatureNeRFModel: {R} rays for {B} objects without camera_indices (object index per ray)"
            )
        idx = idx.view(-1).long()
        if R % B == 0 and torch.equal(idx, torch.arange(B, device=idx.device).repeat_interleave(R // B)):
            return B, sources, self.encoded_sources()
        k = int(idx[0]) % B
        if not bool((idx == idx[0]).all()):
            raise ValueError("FeatureNeRFModel: rays must be ordered by object (camera_indices 0..B-1, equal counts)")
        one = SourceViews(*(t[k : k + 1] for t in sources))
        if self._grad_training():  # encoder gradients flow: encode object k alone
            with self.autocast():
                return 1, one, self.encoder(one.images.flatten(0, 1))
        maps = self.encoded_sources()  # cached while not training: slice object k out of it
        return 1, one, maps.view(B, sources.num_views, *maps.shape[1:])[k].detach()

    def _fine_reusing_coarse(
        self,
        ray_bundle: RayBundle,
        coarse: RaySamples,
        f_c: Dict[str, torch.Tensor],
        t_new: torch.Tensor,
        edges: torch.Tensor,
        B: int,
        src: SourceViews,
        maps: torch.Tensor,
    ):
        """Fine samples = the coarse sample points (their field outputs reused) + the new points t_new (R, n), each
        evaluated once; the bins of the merged, sorted points are their Voronoi cells on [near, far] (contiguous,
        each containing its point). Returns (ray samples, density in sample order, (order, [f_c, f_new]), the
        coordinate residual of the new points)."""
        t_new = torch.maximum(torch.minimum(t_new, edges[..., -1:]), edges[..., :1])
        new = ray_bundle.get_ray_samples(bin_starts=t_new[..., None], bin_ends=t_new[..., None])
        f_n = self._field(new, B, src, maps)
        t_c = (coarse.frustums.starts + coarse.frustums.ends)[..., 0] / 2
        t_all, order = torch.sort(torch.cat([t_c, t_new], dim=-1), dim=-1)
        density = torch.cat([f_c["density"], f_n["density"]], dim=1).gather(1, order[..., None])
        mids = (t_all[..., 1:] + t_all[..., :-1]) / 2
        starts, ends = torch.cat([edges[..., :1], mids], -1), torch.cat([mids, edges[..., -1:]], -1)
        fine = ray_bundle.get_ray_samples(bin_starts=starts[..., None], bin_ends=ends[..., None])
        residual = f_n["coords"] - new.frustums.get_positions().detach() if self.config.predict_coords else None
        return fine, {"density": density}, (order, [f_c, f_n]), residual

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, torch.Tensor]:  # type: ignore[override]
        c = self.config
        B, src, maps = self._groups(ray_bundle)  # encoded once per forward: coarse and fine share it (and its grad)
        coarse = self.sampler(ray_bundle)
        f_c = self._field(coarse, B, src, maps)
        out_c = self._render(coarse, f_c)

        # fine: importance samples + Gaussian samples around the coarse depth, added to the coarse ones
        edges = torch.cat([coarse.frustums.starts[..., 0], coarse.frustums.ends[..., -1:, 0]], dim=-1)  # (R, S+1)
        w = out_c["weights"][..., 0].detach()
        extra = (
            [sample_pdf(edges, w, c.num_importance_samples, deterministic=not self.training)]
            if c.num_importance_samples
            else []
        )
        if c.num_depth_samples:
            depth = out_c["depth"].detach()
            noise = (
                torch.randn(depth.shape[0], c.num_depth_samples, device=depth.device)
                if self.training
                else torch.linspace(-1.5, 1.5, c.num_depth_samples, device=depth.device).expand(depth.shape[0], -1)
            )
            extra.append(depth + c.depth_std * noise)
        if c.fine_reuses_coarse and extra:
            fine, f_f, parts, res_new = self._fine_reusing_coarse(
                ray_bundle, coarse, f_c, torch.cat(extra, -1), edges, B, src, maps
            )
            out_f = self._render(fine, f_f, parts)
        else:  # official: every fine bin (coarse edges + extra samples) evaluated again
            t = torch.sort(torch.cat([edges] + extra, dim=-1), dim=-1).values
            t = torch.maximum(torch.minimum(t, edges[..., -1:]), edges[..., :1])
            fine = ray_bundle.get_ray_samples(bin_starts=t[..., :-1, None], bin_ends=t[..., 1:, None])
            f_f = self._field(fine, B, src, maps)
            out_f = self._render(fine, f_f)
            res_new = f_f["coords"] - fine.frustums.get_positions().detach() if c.predict_coords else None

        outputs = {k: v for k, v in out_f.items() if k != "weights"}
        outputs.update({f"{k}_coarse": v for k, v in out_c.items() if k in ("rgb", "feature", "depth")})
        if self.training and c.predict_coords:
            outputs["coord_residual_coarse"] = f_c["coords"] - coarse.frustums.get_positions().detach()
            outputs["coord_residual"] = res_new  # the fine pass's own points (reused coarse points are above)
        return outputs

    # ------------------------------------------------------------------ losses and metrics
    def _coord_loss(self, residual: torch.Tensor) -> torch.Tensor:
        if self.config.coord_loss == "ray_mean":
            return residual.mean(dim=-2).pow(2).sum(-1).mean()
        return residual.pow(2).sum(-1).mean()

    def get_metrics_dict(self, outputs, batch) -> Dict[str, torch.Tensor]:
        gt = batch["image"].to(self.device)
        m = {"psnr": -10.0 * torch.log10(F.mse_loss(outputs["rgb"].detach(), gt).clamp(min=1e-10))}
        if self.config.distill and "teacher_feature" in batch:
            m["distill_mse"] = F.mse_loss(outputs["feature"].detach(), batch["teacher_feature"].to(self.device))
        if "coord_residual" in outputs:
            m["coord_rmse"] = outputs["coord_residual"].detach().pow(2).sum(-1).mean().sqrt()
        return m

    def _smoothing_loss(self, outputs) -> torch.Tensor:
        """The smoothing term over the patch rays of every object's block (R rays each, the first patch_rays)."""
        f = outputs["feature"]
        R, n = self.rays_per_object, self.patch_rays
        idx = (torch.arange(f.shape[0] // R, device=f.device)[:, None] * R + torch.arange(n, device=f.device)).reshape(
            -1
        )
        rgb = outputs["rgb"][idx]
        depth = outputs["depth"][idx] if "depth" in outputs else None
        term = smoothing_loss(f[idx].float(), self.config.smoothing, self.patch_size, None, rgb, depth)
        return self.config.distill_weight * term / f.shape[-1]

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        c = self.config
        gt = batch["image"].to(self.device)
        losses = {
            "rgb_loss_coarse": F.mse_loss(outputs["rgb_coarse"], gt),
            "rgb_loss_fine": F.mse_loss(outputs["rgb"], gt),
        }
        if c.distill and "teacher_feature" in batch:
            tf = batch["teacher_feature"].to(self.device)
            losses["distill_loss"] = c.distill_weight * (
                F.mse_loss(outputs["feature_coarse"], tf) + F.mse_loss(outputs["feature"], tf)
            )
        if c.distill and c.smoothing.kind != "none" and self.training and "feature" in outputs:
            losses["feature_smooth_loss"] = self._smoothing_loss(outputs)
        if c.predict_coords and "coord_residual" in outputs and c.coord_weight > 0:
            losses["coord_loss"] = c.coord_weight * (
                self._coord_loss(outputs["coord_residual_coarse"]) + self._coord_loss(outputs["coord_residual"])
            )
        return losses

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
        gt = batch["image"].to(self.device)[..., :3]
        pred = outputs["rgb"].clamp(0, 1)
        g, p = gt.permute(2, 0, 1)[None], pred.permute(2, 0, 1)[None]
        metrics = {
            "psnr": float(-10.0 * torch.log10(F.mse_loss(pred, gt).clamp(min=1e-10))),
            "ssim": float(self.ssim(p, g, data_range=1.0)),
        }
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(p * 2 - 1, g * 2 - 1))
        images = {
            "img": torch.cat([gt, pred], dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
        }
        return metrics, images
