"""Zero-shot correspondence evaluation: keypoint transfer and part label transfer, 2D and 3D, across instances
and across views, on any feature source.

Tasks (``TASKS``), all by cosine nearest neighbour (:func:`featurenerf_ns.eval.metrics.nn_match`):

* ``kp2d_cross`` / ``kp2d_novel``: each source keypoint visible in both views goes to the most similar target
  foreground pixel; PCK at 2.5/5/7.5/10 px measured at 128 x 128 (errors at other resolutions are rescaled);
* ``part2d_cross`` / ``part2d_novel``: each target foreground pixel takes the label of its most similar source
  foreground pixel; IoU over the part labels present in both, averaged per pair, then over pairs;
* ``kp3d_cross``: each source 3D keypoint (present in both shapes) goes to the most similar target surface point
  (official annotations: the most similar of the target's ``kp_3d_anno`` candidate points, as official); PCK at
  0.025/0.05/0.075/0.1 in the data's object units;
* ``part3d_cross``: each target surface point takes the label of its most similar source surface point; mIoU.

``*_cross`` pairs are two instances seen from the same view, each conditioned on that view; ``*_novel`` pairs are
one instance conditioned on its source view, with features rendered at the target view; ``*_xview`` pairs
(protocol v2) are two instances, the source conditioned on and seen from its view i, the target from a view j at
least 60 degrees away (2D and 3D, keypoints and parts, scored exactly like ``*_cross``). Foreground comes from the
ground-truth masks (as the official evaluation). A feature *provider* returns features at pixels of a view and at
3D points; one provider can return several named features from one render (the model's internal NeRF feature and
its distilled head), each scored separately. Providers: :class:`ModelProvider` (a trained FeatureNeRF) and
:class:`TeacherProvider` (the 2D teacher baseline: 2D tasks sample the teacher map of the rendered view's real
image; 3D tasks project the points into the input view and sample its map).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from featurenerf_ns.eval.metrics import PCK_THRESHOLDS_2D, PCK_THRESHOLDS_3D, nn_match, part_iou, pck
from featurenerf_ns.eval.protocols import Protocol
from featurenerf_ns.eval.providers import REFERENCE_RESOLUTION, Annotations, FeatureProvider

if TYPE_CHECKING:
    pass

TASKS = (
    "kp2d_cross",
    "part2d_cross",
    "kp3d_cross",
    "part3d_cross",
    "kp2d_novel",
    "part2d_novel",
    "kp2d_xview",
    "part2d_xview",
    "kp3d_xview",
    "part3d_xview",
)
XVIEW_TASKS = TASKS[6:]
"""Cross-view cross-instance tasks (protocol v2): source and target instances conditioned on different views."""


@dataclass
class CorrespondenceConfig:
    """Correspondence metrics for ns-eval and the training callback."""

    enabled: bool = True
    """Add correspondence metrics to ns-eval (needs annotated data; skipped with a warning otherwise)."""
    protocol: Optional[Path] = None
    """Protocol file; None = configs/protocols/<category>_<split>_v2.json when it matches the data, else drawn now."""
    pairs: Literal["protocol", "official"] = "protocol"
    """protocol: our versioned pairs (``protocol`` above); official: the official split file's fixed
    ``cross_inst_pairs`` / ``cross_view_pairs`` (the paper's exact pairs, scored as cross-instance and novel-view;
    they hold no cross-view cross-instance pairs)."""
    split: Literal["val", "test", "train"] = "test"
    """Instances evaluated (train only for smoke tests on tiny data)."""
    num_pairs: Optional[int] = 1000
    """Pairs of each kind (cross-instance, novel-view) evaluated by ns-eval; None = all of the protocol."""
    tasks: Tuple[str, ...] = TASKS
    features: Tuple[str, ...] = ("nerf_feature", "feature")
    """Model outputs scored: nerf_feature (internal 512-d, the official choice) and feature (distilled head)."""
    teacher_baseline: bool = True
    """Also score the 2D teacher baseline (teacher2d) in ns-eval."""
    priors: bool = True
    """Also score the position priors in ns-eval (view_frame_prior, alignment_oracle: no features, ground-truth
    geometry; labelled as priors in every report)."""
    resolution: Optional[int] = None
    """2D tasks at this square resolution; None = the data manager's image size (128 if it keeps the stored size)."""
    chunk: int = 4096
    """Rays (or points) per forward pass."""
    callback_every: int = 0
    """Training callback: evaluate ``callback_pairs`` pairs every this many steps (0 = off)."""
    callback_pairs: int = 8
    """Pairs of each kind (cross-instance, novel-view, cross-view) scored by the training callback."""
    callback_images: bool = True
    """The training callback also renders the fixed eval images for novel-view PSNR/SSIM (learning curves)."""


def _check_tasks(tasks: Sequence[str]) -> None:
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"correspondence task {bad[0]!r} unknown; choose from {', '.join(TASKS)}")


# ----------------------------------------------------------------------------------------------------------------------
# Ground truth of one view at the evaluation resolution


@dataclass
class ViewGT:
    fg_xy: torch.Tensor
    """(P, 2) pixel centres (x right, y down, +0.5) of the foreground pixels at the evaluation resolution."""
    fg_labels: np.ndarray
    """(P,) part label of each foreground pixel (1..L)."""
    kp_xy: np.ndarray
    """(K, 2) keypoints at the evaluation resolution (NaN where absent)."""
    kp_visible: np.ndarray
    """(K,) bool."""
    resolution: int


def view_gt(ann: Dict[str, np.ndarray], view: int, resolution: int) -> ViewGT:
    """Foreground, part labels and keypoints of ``view`` from its annotations, resampled to ``resolution``:
    labels by majority over each output pixel's footprint (area-averaged one-hot, background included)."""
    parts = torch.from_numpy(ann["parts"][view].astype(np.int64))
    H, W = parts.shape
    if (H, W) != (resolution, resolution):
        onehot = F.one_hot(parts, int(parts.max()) + 1).permute(2, 0, 1)[None].float()
        parts = F.interpolate(onehot, size=(resolution, resolution), mode="area")[0].argmax(0)
    ys, xs = torch.nonzero(parts > 0, as_tuple=True)
    return ViewGT(
        fg_xy=torch.stack([xs, ys], 1).float() + 0.5,
        fg_labels=parts[ys, xs].numpy(),
        kp_xy=ann["kp2d"][view] * (resolution / W),
        kp_visible=ann["kp_visible"][view].astype(bool),
        resolution=resolution,
    )


# ----------------------------------------------------------------------------------------------------------------------
# The evaluation


@dataclass
class _Tally:
    kp_errors: Dict[str, List[float]]
    ious: Dict[str, List[float]]

    @classmethod
    def new(cls) -> "_Tally":
        return cls({}, {})

    def add_kp(self, task: str, errors: np.ndarray) -> None:
        self.kp_errors.setdefault(task, []).extend(np.asarray(errors, dtype=np.float64).tolist())

    def add_iou(self, task: str, iou: float) -> None:
        if not np.isnan(iou):
            self.ious.setdefault(task, []).append(iou)


def _transfer_kp(
    fq: torch.Tensor, fc: torch.Tensor, cand: torch.Tensor, gt: np.ndarray, metric: str = "cosine"
) -> Tuple[np.ndarray, np.ndarray]:
    """Keypoint query features -> nearest candidate -> (predicted positions, errors)."""
    idx, _ = nn_match(fq, fc, metric=metric)
    pred = cand[idx.cpu()].numpy()
    return pred, np.linalg.norm(pred - gt, axis=1)


def _transfer_labels(
    f_target: torch.Tensor, f_source: torch.Tensor, source_labels: np.ndarray, metric: str = "cosine"
) -> np.ndarray:
    idx, _ = nn_match(f_target, f_source, metric=metric)
    return source_labels[idx.cpu().numpy()]


def _shared_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.intersect1d(np.unique(a[a > 0]), np.unique(b[b > 0]))


def evaluate(
    provider: FeatureProvider,
    cat,
    protocol: Protocol,
    tasks: Sequence[str] = TASKS,
    resolution: int = REFERENCE_RESOLUTION,
    keep: int = 0,
    progress: Optional[Callable[[], None]] = None,
) -> Tuple[Dict[str, float], List[dict]]:
    """Scores every feature of ``provider`` on the pairs of ``protocol``.

    Returns (metrics, examples): metrics keyed ``<feature>/<task>/<metric>`` (``pck@<t>``, ``num_keypoints``,
    ``miou``, ``num_pairs``); examples = the predictions of the first ``keep`` cross-instance pairs, then of the
    first ``keep`` cross-view pairs when cross-view tasks are asked for (for figures): dicts with ``kind``
    (``cross`` | ``xview``), ``source``, ``target``, ``source_view``, ``target_view``, ``resolution`` and one dict of
    predictions per feature.
    """
    _check_tasks(tasks)
    ann = Annotations(cat)
    tally = {n: _Tally.new() for n in provider.names}
    examples: List[dict] = []
    scale = REFERENCE_RESOLUTION / resolution
    do = set(tasks)

    def pair_2d(inst_s, in_s, view_s, inst_t, in_t, view_t, kind: str, example: Optional[dict]):
        if not provider.has_pixels:
            return
        gs, gt = view_gt(ann.view(inst_s), view_s, resolution), view_gt(ann.view(inst_t), view_t, resolution)
        shared = gs.kp_visible & gt.kp_visible
        kp_task, part_task = f"kp2d_{kind}", f"part2d_{kind}"
        want_kp = kp_task in do and shared.any()
        want_part = part_task in do
        if not (want_kp or want_part) or len(gt.fg_xy) == 0 or len(gs.fg_xy) == 0:
            return
        q = torch.from_numpy(gs.kp_xy[shared]).float() if want_kp else torch.zeros(0, 2)
        fs = provider.pixels(inst_s, in_s, view_s, torch.cat([gs.fg_xy, q]), resolution)
        ft = provider.pixels(inst_t, in_t, view_t, gt.fg_xy, resolution)
        labels = _shared_labels(gs.fg_labels, gt.fg_labels)
        P = len(gs.fg_xy)
        for name in provider.names:
            ex: Dict[str, object] = {}
            if want_kp:
                pred, err = _transfer_kp(fs[name][P:], ft[name], gt.fg_xy, gt.kp_xy[shared], provider.metric)
                tally[name].add_kp(kp_task, err * scale)
                ex.update(
                    kp_ids=np.nonzero(shared)[0], kp_source=gs.kp_xy[shared], kp_target=gt.kp_xy[shared], kp_pred=pred
                )
            if want_part:
                pred_labels = _transfer_labels(ft[name], fs[name][:P], gs.fg_labels, provider.metric)
                tally[name].add_iou(part_task, part_iou(pred_labels, gt.fg_labels, labels))
                ex.update(
                    source_fg=gs.fg_xy.numpy(),
                    source_labels=gs.fg_labels,
                    target_fg=gt.fg_xy.numpy(),
                    target_labels=gt.fg_labels,
                    target_pred_labels=pred_labels,
                )
            if example is not None:
                example.setdefault(name, {}).update(ex)

    def pair_3d(inst_s, in_s, inst_t, in_t, kind: str, example: Optional[dict]):
        kp_task, part_task = f"kp3d_{kind}", f"part3d_{kind}"
        a, b = ann.shape(inst_s), ann.shape(inst_t)
        shared = a["keypoint_present"].astype(bool) & b["keypoint_present"].astype(bool)
        want_kp = kp_task in do and shared.any()
        want_part = part_task in do
        if not (want_kp or want_part):
            return
        pa, pb = torch.from_numpy(a["points"]).float(), torch.from_numpy(b["points"]).float()
        q = torch.from_numpy(a["keypoints"][shared]).float() if want_kp else torch.zeros(0, 3)
        cand = torch.from_numpy(b["keypoint_candidates"]).float() if "keypoint_candidates" in b else pb
        fa = provider.points(inst_s, in_s, torch.cat([pa, q]))
        fb = provider.points(inst_t, in_t, pb if cand is pb or not want_kp else torch.cat([pb, cand]))
        C = len(pb)
        la, lb = a["point_labels"].astype(np.int64), b["point_labels"].astype(np.int64)
        labels = _shared_labels(la, lb)
        P = len(pa)
        for name in provider.names:
            ex: Dict[str, object] = {}
            if want_kp:
                fc = fb[name] if cand is pb else fb[name][C:]
                pred, err = _transfer_kp(fa[name][P:], fc, cand, b["keypoints"][shared], provider.metric)
                tally[name].add_kp(kp_task, err)
                ex.update(kp3d_source=a["keypoints"][shared], kp3d_target=b["keypoints"][shared], kp3d_pred=pred)
            if want_part:
                pred_labels = _transfer_labels(fb[name][:C], fa[name][:P], la, provider.metric)
                tally[name].add_iou(part_task, part_iou(pred_labels, lb, labels))
                ex.update(
                    points_source=a["points"],
                    labels_source=la,
                    points_target=b["points"],
                    labels_target=lb,
                    labels_target_pred=pred_labels,
                )
            if example is not None:
                example.setdefault(name, {}).update(ex)

    def new_example(kind: str, src: str, trg: str, vs: int, vt: int) -> dict:
        return {
            "kind": kind,
            "source": src,
            "target": trg,
            "source_view": vs,
            "target_view": vt,
            "resolution": resolution,
        }

    for k, (src, trg, v) in enumerate(protocol.cross_instance):
        example = new_example("cross", src, trg, v, v) if k < keep else None
        pair_2d(src, v, v, trg, v, v, "cross", example)
        pair_3d(src, v, trg, v, "cross", example)
        if example is not None:
            examples.append(example)
        if progress:
            progress()
    if do & {"kp2d_novel", "part2d_novel"}:
        for i, s, t in protocol.novel_view:
            pair_2d(i, s, s, i, s, t, "novel", None)
            if progress:
                progress()
    if do & set(XVIEW_TASKS):
        for k, (src, trg, vs, vt) in enumerate(protocol.cross_view):
            example = new_example("xview", src, trg, vs, vt) if k < keep else None
            pair_2d(src, vs, vs, trg, vt, vt, "xview", example)
            pair_3d(src, vs, trg, vt, "xview", example)
            if example is not None:
                examples.append(example)
            if progress:
                progress()

    metrics: Dict[str, float] = {}
    for name, tl in tally.items():
        for task in tasks:
            if task.startswith("kp"):
                errs = tl.kp_errors.get(task, [])
                for key, val in pck(errs, PCK_THRESHOLDS_3D if "3d" in task else PCK_THRESHOLDS_2D).items():
                    metrics[f"{name}/{task}/{key}"] = val
                metrics[f"{name}/{task}/num_keypoints"] = float(len(errs))
            else:
                ious = tl.ious.get(task, [])
                metrics[f"{name}/{task}/miou"] = float(np.mean(ious)) if ious else float("nan")
                metrics[f"{name}/{task}/num_pairs"] = float(len(ious))
    return metrics, examples


def num_steps(protocol: Protocol, tasks: Sequence[str]) -> int:
    """Progress-bar length of :func:`evaluate`."""
    novel = bool(set(tasks) & {"kp2d_novel", "part2d_novel"})
    xview = bool(set(tasks) & set(XVIEW_TASKS))
    return (
        len(protocol.cross_instance)
        + (len(protocol.novel_view) if novel else 0)
        + (len(protocol.cross_view) if xview else 0)
    )
