"""Sanity evaluation of a teacher on its own: 2D cross-instance keypoint transfer (the paper's "DINO baseline").

A pair is two different instances seen from the same view index (as the official protocol); every keypoint
visible in both is transferred from the source to the most similar (cosine) target foreground pixel, with the
teacher map bilinearly sampled at pixel centres. PCK thresholds are pixels at 128 x 128, scaled with the
resolution. Proves that weights really loaded: a trained network beats the same network with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from featurenerf_ns.instances import CategoryData, load_rgba
from featurenerf_ns.metrics import PCK_THRESHOLDS_2D, nn_match, pck
from featurenerf_ns.teachers.base import Teacher, sample_map


@dataclass(frozen=True)
class KeypointPair:
    source: str
    target: str
    view: int


def cross_instance_pairs(cat: CategoryData, ids: Sequence[str], num_pairs: int, seed: int = 0) -> List[KeypointPair]:
    """``num_pairs`` distinct (source, target, view) triples with >= 1 keypoint visible in both; deterministic."""
    if len(ids) < 2:
        raise ValueError(f"need >= 2 instances for cross-instance pairs, got {len(ids)}")
    vis = {i: cat.view_annotations(i)["kp_visible"] for i in ids}
    rng = np.random.default_rng(seed)
    n_views = min(v.shape[0] for v in vis.values())
    candidates = [(s, t, v) for s in ids for t in ids if s != t for v in range(n_views)]
    order = rng.permutation(len(candidates))
    pairs = []
    for k in order:
        s, t, v = candidates[k]
        if (vis[s][v] & vis[t][v]).any():
            pairs.append(KeypointPair(s, t, v))
            if len(pairs) == num_pairs:
                break
    return pairs


class TeacherFeatures:
    """Teacher maps for (instance, view), computed on demand in batches and memoised."""

    def __init__(self, cat: CategoryData, teacher: Teacher):
        self.cat, self.teacher = cat, teacher
        self.memo: Dict[Tuple[str, int], torch.Tensor] = {}
        self.images = 0

    def prefetch(self, needed: Sequence[Tuple[str, int]]) -> None:
        todo = sorted({k for k in needed if k not in self.memo})
        bs = self.teacher.config.batch_size
        for i in range(0, len(todo), bs):
            chunk = todo[i : i + bs]
            rgba = np.stack([load_rgba(self.cat.instance(inst).image_paths[v]) for inst, v in chunk])
            t = torch.from_numpy(rgba).permute(0, 3, 1, 2)
            fmap = self.teacher.extract(t[:, :3], t[:, 3:], category=self.cat.category)
            for k, f in zip(chunk, fmap.features):
                self.memo[k] = f.half()
            self.images += len(chunk)

    def __call__(self, inst: str, view: int) -> torch.Tensor:
        if (inst, view) not in self.memo:
            self.prefetch([(inst, view)])
        return self.memo[(inst, view)].float()


def keypoint_transfer_2d(cat: CategoryData, features: TeacherFeatures, pairs: Sequence[KeypointPair],
                         thresholds: Sequence[float] = PCK_THRESHOLDS_2D, progress: Optional[callable] = None) -> Dict[str, float]:
    """PCK (percent) of 2D keypoint transfer over all shared visible keypoints of ``pairs``."""
    features.prefetch([(p.source, p.view) for p in pairs] + [(p.target, p.view) for p in pairs])
    views = {}
    errors = []
    for p in pairs:
        for i in (p.source, p.target):
            if i not in views:
                views[i] = cat.view_annotations(i)
        src, tgt = views[p.source], views[p.target]
        shared = src["kp_visible"][p.view] & tgt["kp_visible"][p.view]
        H, W = tgt["parts"].shape[-2:]
        fs, ft = features(p.source, p.view), features(p.target, p.view)
        q = sample_map(fs[None], torch.from_numpy(src["kp2d"][p.view][shared]).float()[None], (H, W))[0]
        ys, xs = np.nonzero(tgt["depth"][p.view] > 0)  # ground-truth foreground of the target view
        centres = torch.from_numpy(np.stack([xs, ys], 1) + 0.5).float()
        cand = sample_map(ft[None], centres[None], (H, W))[0]
        idx, _ = nn_match(q, cand)
        pred = centres[idx].numpy()
        errors.extend(np.linalg.norm(pred - tgt["kp2d"][p.view][shared], axis=1) * (128.0 / W))
        if progress:
            progress()
    out = pck(errors, thresholds)
    out["num_pairs"] = len(pairs)
    out["num_keypoints"] = len(errors)
    return out
