"""Issue-13 diagnostic: how much of a trained model's internal feature is *view-frame position*, and how well the
feature transfers across views once that part is taken out.

For a model conditioned on one view, the field's input at a point x is the positional encoding of x in the
conditioning camera's frame plus the view direction, e = [PE(x_cam), x_cam / |x_cam|] (E = 42 values at 6
frequencies); the internal feature v (hidden) is a residual stream that starts at lin_in(e). On cross-view pairs that
component of v actively misleads the match (the two objects' frames differ), which is what the view-frame position
prior scores.

Per model (and per feature: the internal ``nerf_feature`` v and the distilled head ``feature``):

1. **Position share.** Ridge regression Y ~ [e, 1] W fitted on the *train* instances (``--fit-instances`` of them,
   ``--fit-views`` random views each, the surface points of their shape annotation), R^2 = 1 - SSE/SST summed over the
   feature's dimensions, on the fit set and on the protocol's *test* instances (held out). Also against the aligned
   object frame's encoding PE(x) (what a semantic descriptor may legitimately carry on aligned categories).
2. **Where the head looks.** The distilled head is W relu(v) + b with W = U S V^T (D x hidden), so its cosine
   geometry is that of S V^T relu(v): relu(v) re-weighted by the singular values along V. Reported: the share of
   relu(v)'s variance (centred, fit set) in the top-k right-singular directions of W (k = 8, 32), next to the
   share of S^2 there; and ``nerf_feature_relu`` = relu(v) (the head's input, unweighted) as a descriptor, which
   separates the activation from the re-weighting.
3. **Position-free descriptor.** ``<feature>_posfree`` = Y - [e, 1] W (the part of the feature the view-frame fit does
   not explain) and ``<feature>_posfit`` = [e, 1] W (the explained part alone), scored with the project's own
   correspondence evaluation (cosine nearest neighbour) on the first ``--pairs`` pairs of protocol v2's 3D tasks:
   same-view cross-instance and cross-view cross-instance, so the raw rows equal the study's evaluation.

usage (from the study's checkout, so the code matches the checkpoints):
  python studies/diag13_anatomy/anatomy.py OUT.json RUN/config.yml [RUN/config.yml ...] [--pairs 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from featurenerf_ns.cameras import world_to_source
from featurenerf_ns.data.layout import atomic_write_json
from featurenerf_ns.eval.correspondence import evaluate
from featurenerf_ns.eval.protocols import resolve_protocol
from featurenerf_ns.eval.providers import REFERENCE_RESOLUTION, FeatureProvider, ModelProvider, view_camera
from featurenerf_ns.fields.featurenerf_field import positional_encoding
from featurenerf_ns.scripts.study import _load_pipeline

TASKS = ("kp3d_cross", "part3d_cross", "kp3d_xview", "part3d_xview")


def view_frame_encoding(cat, inst: str, view: int, xyz: torch.Tensor, num_freqs: int, freq_factor: float):
    """(P, 3) world points -> (P, E): the field's input for these points under conditioning view ``view``."""
    c2w, _ = view_camera(cat, inst, view, REFERENCE_RESOLUTION)
    x_cam = world_to_source(xyz.float()[None], c2w[None, None])[0, 0]
    return torch.cat([positional_encoding(x_cam, num_freqs, freq_factor), F.normalize(x_cam, dim=-1)], -1)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-3) -> torch.Tensor:
    """argmin_W |[x, 1] W - y|^2 + lam |W|^2 (float64 normal equations); x (P, E), y (P, D) -> W (E + 1, D)."""
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1).double()
    a = xb.T @ xb + lam * len(x) * torch.eye(xb.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, xb.T @ y.double()).float()


def apply(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1)], 1) @ w


def r2(y: torch.Tensor, pred: torch.Tensor) -> float:
    """Fraction of the feature's total variance (all dimensions pooled) explained by ``pred``."""
    y, pred = y.double(), pred.double()
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


class PositionSplitProvider(FeatureProvider):
    """A model's 3D point features, plus each feature's view-frame-fitted part (``_posfit``) and the rest
    (``_posfree``), and relu of the internal feature (``nerf_feature_relu``: the heads' input)."""

    has_pixels = False

    def __init__(self, base: ModelProvider, fits: Dict[str, torch.Tensor], pe: Tuple[int, float]):
        self.base, self.fits, self.pe = base, fits, pe
        fitted = tuple(n for n in base.names if n != "nerf_feature_relu")
        self.names = tuple(n + s for n in fitted for s in ("", "_posfree", "_posfit")) + ("nerf_feature_relu",)

    def points(self, inst, input_view, xyz):
        out = with_relu(self.base.points(inst, input_view, xyz))
        e = view_frame_encoding(self.base.cat, inst, input_view, xyz, *self.pe)
        res = {"nerf_feature_relu": out.pop("nerf_feature_relu")}
        for n, f in out.items():
            fit = apply(e, self.fits[n])
            res.update({n: f, n + "_posfree": f - fit, n + "_posfit": fit})
        return res


def with_relu(out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``nerf_feature_relu`` added where the model does not return it itself (code before 2026-12-06)."""
    return out if "nerf_feature_relu" in out else {**out, "nerf_feature_relu": F.relu(out["nerf_feature"])}


def head_spectrum_share(model, basis: torch.Tensor, ks=(8, 32)) -> Dict[str, float]:
    """Share of the centred variance of ``basis`` = relu(v) (P, hidden) in the top-k right-singular directions of
    the distilled head's weight W (D, hidden), and the share of W's squared singular values there."""
    f = model.field
    d = f.head_sizes["density"] + f.head_sizes["rgb"]
    w = f.head.weight[d : d + f.feature_dim].detach().float().cpu()
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    x = (basis - basis.mean(0)).double()
    total = float((x**2).sum())
    out = {}
    for k in ks:
        proj = x @ vh[:k].T.double()
        out[f"top{k}_variance_share"] = float((proj**2).sum()) / total
        out[f"top{k}_singular_energy_share"] = float((s[:k] ** 2).sum() / (s**2).sum())
    return out


def collect(prov: ModelProvider, cat, pairs: List[Tuple[str, int]], pe, points: int, rng) -> Dict[str, torch.Tensor]:
    """Features, view-frame encodings and object-frame encodings at surface points of (instance, view) pairs."""
    acc: Dict[str, List[torch.Tensor]] = {}
    for inst, view in pairs:
        pts = torch.from_numpy(cat.shape_annotations(inst)["points"]).float()
        pts = pts[torch.from_numpy(rng.choice(len(pts), min(points, len(pts)), replace=False))]
        f = with_relu(prov.points(inst, view, pts))
        f["view_frame"] = view_frame_encoding(cat, inst, view, pts, *pe)
        f["object_frame"] = positional_encoding(pts, *pe)
        for k, v in f.items():
            acc.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in acc.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("configs", type=Path, nargs="+")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--fit-instances", type=int, default=24)
    ap.add_argument("--fit-views", type=int, default=4)
    ap.add_argument("--points", type=int, default=512)
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for cfg in args.configs:
        t0 = time.perf_counter()
        pipeline, ckpt, step = _load_pipeline(cfg)
        model, dm = pipeline.model, pipeline.datamanager
        cat = dm.cat
        fc = model.config.field
        pe = (fc.num_freqs, fc.freq_factor)
        prov = ModelProvider(model, dm, model.feature_names(), pipeline.correspondence_config.chunk)
        rng = np.random.default_rng(0)
        train = [str(i) for i in cat.ids("train")][: args.fit_instances]
        fit_pairs = [(i, int(v)) for i in train for v in rng.choice(len(cat.instance(i).poses), args.fit_views, False)]
        proto = resolve_protocol(cat, "test").subset(args.pairs)
        test_pairs = sorted({(s, vs) for s, _, vs, _ in proto.cross_view} | {(t, vt) for _, t, _, vt in proto.cross_view})
        with torch.no_grad(), model.evaluating():
            fit = collect(prov, cat, fit_pairs, pe, args.points, rng)
            held = collect(prov, cat, test_pairs[:48], pe, args.points, rng)
            shares, fits = {}, {}
            for n in (n for n in prov.names if n != "nerf_feature_relu"):
                w_view = ridge(fit["view_frame"], fit[n])
                w_obj = ridge(fit["object_frame"], fit[n])
                fits[n] = w_view
                shares[n] = {
                    "r2_view_frame_fit": r2(fit[n], apply(fit["view_frame"], w_view)),
                    "r2_view_frame_held_out": r2(held[n], apply(held["view_frame"], w_view)),
                    "r2_object_frame_fit": r2(fit[n], apply(fit["object_frame"], w_obj)),
                    "r2_object_frame_held_out": r2(held[n], apply(held["object_frame"], w_obj)),
                    "dim": int(fit[n].shape[1]),
                }
            head = head_spectrum_share(model, fit["nerf_feature_relu"]) if "feature" in prov.names else {}
            split = PositionSplitProvider(prov, fits, pe)
            metrics, _ = evaluate(split, cat, proto, TASKS)
        key = str(cfg)
        results[key] = {
            "checkpoint": str(ckpt),
            "step": int(step) + 1,
            "method": model.config.method_name if hasattr(model.config, "method_name") else cfg.parent.parent.name,
            "category": cat.category,
            "hidden_dim": fc.hidden_dim,
            "pairs": args.pairs,
            "fit": {"instances": len(train), "views_each": args.fit_views, "points_each": args.points},
            "held_out_pairs": len(test_pairs[:48]),
            "position_share": shares,
            "head_spectrum": head,
            "metrics": metrics,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        atomic_write_json(args.out, results)
        print(cfg)
        for n in shares:
            s = shares[n]
            print(f"  {n}: R2 view-frame fit {s['r2_view_frame_fit']:.3f} held-out {s['r2_view_frame_held_out']:.3f};"
                  f" object-frame {s['r2_object_frame_fit']:.3f} / {s['r2_object_frame_held_out']:.3f}")
            for v in ("", "_posfree", "_posfit") + (("_relu",) if n == "nerf_feature" else ()):
                row = [metrics.get(f"{n}{v}/{t}", float("nan")) for t in
                       ("part3d_cross/miou", "kp3d_cross/pck@0.1", "part3d_xview/miou", "kp3d_xview/pck@0.1")]
                print(f"    {n + v:28s} same-view part {row[0]:5.1f} kp {row[1]:5.1f} | cross-view part {row[2]:5.1f}"
                      f" kp {row[3]:5.1f}")
        print("  head spectrum:", {k: round(v, 3) for k, v in head.items()})


if __name__ == "__main__":
    main()
