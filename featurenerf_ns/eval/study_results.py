"""A study's results as rows: one :class:`Entry` per (category, method feature or baseline) with its per-seed values,
the labels and row order of the paper-style tables, the Markdown tables, and the issue's acceptance checks. Pure:
the study command reads the files (``featurenerf_ns.scripts.study_report``) and hands the entries over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from featurenerf_ns.eval.providers import PRIOR_LABELS

METHOD_LABELS = {
    "featurenerf": "FeatureNeRF (DINOv2), internal feature",
    "featurenerf:feature": "FeatureNeRF (DINOv2), distilled head",
    "featurenerf-nodistill": "NeRF feature (no distill)",
    "featurenerf-nocoord": "FeatureNeRF w/o L_coord, internal feature",
    "featurenerf-nocoord:feature": "FeatureNeRF w/o L_coord, distilled head",
    "featurenerf:nerf_feature_centred": "FeatureNeRF (DINOv2), internal feature centred per object",
    "featurenerf-nodistill:nerf_feature_centred": "NeRF feature (no distill), centred per object",
    "featurenerf-nocoord:nerf_feature_centred": "FeatureNeRF w/o L_coord, internal feature centred per object",
    "featurenerf:nerf_feature_relu": "FeatureNeRF (DINOv2), internal feature after ReLU",
    "featurenerf-nodistill:nerf_feature_relu": "NeRF feature (no distill), after ReLU",
    "featurenerf-nocoord:nerf_feature_relu": "FeatureNeRF w/o L_coord, internal feature after ReLU",
}
FEATURE_KEYS = {
    "nerf_feature": "",
    "feature": ":feature",
    "nerf_feature_centred": ":nerf_feature_centred",
    "nerf_feature_relu": ":nerf_feature_relu",
}
"""Evaluated feature name -> suffix of its entry key after the method family (the internal feature has none)."""
BASELINE_LABELS = {"teacher2d": "Teacher 2D (DINOv2 ViT-S/14)", "untrained": "Untrained network (init)", **PRIOR_LABELS}


def family(method: str) -> str:
    return method[:-5] if method.endswith("-tiny") else method


@dataclass
class Entry:
    """One row: a method's feature (or a baseline) in one category, with per-seed metric values."""

    category: str
    key: str  # e.g. featurenerf, featurenerf:feature, featurenerf-nodistill, teacher2d, view_frame_prior
    label: str
    values: Dict[str, List[float]]  # "<task>/<metric>" (or psnr, ssim) -> one value per seed

    def mean(self, k: str) -> float:
        v = [x for x in self.values.get(k, []) if x is not None and not math.isnan(x)]
        return float(np.mean(v)) if v else float("nan")

    def spread(self, k: str) -> float:
        v = [x for x in self.values.get(k, []) if x is not None and not math.isnan(x)]
        return float(np.std(v)) if len(v) > 1 else float("nan")

    def fmt(self, k: str, digits: int = 1) -> str:
        m, s = self.mean(k), self.spread(k)
        if math.isnan(m):
            return "—"
        return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if not math.isnan(s) else "")


ORDER = [
    "featurenerf",
    "featurenerf:feature",
    "featurenerf-nodistill",
    "featurenerf-nocoord",
    "featurenerf-nocoord:feature",
    "featurenerf:nerf_feature_centred",
    "featurenerf-nodistill:nerf_feature_centred",
    "featurenerf-nocoord:nerf_feature_centred",
    "featurenerf:nerf_feature_relu",
    "featurenerf-nodistill:nerf_feature_relu",
    "featurenerf-nocoord:nerf_feature_relu",
    "teacher2d",
    "untrained",
    "view_frame_prior",
    "alignment_oracle",
]


def sorted_entries(entries: Sequence[Entry]) -> List[Entry]:
    return sorted(entries, key=lambda e: ORDER.index(e.key) if e.key in ORDER else len(ORDER))


def table(
    entries: List[Entry], cats: Sequence[str], rows: Sequence[Tuple[str, str]], keys: Optional[Sequence[str]] = None
) -> str:
    """rows = (row title prefix, metric key); one line per (row, entry key); columns = categories."""
    out = ["| | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]
    for title, k in rows:
        seen = [e.key for e in sorted_entries(entries)]
        for key in dict.fromkeys(seen):
            if keys is not None and key not in keys:
                continue
            cells, label = [], None
            for c in cats:
                e = next((x for x in entries if x.category == c and x.key == key), None)
                label = label or (e.label if e else None)
                cells.append(e.fmt(k) if e else "—")
            if all(x == "—" for x in cells):
                continue
            out.append(f"| {title} {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _n(v: float, digits: int = 1, sign: bool = False) -> str:
    """A number for the checks' prose; "n/a" where a run is missing (nan)."""
    return "n/a" if math.isnan(v) else (f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}")


def acceptance(entries: List[Entry], baselines: Dict[str, dict], cat: str) -> List[str]:
    """The issue's checks on the cross-view protocol, each with its margin (means over the seeds evaluated)."""

    def entry(key: str) -> Optional[Entry]:
        return next((x for x in entries if x.category == cat and x.key == key), None)

    def get(key, k):
        e = entry(key)
        return e.mean(k) if e else float("nan")

    def seeds(key: str) -> int:
        e = entry(key)
        return len([v for v in e.values.get("psnr", []) if v is not None]) if e else 0

    def verdict(ok: bool, *vals: float) -> str:
        return "not measured yet" if any(math.isnan(v) for v in vals) else ("met" if ok else "NOT met")

    def better(a: float, b: float, name_a: str, name_b: str) -> str:
        if math.isnan(a) or math.isnan(b):
            return "not measured yet"
        return f"{name_a if a >= b else name_b} is better, by {abs(a - b):.1f}"

    lines = [f"- seeds evaluated: FeatureNeRF {seeds('featurenerf')}, no-distill {seeds('featurenerf-nodistill')}"]
    for task, name in (("part3d_xview/miou", "3D part mIoU"), ("kp3d_xview/pck@0.1", "3D kp PCK@0.1")):
        fn, nd, te = get("featurenerf", task), get("featurenerf-nodistill", task), get("teacher2d", task)
        un, vf, head = get("untrained", task), get("view_frame_prior", task), get("featurenerf:feature", task)
        cen = get("featurenerf:nerf_feature_centred", task)
        relu, relu_nd = get("featurenerf:nerf_feature_relu", task), get("featurenerf-nodistill:nerf_feature_relu", task)
        below = max(un, vf) < min(fn, nd)
        lines.append(
            f"- cross-view {name}: FeatureNeRF internal {_n(fn)} vs no-distill {_n(nd)}: {_n(fn - nd, sign=True)} "
            f"(target ≥ +5: {verdict(fn - nd >= 5, fn, nd)}); vs teacher-2D {_n(te)}: {_n(fn - te, sign=True)} "
            f"({verdict(fn > te, fn, te)}); untrained {_n(un)} and view-frame prior {_n(vf)} below both trained "
            f"models: {verdict(below, un, vf, fn, nd)}; distilled head {_n(head)} "
            f"({better(fn, head, 'internal feature', 'distilled head')})"
            + (
                f"; internal feature centred per object {_n(cen)} ({_n(cen - fn, sign=True)})"
                if not math.isnan(cen)
                else ""
            )
            + (
                f"; internal feature after ReLU (the heads' input) {_n(relu)} vs no-distill's {_n(relu_nd)}: "
                f"{_n(relu - relu_nd, sign=True)} ({verdict(relu - relu_nd >= 5, relu, relu_nd)} at +5); after ReLU "
                f"vs distilled head: {better(relu, head, 'internal after ReLU', 'distilled head')}"
                if not math.isnan(relu)
                else ""
            )
        )
    black = baselines.get(cat, {}).get("results", {}).get("black_psnr", float("nan"))
    p_fn, p_nd = get("featurenerf", "psnr"), get("featurenerf-nodistill", "psnr")
    lines.append(
        f"- PSNR: FeatureNeRF {_n(p_fn, 2)} dB, no-distill {_n(p_nd, 2)}, all-black {_n(black, 2)}: "
        f"{_n(p_fn - black, 2, True)} dB above black (target ≥ +5: {verdict(p_fn - black >= 5, p_fn, black)}); "
        f"distilled − no-distill {_n(p_fn - p_nd, 2, True)} dB "
        f"(target |Δ| ≤ 0.5 over seeds: {verdict(abs(p_fn - p_nd) <= 0.5, p_fn, p_nd)})"
    )
    return lines


def curve_slope(curve: Sequence[dict], key: str = "psnr", from_fraction: float = 0.25) -> Tuple[float, int]:
    """Least-squares slope of metric ``key`` against log2(step) over the learning-curve rows at or after
    ``from_fraction`` of the last step (its gain per doubling of the steps: "is the curve still rising?"), and the
    number of points used; nan with fewer than 3 points."""
    rows = [(r["step"], r.get("metrics", {}).get(key)) for r in curve if r.get("step", 0) > 0]
    if not rows:
        return float("nan"), 0
    last = max(s for s, _ in rows)
    pts = [(s, v) for s, v in rows if s >= from_fraction * last and v is not None and not math.isnan(v)]
    if len(pts) < 3:
        return float("nan"), len(pts)
    x = np.log2([s for s, _ in pts])
    y = np.array([v for _, v in pts], dtype=float)
    return float(np.polyfit(x, y, 1)[0]), len(pts)


def steps_to_reach(value_now: float, target: float, slope: float, steps_now: int) -> float:
    """Steps at which a metric growing ``slope`` per doubling of the steps from ``value_now`` at ``steps_now``
    reaches ``target`` (log-linear extrapolation; inf when it does not grow, steps_now when already there)."""
    if any(math.isnan(v) for v in (value_now, target, slope)):
        return float("nan")
    if value_now >= target:
        return float(steps_now)
    if slope <= 0:
        return float("inf")
    return float(steps_now * 2.0 ** ((target - value_now) / slope))
