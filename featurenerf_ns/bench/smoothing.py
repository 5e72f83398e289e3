"""``featurenerf-bench --parts smoothing``: the training step of n3f-tiny with each feature smoother vs naive.

One n3f-tiny pipeline on the generated scene (8 x 8 ray patches, 1024 rays, superpixel segments in every batch),
in the feature stage; the smoother is switched per step and the variants are timed in interleaved rounds (naive,
tv, edge-aware tv, bilateral, mask, naive, ...), so a busy machine slows them alike. A step = batch + forward + losses +
backward + optimizer step, as in ns-train. Target (issue 17): each smoother under 1.5x the naive step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Tuple, cast

import numpy as np

KINDS = ("none", "tv", "tv-rgb", "bilateral", "mask")
"""Smoother kinds timed; ``tv-rgb`` = kind tv with the colour-weighted pairs (``tv_guide="rgb"``)."""


def part_smoothing(scene: str, rounds: int = 8, warmup: int = 2) -> dict:
    from nerfstudio.engine.optimizers import Optimizers

    from featurenerf_ns.data.mask_sources import MaskSourceConfig
    from featurenerf_ns.method_configs import n3f_tiny_preset
    from featurenerf_ns.pipelines.n3f_pipeline import N3FPipelineConfig

    root = Path(scene)
    if not (root / "scene.json").is_file():
        raise SystemExit(
            f"featurenerf-bench smoothing: {root} is not a generated scene; featurenerf-data scene --out {root}"
        )
    cfg = n3f_tiny_preset("n3f-tiny")
    p = cast(N3FPipelineConfig, cfg.pipeline)
    p.datamanager.data = root
    p.datamanager.patch_size = 8
    p.datamanager.masks = MaskSourceConfig(kind="superpixel")
    pipeline = p.setup(device="cpu", test_mode="val")
    pipeline.train()
    model = pipeline.model
    model.step = model.config.feature_start_step + 1  # the feature stage
    optim = Optimizers(cfg.optimizers, pipeline.get_param_groups())

    def step(i: int) -> float:
        t0 = time.perf_counter()
        optim.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step=i)
        sum(loss_dict.values()).backward()
        optim.optimizer_step_all()
        return time.perf_counter() - t0

    times: Dict[str, List[float]] = {k: [] for k in KINDS}
    i = 0
    for r in range(warmup + rounds):
        for kind in KINDS:
            model.config.smoothing.kind = "tv" if kind == "tv-rgb" else kind
            model.config.smoothing.tv_guide = "rgb" if kind == "tv-rgb" else "none"
            t = step(i)
            i += 1
            if r >= warmup:
                times[kind].append(t)
    out: Dict[str, float] = {"rays_per_step": float(p.datamanager.train_num_rays_per_batch), "rounds": float(rounds)}
    base = float(np.median(times["none"]))
    for kind in KINDS:
        med = float(np.median(times[kind]))
        name = "naive" if kind == "none" else kind
        out[f"{name}_step_ms"] = med * 1e3
        out[f"{name}_vs_naive"] = med / base
    return out


def smoothing_targets(res: dict) -> Dict[str, Tuple[float, str, bool]]:
    return {
        f"{k} smoothing step / naive step": (res[f"{k}_vs_naive"], "< 1.5", res[f"{k}_vs_naive"] < 1.5)
        for k in KINDS[1:]
        if f"{k}_vs_naive" in res
    }
