"""ImageNet normalisation, the one place its constants live (teachers, encoders and weight checks all use it), and
the small image writers the command-line tools share (8-bit conversion, looping GIFs)."""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (rgb - mean) / std per channel, same shape, dtype and device."""
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def imagenet_normalize_np(rgb01: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (1, 3, H, W) float32, ImageNet-normalised (the numpy inputs of weight checks)."""
    x = (np.asarray(rgb01, np.float32) - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (values outside are clipped) -> uint8, same shape."""
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """A PNG file's bytes of an image (H, W), (H, W, 3) or (H, W, 4): uint8 as it is, float in [0, 1] via
    :func:`to_uint8`."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img if img.dtype == np.uint8 else to_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(frames: np.ndarray, scale: int = 3, ms: int = 120) -> bytes:
    """An animated, looping GIF file's bytes from frames (N, H, W, 3) (float in [0, 1] or uint8), upscaled by
    ``scale`` (nearest), ``ms`` per frame."""
    import io

    from PIL import Image

    ims = [
        Image.fromarray(f if f.dtype == np.uint8 else to_uint8(f)).resize(
            (f.shape[1] * scale, f.shape[0] * scale), Image.Resampling.NEAREST
        )
        for f in frames
    ]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=ms, loop=0)
    return buf.getvalue()
