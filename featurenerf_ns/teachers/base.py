"""The teacher interface: RGB(A) images in, a dense feature map and its stride out.

Every teacher (DINOv2, DINO, diffusion U-Net) is a frozen ``nn.Module`` built from a small dataclass config.
:meth:`Teacher.extract` takes a batch of images in [0, 1] (and optionally their alpha), resizes them to the
teacher's ``input_size``, normalises, runs the network under ``torch.inference_mode`` in chunks of
``batch_size`` and returns a :class:`FeatureMap` whose cells tile the *original* image exactly: cell (i, j)
of an ``h x w`` map covers pixels ``[i * H / h, (i + 1) * H / h)`` x ``[j * W / w, (j + 1) * W / w)``, so a pixel
centre (u, v) samples the map at normalised coordinates ``(2u / W - 1, 2v / H - 1)`` with
``grid_sample(align_corners=False)``.

:meth:`Teacher.identity` is what a feature cache records and compares: teacher id, weights hash, layer,
facet, input size, normalisation, masking (see :mod:`featurenerf_ns.teachers.cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, NamedTuple, Optional, Tuple, Type, cast

import torch
import torch.nn.functional as F
from torch import nn

from featurenerf_ns.utils.images import imagenet_normalize
from featurenerf_ns.utils.precision import autocast_context, resolve_precision


class TeacherError(RuntimeError):
    """Teacher weights missing or a bad teacher option; the message is one line naming the file and the fix."""


class FeatureMap(NamedTuple):
    features: torch.Tensor
    """(B, D, h, w) float32."""
    stride: Tuple[float, float]
    """Original-image pixels per map cell (rows, columns)."""


@dataclass
class TeacherConfig:
    """Options every teacher has. Subclasses add their network's own (weights, layer, facet, ...)."""

    _target: Type = field(default_factory=lambda: Teacher)
    name: str = ""
    """Registry name (``dinov2-vits14``, ``dino-vits8``, ``diffusion``)."""
    weights: Optional[str] = None
    """Where the weights come from: teacher-specific default when None; ``random`` = random init (baselines/tests)."""
    input_size: int = 224
    """Images are resized (antialiased bilinear) to input_size x input_size before the network."""
    imagenet_norm: bool = True
    """Normalise with ImageNet mean/std (ViTs); diffusion teachers scale to [-1, 1] instead."""
    mask_background: bool = True
    """Multiply the feature map by the alpha mask area-downsampled to the map (official: background zeroed)."""
    batch_size: int = 8
    """Images per forward pass (bounds peak memory)."""
    seed: int = 0
    """Seed for random-weight networks and for diffusion noise."""
    precision: str = "auto"
    """Autocast precision of the frozen network (:mod:`featurenerf_ns.utils.precision`): ``auto`` = bfloat16 on CPUs
    with bf16 matrix instructions and bf16 GPUs, float32 elsewhere; ``float32`` = the reference numerics. DINOv2
    ViT-S/14 at 224 px on 2 cores (AMX): 45-56 images/s in bfloat16 vs 17-21 in float32 (2.6-3x), per-cell cosine
    to the float32 features 0.99993 on average (min 0.9995), relative error 1.1% (the cache's float16 storage: 0.02%)
    (`docs/bench/teacher_precision.py`). The cache records the resolved precision."""

    def setup(self, **kwargs) -> "Teacher":
        return self._target(self, **kwargs)

    def options(self) -> Dict[str, Any]:
        """The config as plain JSON values (without ``_target``)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


class Teacher(nn.Module):
    """A frozen 2D feature extractor. Subclasses set ``self.dim``, ``self.label``, ``self.weights_sha256`` and
    implement :meth:`features` (normalised input (B, 3, S, S) -> (B, D, h, w))."""

    config: TeacherConfig
    dim: int
    label: str = ""
    weights_sha256: Optional[str] = None
    """Hash of the weights file (None for random init / hub ids resolved by another cache)."""
    stride_in_input: int = 1
    """Input pixels per output cell (patch size for ViTs)."""

    def __init__(self, config: TeacherConfig, device: str = "cpu"):
        super().__init__()
        self.config = config
        self.device_name = device
        if config.input_size <= 0:
            raise TeacherError(f"teacher {config.name}: input_size must be positive (got {config.input_size})")
        if config.batch_size <= 0:
            raise TeacherError(f"teacher {config.name}: batch_size must be positive (got {config.batch_size})")
        try:
            resolve_precision(config.precision, device)  # the one check of the precision names
        except ValueError as e:
            raise TeacherError(f"teacher {config.name}: {e}") from None

    # ------------------------------------------------------------------ to implement
    def features(self, x: torch.Tensor, category: Optional[str] = None) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device(self.device_name)

    def map_size(self) -> Tuple[int, int]:
        """(h, w) of the output map for the configured input size."""
        n = self.config.input_size // self.stride_in_input
        return n, n

    def identity(self) -> Dict[str, Any]:
        """Everything that determines the features: compared by the cache to decide reuse vs rebuild."""
        ident = {
            "teacher": self.config.name,
            "label": self.label,
            "weights_sha256": self.weights_sha256,
            "dim": int(self.dim),
            "map_size": list(self.map_size()),
        }
        ident.update({k: v for k, v in self.config.options().items() if k not in ("name", "batch_size")})
        ident["precision"] = self.resolved_precision()
        return ident

    def resolved_precision(self) -> str:
        """The precision :meth:`extract` runs at on this teacher's device (``auto`` resolved)."""
        return resolve_precision(self.config.precision, self.device)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        s = self.config.input_size
        x = rgb
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        if self.config.imagenet_norm:
            return imagenet_normalize(x)
        return x * 2.0 - 1.0

    @torch.inference_mode()
    def extract(
        self, rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None, category: Optional[str] = None
    ) -> FeatureMap:
        """rgb (B, 3, H, W) in [0, 1] (background already composited), alpha (B, 1, H, W) in [0, 1] or None."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise TeacherError(f"teacher {self.config.name}: expected images (B, 3, H, W), got {tuple(rgb.shape)}")
        if not torch.isfinite(rgb).all():
            raise TeacherError(f"teacher {self.config.name}: input images contain NaN/inf")
        H, W = rgb.shape[-2:]
        outs = []
        for i in range(0, rgb.shape[0], self.config.batch_size):
            x = self.preprocess(rgb[i : i + self.config.batch_size].to(self.device, torch.float32))
            with autocast_context(self.device, self.config.precision):
                f = self.features(x, category)
            f = f.float()
            if self.config.mask_background and alpha is not None:
                a = alpha[i : i + self.config.batch_size].to(f.device, torch.float32)
                f = (
                    f * F.adaptive_avg_pool2d(a, cast(Tuple[int, int], f.shape[-2:]))
                    if (H % f.shape[-2] == 0 and W % f.shape[-1] == 0)
                    else f * F.interpolate(a, size=f.shape[-2:], mode="area")
                )
            outs.append(f)
        feats = torch.cat(outs)
        return FeatureMap(feats, (H / feats.shape[-2], W / feats.shape[-1]))

    def forward(
        self, rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None, category: Optional[str] = None
    ) -> FeatureMap:
        return self.extract(rgb, alpha, category)
