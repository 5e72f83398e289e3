"""2D teacher networks whose features FeatureNeRF distills, behind one interface (:mod:`.base`).

from featurenerf_ns.teachers import make_teacher_config
teacher = make_teacher_config("dinov2-vits14", layer=8, facet="key").setup(device="cpu")
fmap = teacher.extract(rgb, alpha)          # FeatureMap(features (B, D, h, w), stride (sy, sx))
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Dict, Literal, Optional, Union

from featurenerf_ns.teachers.base import FeatureMap, Teacher, TeacherConfig, TeacherError  # noqa: F401


def _dinov2() -> TeacherConfig:
    from featurenerf_ns.teachers.vit import ViTTeacherConfig

    # block 9 tokens at 224 px: measured best of {11 token, 9 key, 9 token} x {224, 448} for 2D keypoint transfer on
    # procedural chairs (PCK@10 24.1 vs 19.5 for the last block; 448 px did not help and is 5x slower)
    return ViTTeacherConfig(name="dinov2-vits14", arch="vits14", layer=9, facet="token", input_size=224)


def _dino() -> TeacherConfig:
    from featurenerf_ns.teachers.vit import ViTTeacherConfig

    # official FeatureNeRF teacher: block 9, key facet, 256 px -> 32 x 32 x 384
    return ViTTeacherConfig(name="dino-vits8", arch="dino_vits8", layer=9, facet="key", input_size=256)


def _diffusion() -> TeacherConfig:
    from featurenerf_ns.teachers.diffusion import DiffusionTeacherConfig

    return DiffusionTeacherConfig()


TEACHERS: Dict[str, Callable[[], TeacherConfig]] = {
    "dinov2-vits14": _dinov2,
    "dino-vits8": _dino,
    "diffusion": _diffusion,
}
DEFAULT_TEACHER = "dinov2-vits14"


def make_teacher_config(name: str = DEFAULT_TEACHER, **overrides) -> TeacherConfig:
    """The registered config of ``name`` with ``overrides`` applied (None values are ignored)."""
    if name not in TEACHERS:
        raise TeacherError(f"unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
    cfg = TEACHERS[name]()
    known = {f.name for f in fields(cfg)}
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in known:
            raise TeacherError(
                f"teacher {name} has no option {k!r}; its options: {', '.join(sorted(known - {'_target'}))}"
            )
        setattr(cfg, k, v)
    return cfg


@dataclass
class TeacherSpec:
    """Which teacher and its options, as CLIs and the data manager take them (unset = the registered default)."""

    name: str = DEFAULT_TEACHER
    """dinov2-vits14 | dino-vits8 | diffusion."""
    weights: Optional[str] = None
    """Teacher default when unset; a local checkpoint/directory, hub (online only) or random."""
    layer: Optional[int] = None
    """ViT block to read (0-based, negative from the end)."""
    facet: Optional[str] = None
    """ViT facet: token | query | key | value."""
    input_size: Optional[int] = None
    mask_background: Optional[bool] = None
    up_block: Optional[int] = None
    """Diffusion: U-Net decoder block read."""
    timestep: Optional[int] = None
    """Diffusion: noise level."""
    up_layer: Optional[Union[int, Literal["output"]]] = None
    """Diffusion: input of resnet j of the up block, or ``output`` for the up block's output (the teacher config's
    ``up_layer=None``); unset: the teacher's default 0."""
    prompt_template: Optional[str] = None
    """Diffusion: text conditioning, ``{category}`` = class name."""
    ensemble: Optional[int] = None
    """Diffusion: noise draws averaged."""
    arch: Optional[str] = None
    """ViT: network size (vits14, vitb14, vitl14, dino_vits8, dino_vits16), e.g. with local weights."""
    imagenet_norm: Optional[bool] = None
    """ImageNet mean/std normalisation (ViTs) instead of [-1, 1] scaling."""
    seed: Optional[int] = None
    """Seed of random-weight networks and of diffusion noise."""
    precision: Optional[str] = None
    """Autocast precision of the teacher network: auto (bfloat16 where the hardware has fast bf16) | float32 |
    bfloat16 | float16; unset: auto."""
    batch_size: int = 8
    pca_dim: Optional[int] = None
    """Cache PCA-k features (fitted on the train split, stored with the cache) instead of the full dimension."""
    cache_dir: Optional[Path] = None
    """Default: <data root>/teacher_cache/<teacher>/<category>."""

    def config(self, **extra) -> TeacherConfig:
        """The registered teacher config of ``name`` with every set option of this spec (and ``extra``) applied;
        an option the teacher does not have is a one-line error. Configs saved before an option existed lack it."""
        kw = {k: getattr(self, k, None) for k in TEACHER_OPTIONS}
        kw.update({k: v for k, v in extra.items() if v is not None})
        block_output = kw.get("up_layer") == "output"
        if block_output:
            kw["up_layer"] = None  # None means "unset" to make_teacher_config; set explicitly below
        cfg = make_teacher_config(self.name, **kw)
        if block_output:
            if not hasattr(cfg, "up_layer"):
                raise TeacherError(f"teacher {self.name} has no option 'up_layer' (it is a diffusion teacher option)")
            setattr(cfg, "up_layer", None)
        return cfg

    def setup(self, device: str = "cpu", **extra) -> Teacher:
        return self.config(**extra).setup(device=device)


SPEC_ONLY = ("name", "pca_dim", "cache_dir")
"""TeacherSpec fields that are not teacher-config options (the registry key and the cache's own settings)."""
TEACHER_OPTIONS = tuple(f.name for f in fields(TeacherSpec) if f.name not in SPEC_ONLY)
"""The teacher-config options a spec passes on (tests check that every registered teacher's options are here)."""
