"""Teacher extraction in float32 vs bfloat16 autocast: images/s and how far the features move.

DINOv2 ViT-S/14 (block 9 token, 224 px, the default teacher) on 48 views of two procedural chairs (128 px), two
alternating rounds per precision in one process; agreement per foreground map cell (cosine) and overall (relative
L2 error). For comparison, the float16 storage rounding of the cache. Run from the repository root on generated data:

    python docs/bench/teacher_precision.py [--data data/shapenet/chair] [--out docs/bench/teacher_precision.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.layout import atomic_write_json
from featurenerf_ns.teachers import make_teacher_config
from featurenerf_ns.teachers.image_sets import load_views


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/shapenet/chair")
    ap.add_argument("--out", default=None)
    ap.add_argument("--views", type=int, default=24)
    args = ap.parse_args()
    cat = CategoryData(Path(args.data))
    recs = [cat.instance(i) for i in cat.ids("train")[:2]]
    rgb, alpha = map(torch.cat, zip(*[load_views(r, range(args.views)) for r in recs]))
    teachers = {p: make_teacher_config("dinov2-vits14", precision=p).setup() for p in ("float32", "bfloat16")}
    teachers["float32"].extract(rgb[:8], alpha[:8])  # warm-up
    teachers["bfloat16"].extract(rgb[:8], alpha[:8])
    rates = {p: [] for p in teachers}
    feats = {}
    for _ in range(2):
        for p, t in teachers.items():
            t0 = time.perf_counter()
            feats[p] = t.extract(rgb, alpha).features
            rates[p].append(rgb.shape[0] / (time.perf_counter() - t0))
    a, b = feats["float32"], feats["bfloat16"]
    fg = a.flatten(2).norm(dim=1) > 1e-3
    cos = F.cosine_similarity(a.flatten(2), b.flatten(2), dim=1)[fg]
    f16 = a.half().float()
    res = {
        "images": int(rgb.shape[0]),
        "images_per_s": {p: [round(r, 1) for r in v] for p, v in rates.items()},
        "cosine_fg_cells_mean": round(cos.mean().item(), 6),
        "cosine_fg_cells_min": round(cos.min().item(), 6),
        "relative_l2_error_bf16": round(((a - b).norm() / a.norm()).item(), 5),
        "relative_l2_error_float16_storage": round(((a - f16).norm() / a.norm()).item(), 6),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(res, indent=1))
    if args.out:
        atomic_write_json(Path(args.out), res)


if __name__ == "__main__":
    main()
