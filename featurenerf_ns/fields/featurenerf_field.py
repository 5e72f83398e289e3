"""The image-conditioned FeatureNeRF field (pixelNeRF style), pure torch so it runs on CPU.

For a 3D point x of object b and each of its N source views n:

* x and the ray direction are transformed into the source camera frame (``w2c``), x is projected into the
  source image (OpenGL pinhole: the camera looks down -z, v grows downwards) and the encoder's pixel-aligned
  feature is sampled there (bilinear, border padding);
* the point is positionally encoded (raw xyz + sin/cos at ``num_freqs`` octaves times ``freq_factor``), the
  camera-frame direction appended, and a residual MLP of ``num_blocks`` blocks of width ``hidden_dim`` runs,
  with the image feature added through a per-block linear layer in the first ``num_conditioned_blocks`` blocks;
* per-view activations are averaged after ``combine_layer`` blocks (multi-view input);
* the last block's output is the internal NeRF feature v_NeRF (before activation); one linear layer after a ReLU
  gives density (ReLU), colour (sigmoid), the distilled feature (linear, teacher dimension) and the regressed
  coordinate x_hat (linear, world frame).

Points of different objects never mix: the field takes points grouped per object, ``(B, P, 3)``, with the
sources of each object, so B objects are evaluated in one batched pass (no Python loop over objects or rays).
"""

from __future__ import annotations

import functools
import typing
import weakref
from dataclasses import dataclass
from typing import Dict, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from featurenerf_ns.cameras import project, world_to_source
from featurenerf_ns.model_components.map_sampling import sample_map  # (M, C, h, w), (M, P, 2) -> (M, P, C)
from featurenerf_ns.model_components.packed_linear import linear_act
from featurenerf_ns.utils.weights_key import weights_key


@dataclass
class FieldConfig:
    hidden_dim: int = 512
    """Width of the residual MLP (= dimension of the internal NeRF feature). Official: 512."""
    num_blocks: int = 5
    """Residual blocks. Official: 5."""
    num_conditioned_blocks: int = 3
    """The image feature enters through a linear layer in blocks 0..k-1. Official: 3."""
    combine_layer: int = 3
    """Average the per-source-view activations after this many blocks. Official: 3."""
    num_freqs: int = 6
    freq_factor: float = 1.5
    use_viewdirs: bool = True
    density_activation: str = "softplus"
    """softplus (default: never has zero gradient) | relu (official). With ReLU the tiny CPU preset collapsed to
    zero density everywhere (all-black renders) within 1k steps: once every pre-activation is negative no
    gradient reaches the density again."""


class SourceViews(NamedTuple):
    """The conditioning of a batch of objects: N source views per object."""

    images: torch.Tensor
    """(B, N, 3, H, W) in [0, 1], background black."""
    c2w: torch.Tensor
    """(B, N, 4, 4) camera-to-world, OpenGL convention."""
    focal: torch.Tensor
    """(B, N) focal length in pixels of ``images``."""
    center: torch.Tensor
    """(B, N, 2) principal point (cx, cy) in pixels."""

    @property
    def num_objects(self) -> int:
        return self.images.shape[0]

    @property
    def num_views(self) -> int:
        return self.images.shape[1]

    def to(self, device) -> "SourceViews":
        return SourceViews(*(t.to(device) for t in self))


def positional_encoding(x: torch.Tensor, num_freqs: int, freq_factor: float) -> torch.Tensor:
    """(..., 3) -> (..., 3 + 6 * num_freqs): raw xyz, then sin and cos at freq_factor * 2^k."""
    freqs = freq_factor * (2.0 ** torch.arange(num_freqs, device=x.device, dtype=x.dtype))
    xf = (x[..., None, :] * freqs[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)


def _forget_zmaps(owner: "weakref.ref[FeatureNeRFField]", zmaps: "weakref.ref[torch.Tensor]", grad: torch.Tensor):
    """Gradient hook of a cached projection: drop the cache entry once backward has gone through it (another
    forward with the same maps, e.g. a benchmark loop, must not reuse a graph that is freed)."""
    field = owner()
    cached = getattr(field, "_zcache", None) if field is not None else None
    if cached is not None and cached[2] is zmaps():
        field._zcache = None  # type: ignore[union-attr]
    return None


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc0 = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, width)
        nn.init.zeros_(self.fc1.weight)  # blocks start as identity (stable deep residual MLP)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # = h + fc1(relu(fc0(relu(h)))); without autograd in bfloat16 on CPU, packed weights with fused bias + ReLU
        return h + linear_act(self.fc1, linear_act(self.fc0, F.relu(h), relu=True))


class FeatureNeRFField(nn.Module):
    def __init__(self, config: FieldConfig, image_feature_dim: int, feature_dim: int, predict_coords: bool = True):
        super().__init__()
        c = config
        if c.density_activation not in ("softplus", "relu"):
            raise ValueError(f"field: density_activation={c.density_activation!r}; choose softplus or relu")
        if not 0 <= c.num_conditioned_blocks <= c.combine_layer <= c.num_blocks:
            raise ValueError(
                f"field: need 0 <= num_conditioned_blocks ({c.num_conditioned_blocks}) <= combine_layer "
                f"({c.combine_layer}) <= num_blocks ({c.num_blocks})"
            )
        self.config = c
        self.feature_dim = feature_dim
        self.predict_coords = predict_coords
        in_dim = 3 + 6 * c.num_freqs + (3 if c.use_viewdirs else 0)
        self.lin_in = nn.Linear(in_dim, c.hidden_dim)
        self.lin_z = nn.ModuleList(nn.Linear(image_feature_dim, c.hidden_dim) for _ in range(c.num_conditioned_blocks))
        self.blocks = nn.ModuleList(ResBlock(c.hidden_dim) for _ in range(c.num_blocks))
        self.head_sizes = {"density": 1, "rgb": 3, "feature": feature_dim, "coords": 3 if predict_coords else 0}
        self.head = nn.Linear(c.hidden_dim, sum(self.head_sizes.values()))

    def forward(
        self,
        points: torch.Tensor,
        directions: torch.Tensor,
        maps: torch.Tensor,
        sources: SourceViews,
        image_hw,
        features: bool = True,
    ) -> Dict[str, torch.Tensor]:
        """points, directions (B, P, 3) world; maps (B * N, C, h, w) encoder features of the sources' images.

        Returns density (B, P, 1), rgb (B, P, 3), feature (B, P, D), coords (B, P, 3), nerf_feature (B, P, hidden)
        and nerf_feature_relu = relu(nerf_feature) (B, P, hidden), the input of every head. With ``features=False``
        the distilled feature is not evaluated per point (:meth:`composite_feature` applies its head to the
        composited nerf_feature_relu after volume rendering)."""
        B, P, _ = points.shape
        N = sources.num_views
        c = self.config
        x_cam = world_to_source(points, sources.c2w)  # (B, N, P, 3)
        uv = project(x_cam, sources.focal, sources.center)
        # The per-block linear layers on the image feature commute with bilinear sampling (weights sum to 1), so
        # they run once per feature-map pixel (a 1x1 conv) instead of once per 3D sample: far fewer FLOPs.
        z: Tuple[torch.Tensor, ...] = ()  # one (B, N, P, hidden) tensor per conditioned block
        if c.num_conditioned_blocks:
            zmaps = self._zmaps(maps)
            # (sample_map returns the maps' dtype: under bf16 autocast the residual stream then stays bfloat16
            # instead of being promoted and re-cast at every linear layer)
            zs = sample_map(zmaps, uv.reshape(B * N, P, 2), image_hw).reshape(B, N, P, -1)
            z = zs.split(c.hidden_dim, dim=-1)
        x = positional_encoding(x_cam, c.num_freqs, c.freq_factor)
        if c.use_viewdirs:
            d_cam = torch.einsum("bnji,bpj->bnpi", sources.c2w[..., :3, :3], directions)
            x = torch.cat([x, d_cam], dim=-1)
        h = linear_act(self.lin_in, x)
        for i, block in enumerate(self.blocks):
            if i == c.combine_layer and N > 1:
                h = h.mean(dim=1, keepdim=True)
            if i < c.num_conditioned_blocks:
                h = h + (z[i] if h.shape[1] == N else z[i].mean(dim=1, keepdim=True))
            h = block(h)
        if c.combine_layer >= c.num_blocks and N > 1:
            h = h.mean(dim=1, keepdim=True)
        h = h[:, 0]  # (B, P, hidden): the internal NeRF feature
        basis = F.relu(h)
        if features:
            heads = dict(zip(self.head_sizes, torch.split(self.head(basis), list(self.head_sizes.values()), dim=-1)))
        else:  # every head but the (wide) distilled feature
            d = self.head_sizes["density"] + self.head_sizes["rgb"]
            w, b = self.head.weight, self.head.bias
            keep = torch.cat([w[:d], w[d + self.feature_dim :]]), torch.cat([b[:d], b[d + self.feature_dim :]])
            dens, rgb, coords = torch.split(F.linear(basis, *keep), [1, 3, self.head_sizes["coords"]], dim=-1)
            heads = {"density": dens, "rgb": rgb, "coords": coords}
        out = {
            "density": F.softplus(heads["density"]) if c.density_activation == "softplus" else F.relu(heads["density"]),
            "rgb": torch.sigmoid(heads["rgb"]),
            "coords": heads["coords"],
            "nerf_feature": h,
            "nerf_feature_relu": basis,
        }
        if features:
            out["feature"] = heads["feature"]
        return out

    def _zmaps(self, maps: torch.Tensor) -> torch.Tensor:
        """The conditioned blocks' image-feature projections of the maps (a 1x1 conv, (n, K * hidden, h, w) with
        channels-last strides), kept until maps, weights, grad mode or autocast dtype change: chunked renders call
        the field many times with the same maps, and a training step twice (coarse and fine pass share the maps):
        there the two passes share one projection in the graph, so its forward and backward run once per step
        (paper preset: 2 x 50 GFLOP at 32768 cells x 512 -> 1536; the step 3.09 -> 2.9 s)."""
        lins = [typing.cast(nn.Linear, lin) for lin in self.lin_z]
        dev = maps.device.type
        wkey = weights_key(p for lin in lins for p in (lin.weight, lin.bias))
        key = (
            maps._version,
            torch.is_grad_enabled(),
            torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None,
            wkey,
        )
        cached = getattr(self, "_zcache", None)
        if cached is not None and cached[0]() is maps and cached[1] == key:
            return cached[2]
        w = torch.cat([lin.weight for lin in lins])
        b = torch.cat([lin.bias for lin in lins])
        n, C, h, wd = maps.shape
        # one linear over the map's cells in channels-last order: its output is already the row layout sample_map
        # reads (no transposing copy of the K * hidden channels; 1x1 conv + copy: 31 + 18 ms, this ~20 ms at the
        # paper query's 64^2 x 512 -> 1536 in bfloat16)
        rows = maps.permute(0, 2, 3, 1).reshape(n * h * wd, C)
        zmaps = linear_act(self, rows, weight=w, bias=b, slot="_packed_zmaps", key=wkey)
        zmaps = zmaps.view(n, h, wd, -1).permute(0, 3, 1, 2)
        # a weak reference: the cache must not keep a step's maps (and, through them, the encoder's graph) alive
        self._zcache = (weakref.ref(maps), key, zmaps)
        if zmaps.requires_grad:  # the backward pass that reaches it frees its graph: forget it then
            zmaps.register_hook(functools.partial(_forget_zmaps, weakref.ref(self), weakref.ref(zmaps)))
        return zmaps

    def composite_feature(self, basis: torch.Tensor, accumulation: torch.Tensor) -> torch.Tensor:
        """The rendered distilled feature from the rendered head input: sum_i w_i (W relu(h_i) + b) =
        W (sum_i w_i relu(h_i)) + b sum_i w_i, so the D-wide head runs once per ray instead of once per sample
        (equal by linearity; the tiny CPU preset's step went from 0.45 to ~0.33 s)."""
        d = self.head_sizes["density"] + self.head_sizes["rgb"]
        w = self.head.weight[d : d + self.feature_dim]
        b = self.head.bias[d : d + self.feature_dim]
        return F.linear(basis, w) + accumulation * b
