"""N3F's tasks on a generated scene, one module for ns-eval, the report and the tests.

Features are compared after L2 normalisation (eta); ``d(a, b) = ||eta(a) - eta(b)||`` (in [0, 2]).

* **2D object retrieval** (N3F Sec. 4.1): for object k and query frame q, the query is the mean feature over k's
  visible region in q (ground-truth instance mask: the user's selection); in a gallery frame g every pixel is
  ranked by cosine similarity to the query, and AP is computed against k's visible mask in g. mAP = mean over
  objects, query frames and gallery frames (query and gallery frames disjoint; pairs where k covers fewer than
  ``min_pixels`` pixels skipped). Galleries: other *train* frames (views the field was fitted on) and *held-out*
  frames (novel views). Teacher-2D uses the teacher map bilinearly upsampled to the image; N3F its rendered
  feature F(r).
* **3D segmentation**: segment(q) = {x : d(f(x), q) <= tau and sigma(x) >= tau_sigma}, scored as IoU against
  object k on the scene's surface samples of all objects and the platform. tau is chosen per query from the query
  frame alone (the value whose rendered-feature mask best matches the query region in that frame: no other
  frame's ground truth is used). With ``cleanup`` (default) the segment is cleaned on a grid
  (:func:`~featurenerf_ns.model_components.segment_edit.segment_volume`: the connected component holding the query
  region's rendered surface points, dilated); ``segmentation3d/iou_samples`` keeps the raw per-sample rule's IoU.
* **Editing**: densities inside the segment set to 0 (remove) or outside it (extract), in the proposal networks
  too; held-out frames rendered and compared (PSNR / SSIM) with the ground-truth renders without object k / of
  object k alone; the unedited render against the same targets is reported as the do-nothing floor, and for
  extraction also an empty (background-only) render (``extract_empty_psnr``: the object is small, so an empty
  image already scores high against the render of the object alone).
* **Held-out images** (``scene/heldout/...``): PSNR / SSIM against the scene's images and cosine similarity of the
  rendered feature to the teacher map, on the held-out galleries (a subset of ns-eval's all-frames loop).
* **Smoothness** (:mod:`featurenerf_ns.eval.smoothness`): roughness inside objects and edge contrast across
  their boundaries of the teacher-2D map and the rendered N3F feature on the held-out galleries.
* **Amodal mask**: the extracted render's accumulation > 0.5 against k's full silhouette (occluders ignored).
  ``visible_mask_oracle_iou`` scores the ground-truth *visible* mask as the amodal prediction: a reference that
  uses ground truth (how much occlusion there is to recover), not a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from featurenerf_ns.cameras import data_to_model, ray_hits
from featurenerf_ns.data.procedural.scene_data import SceneData
from featurenerf_ns.eval.smoothness import SmoothnessTally
from featurenerf_ns.model_components.segment_edit import (
    SegmentCleanup,
    SegmentEdit,
    best_threshold,
    feature_distance,
    model_segment_volume,
    region_query,
)

N3FPipeline = Any
"""A trained ``pipelines.n3f_pipeline.N3FPipeline`` (eval/ sits below pipelines/ and does not import it)."""


@dataclass
class SceneTaskConfig:
    enabled: bool = True
    query_frames: int = 4
    """Train frames (evenly spaced) the queries are taken from."""
    train_galleries: int = 8
    """Other train frames used as galleries ("train" retrieval)."""
    heldout_galleries: int = 10
    """Held-out frames used as galleries ("held-out" retrieval), and rendered for the editing tasks."""
    edit_frames: int = 4
    """Held-out frames rendered per object for removal / extraction / amodal masks."""
    min_pixels: int = 20
    tau_sigma: float = 1.0
    """Density threshold of the 3D segment (sigma >= tau_sigma)."""
    cleanup: bool = True
    """Clean each segment on a grid before scoring and editing (see the module docstring); False: the raw rule."""
    cleanup_settings: SegmentCleanup = field(default_factory=SegmentCleanup)


# ---------------------------------------------------------------------------------------------------------- metrics
def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AP of ranking ``scores`` (P,) descending against boolean ``positive`` (P,) (mean precision at the positives)."""
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positive[order].float()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float32)
    return float((precision * hits).sum() / n_pos)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    union = float((pred | gt).sum())
    return float((pred & gt).sum()) / union if union > 0 else float("nan")


def retrieval_map(
    feature_of: Callable[[int], torch.Tensor],
    instance: np.ndarray,
    num_objects: int,
    queries: Sequence[int],
    galleries: Sequence[int],
    min_pixels: int,
) -> Tuple[float, int]:
    """mAP (percent) and the number of (object, query, gallery) triples; ``feature_of(frame)`` -> (H, W, D)."""
    aps: List[float] = []
    for q in queries:
        fq = feature_of(q)
        for k in range(num_objects):
            region = torch.from_numpy(instance[q] == k + 1)
            if int(region.sum()) < min_pixels:
                continue
            query = region_query(fq, region)
            for g in galleries:
                pos = torch.from_numpy(instance[g] == k + 1)
                if int(pos.sum()) < min_pixels:
                    continue
                fg = feature_of(g)
                scores = F.normalize(fg.reshape(-1, fg.shape[-1]).float(), dim=-1) @ query
                aps.append(average_precision(scores, pos.reshape(-1)))
    return (float(np.mean(aps) * 100.0) if aps else float("nan")), len(aps)


def evenly(items: Sequence[int], n: int) -> List[int]:
    if n <= 0 or not items:
        return []
    idx = np.unique(np.linspace(0, len(items) - 1, min(n, len(items))).round().astype(int))
    return [int(items[i]) for i in idx]


# ---------------------------------------------------------------------------------------------------------- rendering
class SceneRenders:
    """Renders (cached) of a trained N3F pipeline at the scene's frames, and the teacher's maps at the same frames."""

    def __init__(self, pipeline: N3FPipeline, scene: SceneData):
        self.pipeline, self.scene = pipeline, scene
        dm = pipeline.datamanager
        self.where: Dict[int, Tuple[str, int]] = {}
        for group, ds in (("train", dm.train_dataset), ("eval", dm.eval_dataset)):
            for i, p in enumerate(ds.image_filenames):
                stem = Path(p).stem
                if stem.startswith("frame_"):
                    self.where.setdefault(int(stem[6:]), (group, i))
        self._renders: Dict[Tuple[int, Optional[Tuple[int, str]]], Dict[str, torch.Tensor]] = {}
        self._teacher: Dict[int, torch.Tensor] = {}

    def camera(self, frame: int):
        group, i = self.where[frame]
        dm = self.pipeline.datamanager
        ds = dm.train_dataset if group == "train" else dm.eval_dataset
        return ds.cameras[i : i + 1].to(self.pipeline.device)

    def render(self, frame: int, edit=None, key: Optional[Tuple[int, str]] = None) -> Dict[str, torch.Tensor]:
        ck = (frame, key)
        if ck not in self._renders:
            model = self.pipeline.model
            with model.editing(edit):
                out = model.get_outputs_for_camera(self.camera(frame))
            self._renders[ck] = {k: out[k].cpu() for k in ("rgb", "accumulation", "feature", "depth") if k in out}
        return self._renders[ck]

    def surface_points(self, frame: int, mask: torch.Tensor, min_accumulation: float = 0.5) -> torch.Tensor:
        """Model-frame points (M, 3) where the rays of ``mask`` (H, W) pixels meet the rendered surface:
        x = o + t d (d unit, t the rendered depth), pixels with accumulation >= ``min_accumulation``."""
        r = self.render(frame)
        bundle = self.camera(frame).generate_rays(camera_indices=0, keep_shape=True)
        keep = mask & (r["accumulation"][..., 0] >= min_accumulation)
        return ray_hits(bundle.origins.cpu()[keep], bundle.directions.cpu()[keep], r["depth"][keep])

    def n3f_feature(self, frame: int) -> torch.Tensor:
        return self.render(frame)["feature"]

    def teacher_feature(self, frame: int) -> torch.Tensor:
        if frame not in self._teacher:
            group, i = self.where[frame]
            cache = self.pipeline.datamanager.teacher_cache
            assert cache is not None
            fmap = torch.from_numpy(np.asarray(cache.features(group)[i], dtype=np.float32))[None]
            H, W = self.scene.manifest["settings"]["resolution"], self.scene.manifest["settings"]["resolution"]
            up = F.interpolate(fmap, size=(H, W), mode="bilinear", align_corners=False)[0]
            self._teacher[frame] = up.permute(1, 2, 0).contiguous()
        return self._teacher[frame]


def world_to_model(pipeline: N3FPipeline, points: np.ndarray) -> torch.Tensor:
    """Scene (world) points (N, 3) -> the model's frame: the dataparser's transform and scale."""
    out = pipeline.datamanager.train_dataparser_outputs
    return data_to_model(torch.from_numpy(points), out.dataparser_transform, out.dataparser_scale)


def _background(pipeline: N3FPipeline) -> torch.Tensor:
    """The model's background colour (3,) (the scene renders on black; nerfacto's "random" counts as black)."""
    bg = pipeline.model.config.background_color
    if bg in ("black", "random", "last_sample"):
        return torch.zeros(3)
    if bg == "white":
        return torch.ones(3)
    return torch.as_tensor(bg, dtype=torch.float32).reshape(3)


def _load_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)


def _psnr_ssim(pipeline: N3FPipeline, pred: torch.Tensor, gt: torch.Tensor) -> Tuple[float, float]:
    model = pipeline.model
    a = pred.permute(2, 0, 1)[None].to(pipeline.device).clamp(0, 1)
    b = gt.permute(2, 0, 1)[None].to(pipeline.device)
    return float(model.psnr(a, b)), float(model.ssim(a, b))


# ---------------------------------------------------------------------------------------------------------- all tasks
@torch.no_grad()
def scene_metrics(
    pipeline: N3FPipeline, root: Path, config: SceneTaskConfig, progress: Optional[Callable[[str], None]] = None
) -> Tuple[Dict[str, float], Dict[str, object]]:
    """All scene tasks; returns (metrics keyed ``scene/<task>/<name>``, examples for the report figure)."""
    scene = SceneData.load(root)
    renders = SceneRenders(pipeline, scene)
    ann = scene.frames()
    instance, amodal = ann["instance"], ann["amodal"]
    n = scene.num_objects
    train = [f for f in scene.train if f in renders.where]
    heldout = [f for f in scene.heldout if f in renders.where]
    queries = evenly(train, config.query_frames)
    train_gal = evenly([f for f in train if f not in set(queries)], config.train_galleries)
    held_gal = evenly(heldout, config.heldout_galleries)
    say = progress or (lambda s: None)
    metrics: Dict[str, float] = {}

    for name, feature_of in (("teacher2d", renders.teacher_feature), ("n3f", renders.n3f_feature)):
        for split, gal in (("train", train_gal), ("heldout", held_gal)):
            say(f"retrieval {name} {split}")
            m, count = retrieval_map(feature_of, instance, n, queries, gal, config.min_pixels)
            metrics[f"scene/retrieval/{name}_{split}_map"] = m
            metrics[f"scene/retrieval/{split}_triples"] = float(count)

    say("held-out images and smoothness")
    quality: Dict[str, List[float]] = {}
    for g in held_gal:
        r = renders.render(g)
        p, s = _psnr_ssim(pipeline, r["rgb"], _load_rgb(scene.image_path(g)))
        quality.setdefault("psnr", []).append(p)
        quality.setdefault("ssim", []).append(s)
        cos = F.cosine_similarity(r["feature"].float(), renders.teacher_feature(g), dim=-1)
        quality.setdefault("feature_cosine", []).append(float(cos.mean()))
    for key, vals in quality.items():
        metrics[f"scene/heldout/{key}"] = float(np.mean(vals)) if vals else float("nan")
    for name, feature_of in (("teacher2d", renders.teacher_feature), ("n3f", renders.n3f_feature)):
        tally = SmoothnessTally()
        for g in held_gal:
            tally.add(feature_of(g), torch.from_numpy(instance[g]))
        metrics[f"scene/smoothness/{name}_roughness"] = tally.roughness
        metrics[f"scene/smoothness/{name}_edge_contrast"] = tally.edge_contrast
        metrics[f"scene/smoothness/{name}_edge_contrast_band"] = tally.edge_contrast_band
        metrics[f"scene/smoothness/{name}_edge_contrast_regions"] = tally.edge_contrast_regions
        metrics[f"scene/smoothness/{name}_boundary_sharpness"] = tally.boundary_sharpness

    # 3D segmentation, editing and amodal masks: one query per object (its largest region among the query frames)
    surf = scene.surface()
    pts = world_to_model(pipeline, surf["points"]).to(pipeline.device)
    feats3d, sigma3d = pipeline.model.query(pts)
    owner = torch.from_numpy(surf["point_object"].astype(np.int64))
    edit_frames = evenly(heldout, config.edit_frames)
    ious, raw_ious, taus = [], [], []
    examples: Dict[str, Any] = {}
    edit_vals: Dict[str, List[float]] = {}
    for k in range(n):
        sizes = [int((instance[q] == k + 1).sum()) for q in queries]
        if not sizes or max(sizes) < config.min_pixels:
            continue
        q = queries[int(np.argmax(sizes))]
        region = torch.from_numpy(instance[q] == k + 1)
        fq = renders.n3f_feature(q)
        query = region_query(fq, region)
        tau = best_threshold(feature_distance(fq, query), region)
        taus.append(tau)
        seg = (feature_distance(feats3d.cpu(), query) <= tau) & (sigma3d.cpu() >= config.tau_sigma)
        raw_ious.append(mask_iou(seg, owner == k))
        volume = None
        if config.cleanup:
            seeds = renders.surface_points(q, region)
            volume = model_segment_volume(pipeline.model, query, tau, config.tau_sigma, seeds, config.cleanup_settings)
            seg = volume.contains(pts.cpu())
        ious.append(mask_iou(seg, owner == k))
        say(f"editing object {k}")
        for f in edit_frames:
            base = renders.render(f)["rgb"]
            modes: Tuple[Literal["remove", "extract"], ...] = ("remove", "extract")
            for mode in modes:
                out = renders.render(f, SegmentEdit(query.to(pipeline.device), tau, mode, volume), key=(k, mode))
                gt = _load_rgb(scene.edit_path(mode, k, f))
                p, s = _psnr_ssim(pipeline, out["rgb"], gt)
                p0, s0 = _psnr_ssim(pipeline, base, gt)
                edit_vals.setdefault(f"{mode}_psnr", []).append(p)
                edit_vals.setdefault(f"{mode}_ssim", []).append(s)
                edit_vals.setdefault(f"{mode}_unedited_psnr", []).append(p0)
                if mode == "extract":  # the other do-nothing answer: an empty (background-only) render
                    edit_vals.setdefault("extract_empty_psnr", []).append(
                        _psnr_ssim(pipeline, torch.zeros_like(gt) + _background(pipeline), gt)[0]
                    )
                if mode == "extract":
                    am = out["accumulation"][..., 0] > 0.5
                    edit_vals.setdefault("amodal_iou", []).append(mask_iou(am, torch.from_numpy(amodal[f, k])))
                    vis = torch.from_numpy(instance[f] == k + 1)
                    edit_vals.setdefault("visible_mask_oracle_iou", []).append(
                        mask_iou(vis, torch.from_numpy(amodal[f, k]))
                    )
        if not examples and edit_frames:
            examples = {
                "object": k,
                "query_frame": q,
                "tau": tau,
                "edit_frame": edit_frames[0],
                "seg_mask": seg.numpy(),
            }
    metrics["scene/segmentation3d/iou"] = float(np.nanmean(ious) * 100.0) if ious else float("nan")
    metrics["scene/segmentation3d/iou_samples"] = float(np.nanmean(raw_ious) * 100.0) if raw_ious else float("nan")
    metrics["scene/segmentation3d/mean_tau"] = float(np.mean(taus)) if taus else float("nan")
    for key, vals in edit_vals.items():
        scale = 100.0 if key.endswith("iou") else 1.0
        group = "amodal" if key.endswith("iou") else "editing"
        metrics[f"scene/{group}/{key}"] = float(np.nanmean(vals) * scale)
    return metrics, {"renders": renders, "scene": scene, "points": surf["points"], **examples}
