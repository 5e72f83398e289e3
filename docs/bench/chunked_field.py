"""Paper field fwd+bwd at 81,920 samples (bf16 autocast, keep_freed_memory as in training): one pass vs the samples
in chunks, each chunk forward + backward (gradients accumulate). Run from the repository root; prints ms and GFLOP/s.

Session 25 (2026-12-07, study paused): 1 chunk 2,679-2,967 ms, 4 chunks 3,380, 8 chunks 3,363-3,844, 16 chunks
4,886-5,457: chunking is slower (without keep_freed_memory 4 chunks were faster, 3.0 vs 4.5 s: page faults only).
"""

from __future__ import annotations

import time

from featurenerf_ns.bench.parts import _field_and_inputs, _field_flops
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory
from featurenerf_ns.utils.precision import autocast_context


def main() -> None:
    keep_freed_memory()
    field, pts, dirs, maps, src, hw, cfg = _field_and_inputs("paper", "cpu")
    maps.requires_grad_(True)
    n = pts.shape[0] * pts.shape[1]

    def run(chunks: int) -> None:
        c = pts.shape[1] // chunks
        for i in range(chunks):
            with autocast_context("cpu", "bfloat16"):
                o = field(pts[:, i * c : (i + 1) * c], dirs[:, i * c : (i + 1) * c], maps, src, hw, features=False)
            keys = ("density", "rgb", "nerf_feature_relu", "coords")
            sum(o[k].float().sum() for k in keys).backward()

    for ch in (1, 1, 4, 8, 16, 1, 8, 16):
        run(ch)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            run(ch)
            ts.append(time.perf_counter() - t0)
        t = min(ts)
        gflops = 3 * _field_flops(cfg, 384, False) * n / t / 1e9
        print(f"chunks {ch:2d}: {t * 1e3:7.0f} ms  {gflops:6.0f} GFLOP/s", flush=True)


if __name__ == "__main__":
    main()
