"""Correspondence metrics shared by every evaluation: one cosine nearest-neighbour matcher, PCK and part mIoU.

The matcher runs chunked on whatever device its inputs are on, so the same code serves the teacher baseline,
the model's internal/distilled features and 2D or 3D candidates.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

PCK_THRESHOLDS_2D = (2.5, 5.0, 7.5, 10.0)
"""Pixels at 128 x 128 (scaled with the image resolution)."""
PCK_THRESHOLDS_3D = (0.025, 0.05, 0.075, 0.1)
"""Normalised object units."""


def nn_match(
    query: torch.Tensor, candidates: torch.Tensor, chunk: int = 8192, metric: str = "cosine"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest neighbour: query (Q, D), candidates (N, D) -> (index (Q,) into candidates, score (Q,)).

    ``cosine`` (the paper's matcher): both are L2-normalised here (zero vectors stay zero and match with similarity
    0), score = cosine similarity. ``euclidean`` (position priors): argmin ||q - c||, score = -||q - c||^2, computed
    as argmax of 2 q.c - ||c||^2 (one matmul per chunk). Candidates are processed in chunks of ``chunk`` rows, so
    memory is O(Q * chunk). Ties resolve to the lowest index (deterministic).
    """
    if query.ndim != 2 or candidates.ndim != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"nn_match: expected (Q, D) and (N, D) with equal D, got {tuple(query.shape)} and {tuple(candidates.shape)}"
        )
    if candidates.shape[0] == 0:
        raise ValueError("nn_match: no candidates")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"nn_match: metric {metric!r} unknown; choose cosine or euclidean")
    q = F.normalize(query.float(), dim=1) if metric == "cosine" else query.float()
    best_sim = torch.full((q.shape[0],), -float("inf"), device=q.device)
    best_idx = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    for start in range(0, candidates.shape[0], chunk):
        c = candidates[start : start + chunk].to(q.device).float()
        if metric == "cosine":
            sim, idx = (q @ F.normalize(c, dim=1).T).max(dim=1)
        else:
            sim, idx = (2 * q @ c.T - c.pow(2).sum(1)[None]).max(dim=1)
        better = sim > best_sim
        best_sim = torch.where(better, sim, best_sim)
        best_idx = torch.where(better, idx + start, best_idx)
    if metric == "euclidean":
        best_sim = best_sim - q.pow(2).sum(1)
    return best_idx, best_sim


def pck(errors: Iterable[float], thresholds: Sequence[float]) -> Dict[str, float]:
    """Percentage of errors strictly below each threshold (keys ``pck@<t>``; strict as the official evaluation: an
    error of exactly 5 px, frequent on integer pixel grids, misses PCK@5), in percent; NaN when there are no errors."""
    e = np.asarray(list(errors), dtype=np.float64)
    return {f"pck@{t:g}": (float((e < t).mean() * 100.0) if e.size else float("nan")) for t in thresholds}


def part_iou(pred: np.ndarray, gt: np.ndarray, labels: Optional[Iterable[int]] = None) -> float:
    """Mean IoU (percent) over ``labels`` (default: labels present in ``gt``) of two label arrays of equal shape."""
    pred, gt = np.asarray(pred).ravel(), np.asarray(gt).ravel()
    labels = np.unique(gt) if labels is None else np.asarray(list(labels))
    ious = []
    for lab in labels:
        p, g = pred == lab, gt == lab
        union = np.logical_or(p, g).sum()
        if union:
            ious.append(np.logical_and(p, g).sum() / union)
    return float(np.mean(ious) * 100.0) if ious else float("nan")
