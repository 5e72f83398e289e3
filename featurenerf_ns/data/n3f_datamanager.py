"""Per-scene data manager of N3F: nerfstudio's ray batches plus the teacher's features at every sampled pixel.

Any nerfstudio dataset (nerfstudio-data, blender-data, ...) works: the teacher (any of the registry) is run once
over the train and eval images through the on-disk teacher cache (:mod:`featurenerf_ns.teachers.cache`, one
:class:`~featurenerf_ns.teachers.cache.FrameSet` with a "train" and an "eval" group; config-checked and
resumable), its features L2-normalised and reduced by a PCA fitted on the train frames (N3F: 64 dimensions).
Each train batch gains ``batch["feature"]`` (R, D): the teacher map bilinearly sampled at the ray's pixel centre
(only the 4 cells around it are read from the memory-mapped cache); each eval image gains the whole map
upsampled to the image, (H, W, D).

Feature smoothing (:mod:`featurenerf_ns.model_components.feature_smoothing`) needs neighbouring rays: with
nerfstudio's own ``patch_size`` > 1 the first ``patch_fraction`` of the batch is square patches of rays
(:mod:`featurenerf_ns.data.patch_sampling`), the rest uniform pixels. With a mask
source (``masks``, :mod:`featurenerf_ns.data.mask_sources`) each train batch also gains ``batch["segment"]`` (R,)
int: the segment id of the ray's pixel in its train frame (-1: none), from labels computed once per frame.

``segment_pooling`` a > 0 (ours, with a mask source) replaces the train target by (1 - a) Phi(r) + a M_s, M_s the mean
teacher feature over the pixels of r's segment s in its frame (the teacher map bilinearly upsampled to the frame,
averaged per segment once at set-up): a target that is smooth inside a segment and steps at its boundary, where the
teacher's 14 px patches blur across object edges. No per-step cost (one gather).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.pixel_samplers import PatchPixelSamplerConfig, PixelSampler
from nerfstudio.utils.rich_utils import CONSOLE

from featurenerf_ns.data.mask_sources import MaskSourceConfig, frame_labels
from featurenerf_ns.data.patch_sampling import MixedPatchPixelSampler, patch_ray_count
from featurenerf_ns.model_components.map_sampling import bilinear_gather
from featurenerf_ns.teachers import TeacherSpec
from featurenerf_ns.teachers.cache import FrameSet, TeacherCache, open_cache


def _default_teacher() -> TeacherSpec:
    # N3F: PCA-64 of L2-normalised teacher features. 448 px input (32 x 32 map) instead of the registry's 224:
    # a scene's objects cover ~2-5% of a frame, 3-4 cells at 224.
    return TeacherSpec(pca_dim=64, input_size=448, mask_background=False)


@dataclass
class N3FDataManagerConfig(VanillaDataManagerConfig):
    _target: Type = field(default_factory=lambda: N3FDataManager)
    teacher: TeacherSpec = field(default_factory=_default_teacher)
    """The 2D teacher distilled into the scene (any registered teacher and its options); ``pca_dim`` = the
    distilled feature size (N3F: 64)."""
    l2_normalize: bool = True
    """Unit-normalise teacher features before the PCA (N3F)."""
    pca_frames: int = 20
    """Train frames (evenly spaced) the PCA is fitted on."""
    patch_fraction: float = 0.5
    """With ``patch_size`` > 1: the fraction of each batch drawn as square patches (first in the batch), the rest
    uniform pixels (1.0: all patches, nerfstudio's patch sampling; see data.patch_sampling for why not)."""
    masks: MaskSourceConfig = field(default_factory=MaskSourceConfig)
    """Image segments of the train frames for mask-guided feature smoothing (kind none: no ``segment`` in batches)."""
    segment_pooling: float = 0.0
    """Blend a in [0, 1] of the train target with the teacher's mean over the ray's segment (needs ``masks``):
    target = (1 - a) Phi + a M_segment; 0 = the teacher itself (N3F)."""

    @property
    def train_patch_rays(self) -> int:
        """Rays at the start of each train batch that form whole patch_size^2 patches (0 without patches): the one
        count the pixel sampler, the pipeline's checks and the model's smoothing term share."""
        return patch_ray_count(self.train_num_rays_per_batch, self.patch_size, self.patch_fraction)


class N3FDataManager(VanillaDataManager):
    config: N3FDataManagerConfig

    def __init__(
        self,
        config: N3FDataManagerConfig,
        device="cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)
        self.teacher_cache: Optional[TeacherCache] = None
        self._eval_maps: Dict[int, torch.Tensor] = {}
        self.segments: Optional[torch.Tensor] = None  # (N, H, W) int32 labels of the train frames
        self.segment_means: Optional[torch.Tensor] = None  # (N, K, D) teacher mean per frame and segment
        if not 0.0 <= config.segment_pooling <= 1.0:
            raise ValueError(f"n3f data: segment_pooling={config.segment_pooling} must be in [0, 1]")
        if config.segment_pooling > 0 and config.masks.kind == "none":
            raise ValueError(
                "n3f data: segment_pooling needs segments; set --pipeline.datamanager.masks.kind (superpixel, sam, gt)"
            )
        if test_mode != "inference":
            self.teacher_cache = self._open_cache()
            if config.masks.kind != "none":
                self.segments = self._train_segments()
                if config.segment_pooling > 0:
                    self.segment_means = self._segment_means()

    @property
    def teacher_feature_dim(self) -> int:
        """Channels of the distilled features (the model's feature head size)."""
        if self.teacher_cache is not None:
            return self.teacher_cache.dim
        return int(self.config.teacher.pca_dim or self.config.teacher.config().setup().dim)

    def frame_set(self) -> FrameSet:
        train = [Path(p) for p in self.train_dataset.image_filenames]
        evals = [Path(p) for p in self.eval_dataset.image_filenames]
        root = Path(self.config.data) if self.config.data is not None else train[0].parent.parent
        if root.is_file():
            root = root.parent
        n = len(train)
        k = min(self.config.pca_frames, n)
        pca = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
        return FrameSet(root, {"train": train, "eval": evals}, name="frames", pca_group="train", pca_frames=pca)

    def _open_cache(self) -> TeacherCache:
        spec = self.config.teacher
        teacher = spec.config().setup(device="cpu")
        CONSOLE.print(f"teacher: {teacher.label} ({teacher.dim} x {teacher.map_size()[0]} x {teacher.map_size()[1]})")
        frames = self.frame_set()
        cache = open_cache(
            frames,
            teacher,
            ["train", "eval"],
            spec.cache_dir,
            pca_dim=spec.pca_dim,
            build=True,
            pca_views=len(frames.pca_frames or []),
            l2_normalize=self.config.l2_normalize,
        )
        del teacher
        return cache

    @property
    def train_patch_rays(self) -> int:
        """See :attr:`N3FDataManagerConfig.train_patch_rays`."""
        return self.config.train_patch_rays

    def _get_pixel_sampler(self, dataset, num_rays_per_batch: int) -> PixelSampler:
        # patches + uniform rays (data.patch_sampling). The config's patch size is given up front: nerfstudio 1.1.5's
        # own PatchPixelSampler rounds the ray count with its default size 32 (256 rays at patch 8 -> 0 rays).
        c = self.config
        if c.patch_size > 1:
            n = patch_ray_count(num_rays_per_batch, c.patch_size, c.patch_fraction)
            return MixedPatchPixelSampler(
                PatchPixelSamplerConfig(patch_size=c.patch_size),
                n,
                patch_size=c.patch_size,
                num_rays_per_batch=num_rays_per_batch,
            )
        return super()._get_pixel_sampler(dataset, num_rays_per_batch)

    def _train_segments(self) -> torch.Tensor:
        from featurenerf_ns.utils.cli import progress_bar

        ds = self.train_dataset
        names = [str(p) for p in ds.image_filenames]
        root = self.frame_set().root
        with progress_bar(True, f"segments of {len(names)} train frames ({self.config.masks.kind})", len(names)) as adv:
            labels = frame_labels(
                self.config.masks, root, names, lambda i: ds.get_numpy_image(i), progress=lambda i, n: adv()
            )
        H, W = self._hw(ds, 0)
        if labels.shape[1:] != (H, W):
            raise ValueError(f"{root}: segment labels are {labels.shape[1:]}, the train frames {(H, W)}")
        return torch.from_numpy(labels)

    def _segment_means(self) -> torch.Tensor:
        """(N, K, D) float32: per train frame, the mean teacher feature (map upsampled to the frame) of each segment
        0..K-1 (K = most segments in a frame; absent ones stay 0 and are never read)."""
        assert self.teacher_cache is not None and self.segments is not None
        feats = self.teacher_cache.features("train")
        N, H, W = self.segments.shape
        K = int(self.segments.max()) + 1
        out = torch.zeros(N, max(K, 1), self.teacher_cache.dim)
        for i in range(N):
            fmap = torch.from_numpy(feats[i].astype("float32"))[None]
            up = F.interpolate(fmap, size=(H, W), mode="bilinear", align_corners=False)[0].reshape(fmap.shape[1], -1)
            lab = self.segments[i].reshape(-1).long()
            ok = lab >= 0
            sums = torch.zeros(out.shape[1], up.shape[0]).index_add_(0, lab[ok], up[:, ok].T)
            counts = torch.bincount(lab[ok], minlength=out.shape[1]).clamp(min=1)[:, None]
            out[i] = sums / counts
        return out

    # ------------------------------------------------------------------ batches
    def _features_at(self, group: str, indices: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """indices (R, 3) [image, row, col] -> (R, D) teacher features at the pixel centres."""
        assert self.teacher_cache is not None
        idx = indices.cpu()
        uv = torch.stack([idx[:, 2].float() + 0.5, idx[:, 1].float() + 0.5], dim=-1)
        return bilinear_gather(self.teacher_cache.features(group), idx[:, 0], uv, hw).to(self.device)

    def _hw(self, dataset, index: int) -> Tuple[int, int]:
        cams = dataset.cameras
        return int(cams.height[index]), int(cams.width[index])

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        ray_bundle, batch = super().next_train(step)
        if self.teacher_cache is not None:
            batch["feature"] = self._features_at("train", batch["indices"], self._hw(self.train_dataset, 0))
        if self.segments is not None:
            idx = batch["indices"].cpu().long()
            seg = self.segments[idx[:, 0], idx[:, 1], idx[:, 2]].long()
            batch["segment"] = seg.to(self.device)
            if self.segment_means is not None and "feature" in batch:
                a = self.config.segment_pooling
                pooled = self.segment_means[idx[:, 0], seg.clamp(min=0)].to(batch["feature"])  # its device, dtype
                inside = (seg >= 0)[:, None].to(pooled.device)
                batch["feature"] = torch.where(inside, (1 - a) * batch["feature"] + a * pooled, batch["feature"])
        return ray_bundle, batch

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        ray_bundle, batch = super().next_eval(step)
        if self.teacher_cache is not None:
            batch["feature"] = self._features_at("eval", batch["indices"], self._hw(self.eval_dataset, 0))
        return ray_bundle, batch

    def eval_feature_map(self, index: int) -> torch.Tensor:
        """(H, W, D) teacher features of eval image ``index``, bilinearly upsampled from the cached map."""
        if index not in self._eval_maps:
            assert self.teacher_cache is not None
            fmap = torch.from_numpy(self.teacher_cache.features("eval")[index].astype("float32"))[None]
            H, W = self._hw(self.eval_dataset, index)
            up = F.interpolate(fmap, size=(H, W), mode="bilinear", align_corners=False)[0]
            self._eval_maps[index] = up.permute(1, 2, 0).contiguous()
        return self._eval_maps[index]

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        camera, batch = super().next_eval_image(step)
        if self.teacher_cache is not None:
            batch["feature"] = self.eval_feature_map(int(batch["image_idx"])).to(self.device)
        return camera, batch
