"""``featurenerf-bench --parts scale``: how the data manager and the teacher cache grow with the number of instances.

For each N (default 60, 600, 3000) one fresh process generates N procedural chairs (small images so that 3000
are quick: ``resolution`` px, ``views`` train + eval views), sets up the tiny preset's data manager on them with a
random-weight teacher (its cost per image does not depend on N, so a small ViT input keeps the build short), and
draws ``steps`` training batches. Figures per N: generation and cache-build time, data and cache size on disk,
resident memory after set-up and peak, and the data time per step. The data manager keeps at most
``max_cached_instances`` decoded instances (LRU) and memory-maps the cache, so beyond that many instances nothing
but disk may grow; the targets compare N = 600 with N = 3000 (both beyond the default LRU of 256).
"""

from __future__ import annotations

import copy
import os
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

SCALE_INSTANCES = (60, 600, 3000)


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # pragma: no cover - non-Linux
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _disk_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def scale_point(n: int, workdir: Path, resolution: int, views: int, steps: int, keep: bool = False) -> Dict[str, float]:
    """The figures of one N (run it in a fresh process: its peak RSS is reported)."""
    import featurenerf_ns.method_configs as mc
    from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig
    from featurenerf_ns.data.procedural.generate import GeneratorSettings, generate_category
    from featurenerf_ns.teachers import TeacherSpec

    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = Path(workdir) / f"n{n}"
    settings = GeneratorSettings(
        "chair",
        num_instances=n,
        resolution=resolution,
        train_views=views,
        eval_views=views,
        supersample=1,
        num_points=256,
    )
    t0 = time.perf_counter()
    generate_category(root, settings, workers=max(1, min(2, os.cpu_count() or 1)))
    out: Dict[str, float] = {"generate_s": time.perf_counter() - t0, "data_disk_mib": _disk_mib(root)}
    rss0 = _rss_mib()
    dm_cfg = copy.deepcopy(mc.featurenerf_tiny.config.pipeline.datamanager)
    assert isinstance(dm_cfg, FeatureNeRFDataManagerConfig)
    dm_cfg.data = dm_cfg.dataparser.data = root / "chair"
    dm_cfg.image_size = resolution
    dm_cfg.teacher = TeacherSpec(weights="random", input_size=56, layer=2, cache_dir=root / "teacher_cache")
    t0 = time.perf_counter()
    dm = dm_cfg.setup(device="cpu", test_mode="val")
    out["setup_s"] = time.perf_counter() - t0  # includes building the teacher cache
    out["rss_after_setup_mib"] = _rss_mib()
    out["rss_setup_growth_mib"] = out["rss_after_setup_mib"] - rss0
    cache_dir = root / "teacher_cache"
    out["cache_disk_mib"] = _disk_mib(cache_dir)
    n_images = sum(np.load(p, mmap_mode="r").shape[0] for p in cache_dir.rglob("*.npy"))
    out["cache_bytes_per_image"] = out["cache_disk_mib"] * 2**20 / max(1, n_images)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        dm.next_train(step)
        times.append(time.perf_counter() - t0)
    warm = min(5, steps // 4)
    out["data_ms_per_step"] = float(np.mean(times[warm:]) * 1e3)
    out["data_ms_per_step_p90"] = float(np.percentile(times[warm:], 90) * 1e3)
    out["rss_after_steps_mib"] = _rss_mib()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["lru_instances"] = float(dm_cfg.max_cached_instances)
    out["train_instances"] = float(len(dm.train_ids))
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return out


def part_scale(
    workdir: Path = Path("outputs/bench_scale"),
    instances: Sequence[int] = SCALE_INSTANCES,
    resolution: int = 32,
    views: int = 8,
    steps: int = 100,
    keep: bool = False,
) -> dict:
    """``scale_point`` for each N, each in its own spawned process; figures keyed ``n<N>_<figure>``."""
    out: dict = {"resolution_px": float(resolution), "views_per_split": float(views), "steps": float(steps)}
    ctx = get_context("spawn")
    for n in instances:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
            res = ex.submit(scale_point, n, workdir, resolution, views, steps, keep).result()
        out.update({f"n{n}_{k}": v for k, v in res.items()})
    return out


def scale_targets(res: dict) -> Dict[str, Tuple[float, str, bool]]:
    """Beyond the LRU, memory and data time must not grow with N: the largest N against the middle one."""
    ns = sorted(int(k[1:].split("_", 1)[0]) for k in res if k.startswith("n") and k.endswith("_peak_rss_mib"))
    if len(ns) < 2:
        return {}
    a, b = ns[-2], ns[-1]
    out: Dict[str, Tuple[float, str, bool]] = {}
    rss = res[f"n{b}_rss_after_steps_mib"] / max(res[f"n{a}_rss_after_steps_mib"], 1e-9)
    out[f"resident memory, {b} / {a} instances"] = (rss, "<= 1.10", rss <= 1.10)
    dt = res[f"n{b}_data_ms_per_step"] / max(res[f"n{a}_data_ms_per_step"], 1e-9)
    out[f"data time per step, {b} / {a} instances"] = (dt, "<= 1.20", dt <= 1.20)
    return out
