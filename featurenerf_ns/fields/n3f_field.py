"""N3F's feature branch: a 3D feature field f(x) distilled from a 2D teacher, beside a radiance field.

    f(x) = tanh(W · MLP(hash(x)) + b)      x (..., 3) world -> (..., D), D = the teacher's PCA dimension (64)

Official N3F puts the head (one linear layer + tanh) on the trunk of the scene's NeRF, so the feature loss reaches
the trunk. Nerfacto's trunk output is a 15-d geometry feature, too narrow for a 64-d target, so this branch has
its own multi-resolution hash grid and MLP (as LERF's plugin does for its CLIP/DINO fields), ending in N3F's
linear + tanh head. With the rendering weights detached (stop-gradient to density, see models/n3f.py), the
feature loss then changes nothing of the radiance field.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLP
from nerfstudio.field_components.spatial_distortions import SpatialDistortion
from torch import Tensor, nn


class N3FFeatureField(nn.Module):
    aabb: Tensor

    def __init__(
        self,
        aabb: Tensor,
        feature_dim: int,
        spatial_distortion: Optional[SpatialDistortion] = None,
        num_levels: int = 12,
        max_res: int = 1024,
        log2_hashmap_size: int = 19,
        features_per_level: int = 4,
        hidden_dim: int = 64,
        num_layers: int = 2,
        implementation: Literal["tcnn", "torch"] = "tcnn",
    ):
        super().__init__()
        self.register_buffer("aabb", aabb)
        self.spatial_distortion = spatial_distortion
        self.encoding = HashEncoding(
            num_levels=num_levels,
            min_res=16,
            max_res=max_res,
            log2_hashmap_size=log2_hashmap_size,
            features_per_level=features_per_level,
            implementation=implementation,
        )
        self.mlp = MLP(
            in_dim=self.encoding.get_out_dim(),
            num_layers=num_layers,
            layer_width=hidden_dim,
            out_dim=hidden_dim,
            activation=nn.ReLU(),
            out_activation=nn.ReLU(),
            implementation=implementation,
        )
        self.head = nn.Linear(hidden_dim, feature_dim)
        self.feature_dim = feature_dim

    def normalized_positions(self, positions: Tensor) -> Tensor:
        """World positions -> [0, 1]^3 grid coordinates (the radiance field's convention; outside -> 0)."""
        if self.spatial_distortion is not None:
            x = (self.spatial_distortion(positions) + 2.0) / 4.0
        else:
            x = SceneBox.get_normalized_positions(positions, self.aabb)
        inside = ((x > 0.0) & (x < 1.0)).all(dim=-1, keepdim=True)
        return x * inside

    def forward(self, positions: Tensor) -> Tensor:
        """positions (..., 3) -> features (..., D) in (-1, 1)."""
        shape = positions.shape[:-1]
        x = self.normalized_positions(positions).reshape(-1, 3)
        h = self.mlp(self.encoding(x)).float()
        return torch.tanh(self.head(h)).reshape(*shape, self.feature_dim)
