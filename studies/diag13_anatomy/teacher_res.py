"""Issue-13 diagnostic, teacher quality: the teacher-2D baseline (DINOv2 ViT-S/14 block 9 tokens) at input sizes
224 (our default: a 16 x 16 map) and 448 (32 x 32, the official DINO ViT-S/8's map size), on the study's first
``--pairs`` pairs of protocol v2, same-view and cross-view, 2D and 3D. Thin airplane parts cover few 16 x 16 patches.

usage: python studies/diag13_anatomy/teacher_res.py OUT.json RUN/config.yml [--sizes 224 448] [--pairs 200]
(any run of the category: only its data manager and protocol are used, the model is not)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from featurenerf_ns.data.layout import atomic_write_json
from featurenerf_ns.scripts.study import _load_pipeline

TASKS = ("kp2d_cross", "part2d_cross", "kp3d_cross", "part3d_cross", "kp2d_xview", "part2d_xview", "kp3d_xview",
         "part3d_xview")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("config", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    ap.add_argument("--pairs", type=int, default=200)
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    pipeline, _, _ = _load_pipeline(args.config)
    pipeline.correspondence_config.tasks = TASKS
    dm = pipeline.datamanager
    base = dm.config.teacher
    for size in args.sizes:
        t0 = time.perf_counter()
        dm.config.teacher = dataclasses.replace(base, input_size=size)
        m, _ = pipeline.correspondence_metrics(args.pairs, teacher=True, model=False)
        results[str(size)] = {"teacher": dataclasses.asdict(dm.config.teacher), "pairs": args.pairs, "metrics": m,
                              "seconds": round(time.perf_counter() - t0, 1)}
        atomic_write_json(args.out, results)
        cat = dm.cat.category
        print(size, {t: round(m.get(f"{cat}/teacher2d/{t}", float("nan")), 1) for t in
                     ("part2d_cross/miou", "part3d_cross/miou", "part2d_xview/miou", "part3d_xview/miou",
                      "kp2d_xview/pck@10", "kp3d_xview/pck@0.1")})


if __name__ == "__main__":
    main()
