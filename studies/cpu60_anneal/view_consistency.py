"""Issue-13 diagnostic: how view-consistent is each descriptor on ONE object? Same instance, conditioned on view i
and on view j (optical axes >= 60 degrees apart): every surface point visible in both views is matched by cosine
nearest neighbour from its feature under conditioning i to the features of the same points under conditioning j;
"self-match PCK@0.1" is the share of points whose match lies within 0.1 of the point itself. No cross-instance
semantics is asked for: this isolates how much a descriptor changes with the conditioning view. The teacher row
samples the 2D teacher's map of each view at the point's projection (the points are visible in both views, so no
occlusion enters). Chance (a random surface point within 0.1) is reported too.

usage (from the study's checkout): python studies/cpu60_anneal/view_consistency.py OUT.json RUN/config.yml [...]
    [--instances 12] [--pairs-per-instance 4] [--points 400] [--teacher]
A model given as RUN/config.yml@CKPT evaluates that checkpoint (e.g. an intermediate step kept aside) instead of
the run's latest one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featurenerf_ns.cameras import world_to_source
from featurenerf_ns.data.layout import atomic_write_json
from featurenerf_ns.eval.providers import ModelProvider, PositionPrior, TeacherProvider, view_camera
from featurenerf_ns.scripts.study import _load_pipeline

NAMES = ("nerf_feature", "nerf_feature_relu", "feature")


def view_pairs(cat, inst: str, rng: np.random.Generator, n: int, min_deg: float = 60.0):
    """n (i, j) view pairs of ``inst`` whose optical axes are at least ``min_deg`` apart."""
    poses = cat.instance(inst).poses
    axes = -poses[:, :3, 2]
    out = []
    while len(out) < n:
        i, j = rng.choice(len(poses), 2, replace=False)
        if np.degrees(np.arccos(np.clip(axes[i] @ axes[j], -1, 1))) >= min_deg:
            out.append((int(i), int(j)))
    return out


def visible_points(prior: PositionPrior, cat, inst: str, i: int, j: int, n: int, rng) -> torch.Tensor:
    """Up to n surface points seen in view i (lifted from its ground-truth depth) that view j sees too."""
    R = cat.instance(inst).width
    d_i = prior._depth(inst, i, R)
    ys, xs = torch.nonzero(d_i > 0, as_tuple=True)
    xy = torch.stack([xs, ys], -1).float() + 0.5
    X = prior.lift(inst, i, xy, R)
    c2w, focal = view_camera(cat, inst, j, R)
    x_cam = world_to_source(X[None], c2w[None, None])[0, 0]
    z = -x_cam[:, 2]
    u = x_cam[:, 0] / z * focal + R / 2
    v = -x_cam[:, 1] / z * focal + R / 2
    inside = (u >= 0) & (u < R) & (v >= 0) & (v < R)
    d_j = prior._depth(inst, j, R)
    ui, vi = u.clamp(0, R - 1).long(), v.clamp(0, R - 1).long()
    seen = inside & (d_j[vi, ui] > 0) & ((d_j[vi, ui] - z).abs() < 0.03)
    X = X[seen]
    if len(X) > n:
        X = X[torch.from_numpy(np.sort(rng.choice(len(X), n, replace=False)))]
    return X


def self_match(fi: torch.Tensor, fj: torch.Tensor, X: torch.Tensor, metric: str = "cosine") -> float:
    if metric == "cosine":
        nn = (F.normalize(fi.float(), dim=-1) @ F.normalize(fj.float(), dim=-1).T).argmax(1)
    else:
        nn = torch.cdist(fi.float(), fj.float()).argmin(1)
    return float(((X[nn] - X).norm(dim=-1) < 0.1).float().mean() * 100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("configs", type=str, nargs="+")
    ap.add_argument("--instances", type=int, default=12)
    ap.add_argument("--pairs-per-instance", type=int, default=4)
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--teacher", action="store_true", help="also the 2D teacher (needs its weights)")
    args = ap.parse_args()
    result = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "configs")}, "models": {}}
    teacher_done = False
    for cfg in args.configs:
        t0 = time.perf_counter()
        cfg_path, _, ckpt = str(cfg).partition("@")
        pipeline, _, step = _load_pipeline(Path(cfg_path))
        if ckpt:
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            step = int(state["step"])
            pipeline.load_pipeline(state["pipeline"], step)
        pipeline.eval()
        dm, model = pipeline.datamanager, pipeline.model
        cat = dm.cat
        prior = PositionPrior(cat, "object")
        names = [n for n in NAMES if n in model.feature_names()]
        provider = ModelProvider(model, dm, names)
        rng = np.random.default_rng(0)  # the same instances, pairs and points for every model
        scores = {n: [] for n in names}
        chance, teacher = [], []
        tp = None
        if args.teacher and not teacher_done:
            tp = TeacherProvider(cat, dm.config.teacher.setup(device="cpu"))
        for inst in cat.ids("test")[: args.instances]:
            for i, j in view_pairs(cat, inst, rng, args.pairs_per_instance):
                X = visible_points(prior, cat, inst, i, j, args.points, rng)
                if len(X) < 10:
                    continue
                fi, fj = provider.points(inst, i, X), provider.points(inst, j, X)
                for n in names:
                    scores[n].append(self_match(fi[n], fj[n], X))
                perm = torch.from_numpy(rng.permutation(len(X)))
                chance.append(float(((X[perm] - X).norm(dim=-1) < 0.1).float().mean() * 100))
                if tp is not None:
                    teacher.append(
                        self_match(tp.points(inst, i, X)["teacher2d"], tp.points(inst, j, X)["teacher2d"], X)
                    )
        row = {n: round(float(np.mean(v)), 1) for n, v in scores.items()}
        row.update(step=step, pairs=len(chance), chance=round(float(np.mean(chance)), 1))
        if teacher:
            result["teacher2d"] = round(float(np.mean(teacher)), 1)
            teacher_done = True
        result["models"][str(cfg)] = row
        print(cfg, row, f"{time.perf_counter() - t0:.0f} s", flush=True)
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
