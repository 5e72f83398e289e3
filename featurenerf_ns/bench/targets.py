"""The issues' speed targets against the official code's figures on this machine (reference facts)."""

from __future__ import annotations

from typing import Dict, Tuple

from featurenerf_ns.bench.scale import scale_targets
from featurenerf_ns.bench.smoothing import smoothing_targets

OFFICIAL_PAPER_STEP_S = 12.3
"""The official FeatureNeRF code's training step at its paper configuration on this 2-core CPU (reference facts)."""
OFFICIAL_QUERY_S = 0.40
"""The official code: encode one view + the 512-d feature at 10,000 points, same machine (0.40-0.46 s)."""


def targets(results: Dict[str, dict]) -> Dict[str, Tuple[float, str, bool]]:
    """The issues' CPU targets that the measured parts cover: name -> (value, limit, met)."""
    out: Dict[str, Tuple[float, str, bool]] = {}
    field = results.get("field", {})
    for suffix, label in (("", "float32"), ("_bf16", "bfloat16")):
        key = f"paper_fraction_of_matmul_peak{suffix}"
        if key in field:
            v = field[key]
            out[f"field GFLOP/s / {label} matmul peak (paper preset)"] = (v, ">= 0.5", v >= 0.5)
    step = results.get("step", {})
    best = [step[k] for k in step if k.startswith("paper_") and k.endswith("_total_ms")]
    if best:
        v = min(best) / 1e3
        out["paper-preset training step, s (fastest precision)"] = (
            v,
            f"<= {OFFICIAL_PAPER_STEP_S / 4:.2f} (official / 4)",
            v <= OFFICIAL_PAPER_STEP_S / 4,
        )
    tiny = [step[k] for k in step if k.startswith("tiny_") and k.endswith("_total_ms")]
    if tiny:
        v = min(tiny)
        out["tiny training step, ms (fastest precision)"] = (v, "<= 168 (2x the 336 ms of 2026-11-22)", v <= 168)
    inf = results.get("inference", {})
    qs = [inf[k] for k in inf if k.startswith("query_encode_plus_10k_points_")]
    if qs:
        v = min(qs)
        out["query: encode + 10k points (512-d), s"] = (v, "<= 0.2 (official 0.40 / 2)", v <= 0.2)
    if "pair_3d_transfer_10k_points_s" in inf:
        v = inf["pair_3d_transfer_10k_points_s"]
        out["3D transfer of a pair, s"] = (v, "<= 1", v <= 1.0)
    for key, label in (
        ("render_128px_feature_map_s", "128² feature render (float32), s"),
        ("render_128px_feature_map_bf16_s", "128² feature render (bfloat16, viewer default here), s"),
    ):
        if key in inf:
            out[label] = (inf[key], "<= 2", inf[key] <= 2.0)
    out.update(scale_targets(results.get("scale", {})))
    out.update(smoothing_targets(results.get("smoothing", {})))
    return out
