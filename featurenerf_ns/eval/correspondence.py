"""Zero-shot correspondence evaluation: keypoint transfer and part label transfer, 2D and 3D, across instances
and across views, on any feature source.

Tasks (``TASKS``), all by cosine nearest neighbour (:func:`featurenerf_ns.eval.metrics.nn_match`):

* ``kp2d_cross`` / ``kp2d_novel``: each source keypoint visible in both views goes to the most similar target
  foreground pixel; PCK at 2.5/5/7.5/10 px measured at 128 x 128 (errors at other resolutions are rescaled);
* ``part2d_cross`` / ``part2d_novel``: each target foreground pixel takes the label of its most similar source
  foreground pixel; IoU over the part labels present in both, averaged per pair, then over pairs;
* ``kp3d_cross``: each source 3D keypoint (present in both shapes) goes to the most similar target surface point;
  PCK at 0.025/0.05/0.075/0.1 in the data's object units;
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

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from featurenerf_ns.data.instances import load_rgba
from featurenerf_ns.eval.metrics import PCK_THRESHOLDS_2D, PCK_THRESHOLDS_3D, nn_match, part_iou, pck
from featurenerf_ns.eval.protocols import Protocol

if TYPE_CHECKING:
    from featurenerf_ns.data.instances import CategoryData
    from featurenerf_ns.teachers.base import Teacher

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
REFERENCE_RESOLUTION = 128
"""2D PCK thresholds are pixels at this resolution (the paper's 128 x 128 renders)."""


@dataclass
class CorrespondenceConfig:
    """Correspondence metrics for ns-eval and the training callback."""

    enabled: bool = True
    """Add correspondence metrics to ns-eval (needs annotated data; skipped with a warning otherwise)."""
    protocol: Optional[Path] = None
    """Protocol file; None = configs/protocols/<category>_<split>_v1.json when it matches the data, else drawn now."""
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


class _Annotations:
    """Small LRU over per-instance annotation files (views.npz is a few MB decompressed)."""

    def __init__(self, cat, size: int = 8):
        self.cat, self.size = cat, size
        self.views: "OrderedDict[str, dict]" = OrderedDict()
        self.shapes: "OrderedDict[str, dict]" = OrderedDict()

    def _get(self, memo: OrderedDict, key: str, load: Callable[[str], dict]) -> dict:
        if key in memo:
            memo.move_to_end(key)
        else:
            memo[key] = load(key)
            while len(memo) > self.size:
                memo.popitem(last=False)
        return memo[key]

    def view(self, inst: str) -> dict:
        return self._get(self.views, inst, self.cat.view_annotations)

    def shape(self, inst: str) -> dict:
        return self._get(self.shapes, inst, self.cat.shape_annotations)


# ----------------------------------------------------------------------------------------------------------------------
# Feature providers


class FeatureProvider:
    """Named features at pixels of a rendered view and at 3D points of an instance conditioned on an input view."""

    names: Tuple[str, ...] = ()
    metric: Literal["cosine", "euclidean"] = "cosine"
    """How its features are matched (features: cosine, as the paper; positions of the priors: euclidean)."""

    def pixels(
        self, inst: str, input_view: int, view: int, xy: torch.Tensor, resolution: int
    ) -> Dict[str, torch.Tensor]:
        """xy (P, 2) pixel coordinates at ``resolution`` of ``view`` -> name -> (P, D)."""
        raise NotImplementedError

    def points(self, inst: str, input_view: int, xyz: torch.Tensor) -> Dict[str, torch.Tensor]:
        """xyz (P, 3) world points -> name -> (P, D)."""
        raise NotImplementedError


def view_camera(cat, inst: str, view: int, resolution: int) -> Tuple[torch.Tensor, float]:
    """(c2w (4, 4), focal in pixels at ``resolution``) of one view."""
    rec = cat.instance(inst)
    return torch.as_tensor(rec.poses[view], dtype=torch.float32), rec.focal * resolution / rec.width


class ModelProvider(FeatureProvider):
    """A FeatureNeRF model conditioned on one input view: renders features along rays through pixels (the
    model's deterministic eval sampling) and queries the field directly at 3D points (no occlusion handling, as
    official), with the ray direction from the input camera."""

    def __init__(self, model, datamanager, names: Sequence[str] = ("nerf_feature", "feature"), chunk: int = 4096):
        have = ["nerf_feature"] + (["feature"] if model.config.distill else [])
        self.names = tuple(n for n in names if n in have)
        if not self.names:
            raise ValueError(f"model has none of the features {list(names)} (it has {have})")
        self.model, self.dm, self.chunk = model, datamanager, chunk
        self.cat = datamanager.cat
        self._conditioned: Optional[Tuple[str, int]] = None

    def _condition(self, inst: str, input_view: int) -> None:
        if self._conditioned != (inst, input_view):
            sources = self.dm.sources([self.dm.instance(inst)], torch.tensor([[input_view]]))
            self.model.set_sources(sources)
            self._conditioned = (inst, input_view)

    @torch.no_grad()
    def pixels(self, inst, input_view, view, xy, resolution):
        from nerfstudio.cameras.rays import RayBundle

        from featurenerf_ns.cameras import camera_rays

        self._condition(inst, input_view)
        c2w, focal = view_camera(self.cat, inst, view, resolution)
        xy = xy.float()
        o, d = camera_rays(
            c2w[None].expand(len(xy), 4, 4), focal, (resolution, resolution), xy[:, 0] - 0.5, xy[:, 1] - 0.5
        )
        out = {n: [] for n in self.names}
        dev = self.model.device
        rc = self.model.config.eval_num_rays_per_chunk  # rays (each with its samples) per forward
        for i in range(0, len(xy), rc):
            n = min(rc, len(xy) - i)
            bundle = RayBundle(
                origins=o[i : i + n],
                directions=d[i : i + n],
                pixel_area=torch.full((n, 1), 1e-4),
                camera_indices=torch.zeros(n, 1, dtype=torch.long),
            ).to(dev)
            res = self.model(bundle)
            for k in self.names:
                out[k].append(res[k].float())
        return {k: torch.cat(v) if v else torch.zeros(0, 1, device=dev) for k, v in out.items()}

    @torch.no_grad()
    def points(self, inst, input_view, xyz):
        self._condition(inst, input_view)
        return field_point_features(self.model, xyz, self.names, self.chunk)


@torch.no_grad()
def field_point_features(model, xyz: torch.Tensor, names: Sequence[str], chunk: int = 4096) -> Dict[str, torch.Tensor]:
    """Field features (P, D) at world points xyz (P, 3) under the model's current (single-object) conditioning,
    viewed along the direction from the first source camera (no occlusion handling, as official)."""
    src = model.get_sources()
    xyz = xyz.float().to(model.device)
    dirs = F.normalize(xyz - src.c2w[0, 0, :3, 3], dim=-1)
    maps = model.encoded_sources()
    out: Dict[str, list] = {n: [] for n in names}
    with model.autocast():
        for i in range(0, len(xyz), chunk):
            res = model.field(
                xyz[None, i : i + chunk], dirs[None, i : i + chunk], maps, src, tuple(src.images.shape[-2:])
            )
            for k in names:
                out[k].append(res[k][0].float())
    return {k: torch.cat(v) if v else torch.zeros(0, 1, device=model.device) for k, v in out.items()}


class TeacherFeatures:
    """Teacher maps for (instance, view), computed on demand in batches and memoised (LRU of ``max_items``)."""

    def __init__(self, cat: CategoryData, teacher: Teacher, max_items: Optional[int] = None):
        self.cat, self.teacher, self.max_items = cat, teacher, max_items
        self.memo: "OrderedDict[Tuple[str, int], torch.Tensor]" = OrderedDict()
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
        if self.max_items is not None:
            while len(self.memo) > self.max_items:
                self.memo.popitem(last=False)

    def __call__(self, inst: str, view: int) -> torch.Tensor:
        if (inst, view) not in self.memo:
            self.prefetch([(inst, view)])
        self.memo.move_to_end((inst, view))
        return self.memo[(inst, view)].float()


class TeacherProvider(FeatureProvider):
    """The 2D teacher baseline ("DINO baseline" of the paper)."""

    names = ("teacher2d",)

    def __init__(self, cat, teacher, max_maps: int = 512):
        self.cat = cat
        self.maps = TeacherFeatures(cat, teacher, max_items=max_maps)

    def pixels(self, inst, input_view, view, xy, resolution):
        from featurenerf_ns.model_components.map_sampling import sample_map

        fmap = self.maps(inst, view)  # the teacher sees the real image of the view it is asked about
        return {"teacher2d": sample_map(fmap[None], xy.float()[None].to(fmap.device), (resolution, resolution))[0]}

    def points(self, inst, input_view, xyz):
        from featurenerf_ns.cameras import project, world_to_source
        from featurenerf_ns.model_components.map_sampling import sample_map

        rec = self.cat.instance(inst)
        c2w, focal = view_camera(self.cat, inst, input_view, rec.width)
        x_cam = world_to_source(xyz.float()[None], c2w[None, None])
        uv = project(x_cam, torch.tensor([[focal]]), torch.tensor([[[rec.width / 2, rec.height / 2]]]))[:, 0]
        fmap = self.maps(inst, input_view)
        return {"teacher2d": sample_map(fmap[None], uv.to(fmap.device), (rec.height, rec.width))[0]}


PRIOR_LABELS = {
    "view_frame_prior": "View-frame position prior (no features; GT surface points)",
    "alignment_oracle": "Alignment oracle (object-frame position; GT alignment)",
}


class PositionPrior(FeatureProvider):
    """Baselines with no learned features, matched by Euclidean distance between 3D positions (they use ground
    truth and are reported as priors, never as predictions):

    * ``view_frame_prior``: a point's position in the frame of the camera its instance is conditioned on, i.e.
      exactly what the field's positional encoding sees. On same-view pairs of aligned objects this transfers
      by itself; across a viewpoint change it does not. A model within a few points of it is not measured on
      semantics.
    * ``alignment_oracle``: the position in the aligned object frame (the stored world frame of the benchmark),
      which a real photo does not give: an upper reference on aligned categories, not a floor.

    2D pixels are lifted to their ground-truth surface point with the view's depth map (area-averaged over the
    foreground of each pixel's footprint at the evaluation resolution)."""

    metric = "euclidean"

    def __init__(self, cat, frame: Literal["view", "object"]):
        if frame not in ("view", "object"):
            raise ValueError(f"PositionPrior: frame {frame!r}; choose view or object")
        self.cat, self.frame = cat, frame
        self.names = ("view_frame_prior",) if frame == "view" else ("alignment_oracle",)
        self.ann = _Annotations(cat)

    def _depth(self, inst: str, view: int, resolution: int) -> torch.Tensor:
        d = torch.from_numpy(self.ann.view(inst)["depth"][view].astype(np.float32))
        m = (d > 0).float()
        if tuple(d.shape) != (resolution, resolution):
            dm = F.interpolate((d * m)[None, None], size=(resolution, resolution), mode="area")[0, 0]
            mm = F.interpolate(m[None, None], size=(resolution, resolution), mode="area")[0, 0]
            d = torch.where(mm > 0, dm / mm.clamp(min=1e-8), torch.zeros_like(dm))
        if (d > 0).any():  # a foreground pixel without depth (mask/depth disagree at an edge): the view's median
            d = torch.where(d > 0, d, d[d > 0].median())
        return d

    def lift(self, inst: str, view: int, xy: torch.Tensor, resolution: int) -> torch.Tensor:
        """Pixel centres xy (P, 2) of ``view`` at ``resolution`` -> (P, 3) world surface points (ground-truth depth
        along the optical axis)."""
        c2w, focal = view_camera(self.cat, inst, view, resolution)
        d = self._depth(inst, view, resolution)
        ij = xy.float().floor().long().clamp(0, resolution - 1)
        z = d[ij[:, 1], ij[:, 0]]
        x = (xy[:, 0].float() - resolution / 2) / focal * z
        y = -(xy[:, 1].float() - resolution / 2) / focal * z
        cam = torch.stack([x, y, -z], -1)
        return cam @ c2w[:3, :3].T + c2w[:3, 3]

    def _in_frame(self, inst: str, input_view: int, xyz: torch.Tensor) -> torch.Tensor:
        if self.frame == "object":
            return xyz.float()
        from featurenerf_ns.cameras import world_to_source

        c2w, _ = view_camera(self.cat, inst, input_view, REFERENCE_RESOLUTION)
        return world_to_source(xyz.float()[None], c2w[None, None])[0, 0]

    def pixels(self, inst, input_view, view, xy, resolution):
        return {self.names[0]: self._in_frame(inst, input_view, self.lift(inst, view, xy, resolution))}

    def points(self, inst, input_view, xyz):
        return {self.names[0]: self._in_frame(inst, input_view, xyz)}


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
    ``miou``, ``num_pairs``); examples = the predictions of the first ``keep`` cross-instance pairs (for figures).
    """
    _check_tasks(tasks)
    ann = _Annotations(cat)
    tally = {n: _Tally.new() for n in provider.names}
    examples: List[dict] = []
    scale = REFERENCE_RESOLUTION / resolution
    do = set(tasks)

    def pair_2d(inst_s, in_s, view_s, inst_t, in_t, view_t, kind: str, example: Optional[dict]):
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
        fa = provider.points(inst_s, in_s, torch.cat([pa, q]))
        fb = provider.points(inst_t, in_t, pb)
        la, lb = a["point_labels"].astype(np.int64), b["point_labels"].astype(np.int64)
        labels = _shared_labels(la, lb)
        P = len(pa)
        for name in provider.names:
            ex: Dict[str, object] = {}
            if want_kp:
                pred, err = _transfer_kp(fa[name][P:], fb[name], pb, b["keypoints"][shared], provider.metric)
                tally[name].add_kp(kp_task, err)
                ex.update(kp3d_source=a["keypoints"][shared], kp3d_target=b["keypoints"][shared], kp3d_pred=pred)
            if want_part:
                pred_labels = _transfer_labels(fb[name], fa[name][:P], la, provider.metric)
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

    for k, (src, trg, v) in enumerate(protocol.cross_instance):
        example = {"source": src, "target": trg, "view": v, "resolution": resolution} if k < keep else None
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
        for src, trg, vs, vt in protocol.cross_view:
            pair_2d(src, vs, vs, trg, vt, vt, "xview", None)
            pair_3d(src, vs, trg, vt, "xview", None)
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
