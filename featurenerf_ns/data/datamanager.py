"""Multi-instance DataManager: per step, B objects x (N source views, R target rays with teacher features).

Streams from disk with bounded memory: decoded instances live in an LRU of ``max_cached_instances`` (uint8
RGBA at the training resolution), teacher maps are memory-mapped fp16 files from the teacher cache (built on
first use). Object sampling is seeded by (seed, rank, step), so runs are reproducible, resume continues the
same stream, and each rank of a multi-device launch draws from its own shard of the instances.

What nerfstudio's trainer, viewer and ns-eval need is provided too: ``train_dataset`` (all train images as one
camera set, for the viewer), ``eval_dataset``, ``next_eval_image`` and ``fixed_indices_eval_dataloader`` (novel
views of held-out instances rendered from one input view).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.utils.rich_utils import CONSOLE
from torch.nn import Parameter

from featurenerf_ns.cameras import camera_rays, pinhole_camera
from featurenerf_ns.data.co3d_dataparser import Co3DDataParserConfig
from featurenerf_ns.data.dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.data.instances import CategoryData, InstanceRecord, load_rgba
from featurenerf_ns.data.patch_sampling import patch_ray_count
from featurenerf_ns.fields.featurenerf_field import SourceViews
from featurenerf_ns.model_components.map_sampling import bilinear_gather
from featurenerf_ns.teachers import TeacherSpec
from featurenerf_ns.teachers.cache import open_cache, open_cache_without_teacher

if TYPE_CHECKING:
    from featurenerf_ns.teachers.cache import TeacherCache


if TYPE_CHECKING:
    FeatureNeRFDataParsers = FeatureNeRFDataParserConfig
else:  # ns-train <method> [options] {featurenerf-data,co3d-data} [dataparser options], as nerfstudio's own methods
    FeatureNeRFDataParsers = tyro.conf.OmitSubcommandPrefixes[
        tyro.extras.subcommand_type_from_defaults(
            {"featurenerf-data": FeatureNeRFDataParserConfig(), "co3d-data": Co3DDataParserConfig()},
            prefix_names=False,
        )
    ]
"""The dataparsers a FeatureNeRF data manager reads (both yield a CategoryData): tyro subcommands of ns-train."""


@dataclass
class FeatureNeRFDataManagerConfig(DataManagerConfig):
    _target: Type = field(default_factory=lambda: FeatureNeRFDataManager)
    dataparser: FeatureNeRFDataParsers = field(default_factory=FeatureNeRFDataParserConfig)
    objects_per_batch: int = 4
    """B: objects per step (official 4)."""
    rays_per_object: int = 128
    """R: target rays per object (official 128; paper 1024)."""
    num_source_views: int = 1
    """N: source views per object (official 1)."""
    image_size: Optional[int] = None
    """Train/eval at this square resolution (area-resized; None = as stored, 128 for the benchmark)."""
    bbox_sampling_steps: int = 100_000
    """Draw target rays inside the foreground bounding box for the first steps (official: 100k)."""
    foreground_ray_fraction: float = 0.0
    """Fraction of each object's target rays drawn uniformly from its foreground (alpha) pixels; the rest follow
    the bbox / whole-image rule. 4-13% of a benchmark image is object, so uniform rays spend most of the batch
    on empty background. Official: 0 (bbox only)."""
    patch_size: int = 1
    """With > 1 (feature smoothing, model_components.feature_smoothing): the first ``patch_fraction`` of each
    object's rays (whole patches) are p x p patches, each around a random foreground pixel of a random view."""
    patch_fraction: float = 0.5
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    teacher_cache_only: bool = False
    """Open the existing teacher cache without loading the teacher network (for a machine without the teacher's
    weights, e.g. an offline GPU machine): the cache must be complete and built with these teacher settings; the
    weights' sha256 is taken from its manifest (:func:`featurenerf_ns.teachers.cache.open_cache_without_teacher`)."""
    max_cached_instances: int = 256
    """LRU size of decoded instances kept in memory (3.3 MB each at 128^2 x 50 views)."""
    eval_split: Literal["val", "test"] = "test"
    eval_num_instances: Optional[int] = 4
    """Held-out instances rendered by ns-eval / the eval callback (None = all of the split)."""
    eval_source_view: int = 0
    """The one input view of an eval instance."""
    eval_target_views: Tuple[int, ...] = (10, 20, 30, 40)
    """Novel views rendered per eval instance (indices modulo the number of views)."""
    seed: int = 0

    @property
    def patch_rays(self) -> int:
        """Rays at the start of each object's block that form whole patches (0 without patches): the one count the
        ray draw and the model's smoothing term share."""
        return patch_ray_count(self.rays_per_object, self.patch_size, self.patch_fraction)


class _Instance:
    """Decoded views of one instance at the training resolution."""

    def __init__(self, rec: InstanceRecord, size: Optional[int]):
        rgba = torch.from_numpy(np.stack([load_rgba(p) for p in rec.image_paths])).permute(0, 3, 1, 2)  # (V, 4, H, W)
        if size is not None and tuple(rgba.shape[-2:]) != (size, size):
            rgba = F.interpolate(rgba, size=(size, size), mode="area")
        self.rgba = (rgba.clamp(0, 1) * 255).round().to(torch.uint8)
        V, _, H, W = self.rgba.shape
        self.hw = (H, W)
        scale = W / rec.width
        self.focal = rec.focal * scale
        self.c2w = torch.as_tensor(rec.poses, dtype=torch.float32)
        fg = self.rgba[:, 3] > 127
        ys, xs = fg.any(2), fg.any(1)
        bbox = []
        for v in range(V):
            yy, xx = torch.nonzero(ys[v])[:, 0], torch.nonzero(xs[v])[:, 0]
            bbox.append(
                [int(xx.min()), int(yy.min()), int(xx.max()), int(yy.max())] if len(yy) else [0, 0, W - 1, H - 1]
            )
        self.bbox = torch.tensor(bbox)  # (V, 4) x0, y0, x1, y1 inclusive
        counts = fg.flatten(1).sum(1)
        self.fg_flat = torch.nonzero(fg.flatten(1))[:, 1]  # foreground pixel indices (y * W + x), view after view
        self.fg_start = torch.cumsum(counts, 0) - counts  # (V,) where each view's indices begin
        self.fg_count = counts  # (V,)

    def rgb(self, views) -> torch.Tensor:
        return self.rgba[views, :3].float() / 255.0

    def foreground_pixels(self, views: torch.Tensor, rng: np.random.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """One uniform foreground pixel of each of ``views`` (N,): flat indices y * W + x (N,) and whether the view
        has a foreground pixel at all (N,) bool (where it has none, the index is meaningless). One ``rng.random(N)``
        call."""
        cnt = self.fg_count[views]
        k = (torch.from_numpy(rng.random(len(views))).float() * cnt).long().clamp(max=(cnt - 1).clamp(min=0))
        if not len(self.fg_flat):
            return k, cnt > 0
        return self.fg_flat[(self.fg_start[views] + k).clamp(max=len(self.fg_flat) - 1)], cnt > 0


class FeatureNeRFDataManager(DataManager):
    config: FeatureNeRFDataManagerConfig
    train_dataset: InputDataset
    eval_dataset: InputDataset
    teacher_cache: Optional[TeacherCache]

    def __init__(
        self,
        config: FeatureNeRFDataManagerConfig,
        device: Union[torch.device, str] = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        distill: bool = True,
        **kwargs,
    ):
        """``distill``: load teacher features (the model's ``distill``, passed by the pipeline: its one home);
        False for the no-distill baseline (no teacher, no cache)."""
        self.config = config
        self.device = device
        self.world_size, self.local_rank = world_size, local_rank
        self.test_mode = test_mode
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser = config.dataparser.setup()
        self.cat: CategoryData = self.dataparser.category_data
        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        self.train_dataset = InputDataset(self.train_dataparser_outputs)
        eval_outputs = self.dataparser.get_dataparser_outputs(split=config.eval_split)
        self.eval_dataset = InputDataset(eval_outputs)
        self.train_ids: List[str] = list(self.train_dataparser_outputs.metadata["instance_ids"])
        ids = list(eval_outputs.metadata["instance_ids"])
        self.eval_ids: List[str] = ids[: config.eval_num_instances] if config.eval_num_instances else ids
        if len(self.train_ids) < world_size:
            raise ValueError(
                f"{self.cat.layout.split_file}: {len(self.train_ids)} train instances for {world_size} devices; use "
                "fewer devices or more data"
            )
        self.rank_ids = self.train_ids[local_rank::world_size]
        self._lru: "OrderedDict[str, _Instance]" = OrderedDict()
        self.teacher_cache = None
        if distill and test_mode != "inference":
            self.teacher_cache = self._open_teacher_cache()
        super().__init__()
        self.fixed_indices_eval_dataloader = FixedEvalImages(self, self.eval_ids)

    @property
    def teacher_feature_dim(self) -> Optional[int]:
        """Channels of the cached teacher features (the model's distilled head size); None without a teacher."""
        return self.teacher_cache.dim if self.teacher_cache is not None else None

    # ------------------------------------------------------------------ data
    def _open_teacher_cache(self):

        spec = self.config.teacher
        if self.config.teacher_cache_only:
            cache = open_cache_without_teacher(self.cat, spec.config(), self.train_ids, spec.cache_dir, spec.pca_dim)
            CONSOLE.print(
                f"teacher: {cache.label} ({cache.dim} x {cache.map_size[0]} x {cache.map_size[1]}), from its cache "
                f"only (weights sha256 {str(cache.identity.get('weights_sha256'))[:12]} as recorded there)"
            )
            return cache
        teacher = spec.config().setup(device="cpu")
        CONSOLE.print(f"teacher: {teacher.label} ({teacher.dim} x {teacher.map_size()[0]} x {teacher.map_size()[1]})")
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized() and self.world_size > 1
        if distributed:  # rank 0 builds/validates the cache, the others wait for it, then everyone opens it
            if self.local_rank == 0:
                open_cache(self.cat, teacher, self.train_ids, spec.cache_dir, pca_dim=spec.pca_dim, build=True)
            dist.barrier()
        cache = open_cache(
            self.cat, teacher, self.train_ids, spec.cache_dir, pca_dim=spec.pca_dim, build=not distributed
        )
        del teacher
        return cache

    @property
    def feature_dim(self) -> int:
        return self.teacher_cache.dim if self.teacher_cache is not None else 0

    def instance(self, inst: str) -> _Instance:
        if inst in self._lru:
            self._lru.move_to_end(inst)
            return self._lru[inst]
        item = _Instance(self.cat.instance(inst), self.config.image_size)
        self._lru[inst] = item
        while len(self._lru) > max(1, self.config.max_cached_instances):
            self._lru.popitem(last=False)
        return item

    def sources(self, insts: List[_Instance], views: torch.Tensor) -> SourceViews:
        """views (B, N) -> SourceViews on the data manager's device."""
        images = torch.stack([it.rgb(v) for it, v in zip(insts, views)])
        c2w = torch.stack([it.c2w[v] for it, v in zip(insts, views)])
        focal = torch.tensor([[it.focal] * views.shape[1] for it in insts], dtype=torch.float32)
        center = torch.tensor([[[it.hw[1] / 2, it.hw[0] / 2]] * views.shape[1] for it in insts], dtype=torch.float32)
        return SourceViews(images, c2w, focal, center).to(self.device)

    def _ray_batch(self, ids: List[str], step: int, rng: np.random.Generator, bbox: bool, with_teacher: bool):
        c = self.config
        R = c.rays_per_object
        insts = [self.instance(i) for i in ids]
        origins, dirs, rgbs, feats, src_views = [], [], [], [], []
        for b, (inst_id, it) in enumerate(zip(ids, insts)):
            V = it.rgba.shape[0]
            src_views.append(torch.from_numpy(rng.choice(V, size=c.num_source_views, replace=V < c.num_source_views)))
            view = torch.from_numpy(rng.integers(0, V, size=R))
            H, W = it.hw
            if bbox:
                box = it.bbox[view]
                u = box[:, 0] + (torch.from_numpy(rng.random(R)).float() * (box[:, 2] - box[:, 0] + 1)).long()
                v = box[:, 1] + (torch.from_numpy(rng.random(R)).float() * (box[:, 3] - box[:, 1] + 1)).long()
            else:
                u = torch.from_numpy(rng.integers(0, W, size=R))
                v = torch.from_numpy(rng.integers(0, H, size=R))
            n_fg = int(round(c.foreground_ray_fraction * R))
            if n_fg:  # the first n_fg rays: a uniform foreground pixel of their view (views without one keep theirs)
                flat, has = it.foreground_pixels(view[:n_fg], rng)
                u[:n_fg] = torch.where(has, flat % W, u[:n_fg])
                v[:n_fg] = torch.where(has, flat // W, v[:n_fg])
            if c.patch_size > 1:
                self._patches(it, rng, view, u, v)
            o, d = camera_rays(it.c2w[view], it.focal, it.hw, u.float(), v.float())
            origins.append(o)
            dirs.append(d)
            rgbs.append(it.rgba[view, :3, v, u].float() / 255.0)
            if with_teacher:
                assert self.teacher_cache is not None  # with_teacher is only passed when there is a cache
                feats.append(
                    bilinear_gather(
                        self.teacher_cache.features(inst_id), view, torch.stack([u, v], -1).float() + 0.5, it.hw
                    )
                )
        n = len(ids) * R
        bundle = RayBundle(
            origins=torch.cat(origins),
            directions=torch.cat(dirs),
            pixel_area=torch.full((n, 1), 1e-4),
            camera_indices=torch.arange(len(ids)).repeat_interleave(R)[:, None],
        ).to(self.device)
        sources = self.sources(insts, torch.stack(src_views))
        batch = {"image": torch.cat(rgbs).to(self.device), "source": sources, "instance_ids": list(ids)}
        if with_teacher:
            batch["teacher_feature"] = torch.cat(feats).to(self.device)
        return bundle, batch

    @property
    def patch_rays(self) -> int:
        """See :attr:`FeatureNeRFDataManagerConfig.patch_rays`."""
        return self.config.patch_rays

    def _patches(self, it: "_Instance", rng: np.random.Generator, view, u, v) -> None:
        """Overwrite the first ``patch_rays`` rays (in place) with p x p patches, row-major, one view each."""
        p, n = self.config.patch_size, self.patch_rays // (self.config.patch_size**2)
        if n == 0:
            return
        H, W = it.hw
        V = it.rgba.shape[0]
        pv = torch.from_numpy(rng.integers(0, V, size=n))
        flat, has = it.foreground_pixels(pv, rng)
        cu = torch.where(has, flat % W, torch.from_numpy(rng.integers(0, W, size=n)))
        cv = torch.where(has, flat // W, torch.from_numpy(rng.integers(0, H, size=n)))
        u0 = (cu - p // 2).clamp(0, W - p)
        v0 = (cv - p // 2).clamp(0, H - p)
        dy, dx = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
        view[: n * p * p] = pv.repeat_interleave(p * p)
        u[: n * p * p] = (u0[:, None] + dx.reshape(1, -1)).reshape(-1)
        v[: n * p * p] = (v0[:, None] + dy.reshape(1, -1)).reshape(-1)

    def _rng(self, step: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, stream, self.local_rank, step])

    # ------------------------------------------------------------------ nerfstudio interface
    def setup_train(self):
        pass

    def setup_eval(self):
        pass

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        rng = self._rng(step, 0)
        k = self.config.objects_per_batch
        ids = [self.rank_ids[i] for i in rng.choice(len(self.rank_ids), size=k, replace=len(self.rank_ids) < k)]
        return self._ray_batch(
            ids, step, rng, bbox=step < self.config.bbox_sampling_steps, with_teacher=self.teacher_cache is not None
        )

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        self.eval_count += 1
        rng = self._rng(step, 1)
        k = min(self.config.objects_per_batch, len(self.eval_ids))
        ids = [self.eval_ids[i] for i in rng.choice(len(self.eval_ids), size=k, replace=False)]
        return self._ray_batch(ids, step, rng, bbox=False, with_teacher=False)

    def eval_image(self, inst_id: str, target_view: int, source_views=None) -> Tuple[Cameras, Dict]:
        """(camera of the target view, batch with its image and the source conditioning) of one instance."""
        it = self.instance(inst_id)
        V = it.rgba.shape[0]
        src = torch.tensor([source_views if source_views is not None else [self.config.eval_source_view % V]])
        camera = pinhole_camera(it.c2w[target_view % V], it.focal, it.hw).to(self.device)
        sources = self.sources([it], src)
        batch = {
            "image": it.rgb(target_view % V).permute(1, 2, 0).to(self.device),
            "source": sources,
            "instance_id": inst_id,
            "target_view": int(target_view % V),
        }
        return camera, batch

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        rng = self._rng(step, 2)
        inst = self.eval_ids[int(rng.integers(len(self.eval_ids)))]
        return self.eval_image(inst, int(rng.choice(self.config.eval_target_views)))

    def get_train_rays_per_batch(self) -> int:
        return self.config.objects_per_batch * self.config.rays_per_object

    def get_eval_rays_per_batch(self) -> int:
        return self.get_train_rays_per_batch()

    def get_datapath(self) -> Path:
        return self.cat.root

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {}


class FixedEvalImages:
    """(camera, batch) of every (eval instance, target view): what ns-eval and the eval-all-images callback average."""

    def __init__(self, dm: FeatureNeRFDataManager, ids: List[str]):
        self.dm = dm
        self.items = [(i, v) for i in ids for v in dm.config.eval_target_views]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        for inst, view in self.items:
            yield self.dm.eval_image(inst, view)
