"""Sampling 2D feature maps at pixel coordinates: the field reading its encoder maps, the data manager reading the
teacher cache, the teachers' own outputs. One convention everywhere: a map of h x w cells covers the whole image
of H x W pixels and is sampled as ``grid_sample(align_corners=False, padding_mode='border')`` would."""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def sample_map(features: torch.Tensor, uv: torch.Tensor, image_hw: Tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample feature maps at pixel coordinates.

    features (B, D, h, w) covering images of size ``image_hw``; uv (B, N, 2) pixel coordinates (x right, y down;
    a pixel centre is at +0.5) -> (B, N, D). Outside the image the border value is used (``grid_sample`` with
    ``align_corners=False, padding_mode="border"``).

    On CPU each output row is ``embedding_bag`` over the 4 neighbouring cells of the channels-last maps with the
    bilinear weights as per-sample weights (mode "sum"): equal to grid_sample to float rounding (tested), and unlike
    grid_sample its backward is not a strided per-channel scatter, which dominated CPU training steps. Measured on
    2 cores (fwd + bwd, float32): the paper preset's 4 objects x 12k points x 1536 channels grid_sample 14.2 s, a
    sparse CSR product 0.57 s, embedding_bag 0.27 s; forward only, one 64^2 map x 10k points x 1536 channels
    (the paper query): sparse product 75 ms, embedding_bag 32 ms float32 / 4 ms bfloat16. Interpolation runs in
    the maps' dtype, with and without autograd (bfloat16 under autocast: the maps come from a bfloat16 linear
    layer); the gradient w.r.t. the maps is :class:`_BilinearBag`'s transposed bag (see there). Maps stored
    channels-last (``_zmaps`` makes them so) are read without a copy. Other devices use grid_sample; a ``uv``
    that needs its own gradient takes torch's embedding_bag autograd (float32).
    """
    if features.device.type != "cpu":
        H, W = image_hw
        grid = torch.stack([uv[..., 0] * (2.0 / W) - 1.0, uv[..., 1] * (2.0 / H) - 1.0], dim=-1).unsqueeze(1)
        out = F.grid_sample(
            features, grid.to(features.dtype), mode="bilinear", padding_mode="border", align_corners=False
        )
        return out[:, :, 0].transpose(1, 2)
    return _sample_map_cpu(features, uv, image_hw)


def _bilinear_taps(uv: torch.Tensor, map_hw: Tuple[int, int], image_hw: Tuple[int, int]):
    """Pixel coordinates (..., 2) -> the 4 neighbouring cells (rows, cols: (..., 4) long, order (y0, x0), (y0, x1),
    (y1, x0), (y1, x1)) and their bilinear weights (..., 4), in the module's grid_sample convention."""
    (h, w), (H, W) = map_hw, image_hw
    x = (uv[..., 0] * (w / W) - 0.5).clamp(0, w - 1)
    y = (uv[..., 1] * (h / H) - 0.5).clamp(0, h - 1)
    x0, y0 = x.floor().clamp(max=w - 1), y.floor().clamp(max=h - 1)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    rows = torch.stack([y0, y0, y1, y1], -1)
    cols = torch.stack([x0, x1, x0, x1], -1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)
    return rows, cols, weights


class _BilinearBag(torch.autograd.Function):
    """out[m] = sum_k weights[m, k] * rows[cells[m, k]]: rows (R, D), cells and weights (M, 4) -> (M, D), in the
    rows' dtype, differentiable w.r.t. rows only.

    The gradient is the transposed sum, d rows[r] = sum over the (m, k) with cells[m, k] = r of
    weights[m, k] * d out[m], computed as one more ``embedding_bag``: the (m, k) taps sorted by cell are the bags
    (one per row, empty bags give 0), m the indices into d out, the weights the per-sample weights. torch's own
    embedding_bag backward (a sort and a per-row scatter in float32, with casts of the (M, D) gradient in and out)
    took most of the sampling time. Measured on 2 cores with AMX (``docs/bench/sampler_backward.py``, forward +
    backward against torch's float32 autograd): tiny preset 45,056 samples x 256 channels 25.6 -> 7.5 ms (bfloat16)
    / 13.4 ms (float32, bit-identical); paper preset 81,920 x 1,536 channels 205 -> 84 ms (bfloat16); the sort of the
    taps is part of it (the bag kernel alone: 2.3 / 26 ms). The bag kernel accumulates bfloat16 in float32: its
    error is 1.6x the rounding of the exact result to bfloat16 whether a row receives 20 taps or 12,500 (the extra
    0.6x: the bilinear weights rounded to bfloat16); torch's autograd in bfloat16 was 5.5x (session 22), hence
    float32 before.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor, cells: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights.to(rows.dtype)
        ctx.save_for_backward(cells, w)
        ctx.num_rows = rows.shape[0]
        return F.embedding_bag(cells, rows, per_sample_weights=w, mode="sum")

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        cells, w = ctx.saved_tensors
        flat = cells.reshape(-1)
        order = torch.argsort(flat)  # taps grouped by the row they read
        counts = torch.bincount(flat, minlength=ctx.num_rows)
        offsets = torch.zeros_like(counts)
        torch.cumsum(counts[:-1], 0, out=offsets[1:])
        sample = torch.div(order, cells.shape[1], rounding_mode="floor")
        grad_rows = F.embedding_bag(
            sample,
            grad_out.to(w.dtype).contiguous(),
            offsets,
            per_sample_weights=w.reshape(-1)[order],
            mode="sum",
        )
        return grad_rows, None, None


def _sample_map_cpu(features: torch.Tensor, uv: torch.Tensor, image_hw: Tuple[int, int]) -> torch.Tensor:
    B, D, h, w = features.shape
    N = uv.shape[1]
    rows_i, cols_i, weights = _bilinear_taps(uv.float(), (h, w), image_hw)
    base = (torch.arange(B, device=uv.device) * (h * w))[:, None, None]
    cells = (base + rows_i * w + cols_i).view(B * N, 4)  # rows of the flattened maps
    rows = features.permute(0, 2, 3, 1).reshape(B * h * w, D)  # a view for channels-last maps
    weights = weights.view(B * N, 4)
    with torch.autocast("cpu", enabled=False):
        if torch.is_grad_enabled() and uv.requires_grad:  # a gradient w.r.t. the points too: torch's autograd
            dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
            out = F.embedding_bag(cells, rows.to(dtype), per_sample_weights=weights.to(dtype), mode="sum")
        elif torch.is_grad_enabled() and features.requires_grad:
            out = _BilinearBag.apply(rows, cells, weights)
        else:
            out = F.embedding_bag(cells, rows, per_sample_weights=weights.to(rows.dtype), mode="sum")
    return out.view(B, N, D).to(features.dtype)


def bilinear_gather(maps, view: torch.Tensor, uv: torch.Tensor, image_hw: Tuple[int, int]) -> torch.Tensor:
    """maps (V, D, h, w) (tensor, array or memory-mapped array), per-ray view index (R,), pixel coordinates (R, 2)
    -> (R, D) float32; same convention as ``grid_sample(align_corners=False, padding_mode='border')`` with the map
    covering the whole image. Only the 4 cells around each ray are read (not whole maps of a memory-mapped cache).

    Arrays are read through a zero-copy tensor view: torch's advanced indexing gathers the (4, R, D) corners 2.8x
    faster than numpy's on a memory-mapped cache (0.52 vs 1.44 ms for 128 rays x 384 float16 channels; the
    training step reads 4 objects' rays this way)."""
    V, D, h, w = maps.shape
    rows, cols, weights = _bilinear_taps(uv, (h, w), image_hw)  # (R, 4) each
    if isinstance(maps, torch.Tensor):
        table = maps
    else:
        with warnings.catch_warnings():  # a read-only memory map: the view is only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            table = torch.from_numpy(np.asarray(maps))
    vi = torch.as_tensor(view, dtype=torch.long)
    # advanced indices around a slice: the result is (4, R, D)
    corners = table[vi.expand(4, -1), :, rows.T, cols.T].float()
    return (corners * weights.T[..., None]).sum(0)
