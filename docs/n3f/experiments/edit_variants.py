"""Evaluation-only experiment (issue 16, editing quality): how the 3D segment is applied to the density.

Variants, all with the same query and tau per object (the scene tasks' rule: the largest visible region among the
query frames, tau from the query frame's rendered features):
  final-only     per-sample feature test on the final samples only (the scene tasks up to 2026-12-06)
  +proposal      the same test also applied to the proposal networks' densities
  volume g=..    the segment cleaned on a voxel grid (hysteresis to grow*tau, the component holding the query
                 region's surface points, 1-voxel dilation), applied to proposal and final samples
  GT volume      ORACLE (uses ground truth): the voxels holding object k's ground-truth surface samples, dilated by
                 one voxel; the removal / extraction a perfect segment would give with this radiance field

Usage: python docs/n3f/experiments/edit_variants.py <run>/config.yml <out.json> [resolution] [variant,...]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from featurenerf_ns.data.procedural.scene_data import SceneData
from featurenerf_ns.eval.scene_tasks import SceneRenders, _load_rgb, _psnr_ssim, evenly, mask_iou, world_to_model
from featurenerf_ns.model_components.segment_edit import (
    SegmentCleanup,
    SegmentEdit,
    SegmentVolume,
    best_threshold,
    feature_distance,
    region_query,
    segment_volume,
)
from featurenerf_ns.scripts.scene import load_n3f

cfg, out = Path(sys.argv[1]), Path(sys.argv[2])
res = int(sys.argv[3]) if len(sys.argv) > 3 else 64
pipe, ckpt, step = load_n3f(cfg)
model = pipe.model
scene = SceneData.load(pipe.scene_root)
R = SceneRenders(pipe, scene)
ann = scene.frames()
inst, amodal = ann["instance"], ann["amodal"]
train = [f for f in scene.train if f in R.where]
held = [f for f in scene.heldout if f in R.where]
queries, edit_frames = evenly(train, 4), evenly(held, 4)
surf = scene.surface()
pts = world_to_model(pipe, surf["points"])
f3, s3 = model.query(pts)
owner = torch.from_numpy(surf["point_object"].astype(np.int64))
aabb = model.scene_box.aabb.float().cpu()
original_edited = model._edited


@torch.no_grad()
def region_points(frame, region):
    """Surface points (model frame) of the region's pixels in a rendered frame (accumulation >= 0.5)."""
    cam = R.camera(frame)
    o = model.get_outputs_for_camera(cam)
    b = cam.generate_rays(camera_indices=0, keep_shape=True)
    keep = region & (o["accumulation"][..., 0].cpu() >= 0.5)
    d = F.normalize(b.directions[keep], dim=-1)
    return (b.origins[keep] + d * o["depth"][keep]).cpu()


def render_edit(frame, edit, proposal):
    model._edited = original_edited if proposal else (lambda fn: fn)
    try:
        with model.editing(edit):
            o = model.get_outputs_for_camera(R.camera(frame))
    finally:
        model._edited = original_edited
    return {k: o[k].cpu() for k in ("rgb", "accumulation")}


variants = [("final-only", None, False), ("+proposal", None, True)]
variants += [(f"volume g={g}", g, True) for g in (1.0, 1.5, 2.0)]
variants += [("GT volume (oracle)", "gt", True)]
if len(sys.argv) > 4 and sys.argv[4]:
    wanted = sys.argv[4].split(",")
    variants = [v for v in variants if v[0] in wanted]
acc = {name: {} for name, _, _ in variants}
t0 = time.time()
for k in range(scene.num_objects):
    sizes = [int((inst[q] == k + 1).sum()) for q in queries]
    q = queries[int(np.argmax(sizes))]
    region = torch.from_numpy(inst[q] == k + 1)
    fq = R.n3f_feature(q)
    query = region_query(fq, region)
    tau = best_threshold(feature_distance(fq, query), region)
    seeds = region_points(q, region)
    for name, grow, proposal in variants:
        vol = None
        if grow == "gt":
            G = res
            idx = torch.floor((pts[owner == k].float() - aabb[0]) / (aabb[1] - aabb[0]) * G).long().clamp(0, G - 1)
            occ = np.zeros((G, G, G), dtype=bool)
            occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
            occ = binary_dilation(occ, iterations=1)
            vol = SegmentVolume(aabb[0], aabb[1], torch.from_numpy(occ))
            seg = vol.contains(pts)
        elif grow is not None:
            vol = segment_volume(model.query, aabb[0], aabb[1], query, tau, 1.0, seeds, SegmentCleanup(res, grow, 1))
            seg = vol.contains(pts)
        else:
            seg = (feature_distance(f3.cpu(), query) <= tau) & (s3.cpu() >= 1.0)
        a = acc[name]
        a.setdefault("seg_iou", []).append(mask_iou(seg, owner == k))
        for f in edit_frames:
            for mode in ("remove", "extract"):
                o = render_edit(f, SegmentEdit(query, tau, mode, vol), proposal)
                gt = _load_rgb(scene.edit_path(mode, k, f))
                a.setdefault(f"{mode}_psnr", []).append(_psnr_ssim(pipe, o["rgb"], gt)[0])
                if mode == "remove":
                    a.setdefault("remove_unedited_psnr", []).append(_psnr_ssim(pipe, R.render(f)["rgb"], gt)[0])
                else:
                    am = o["accumulation"][..., 0] > 0.5
                    a.setdefault("amodal_iou", []).append(mask_iou(am, torch.from_numpy(amodal[f, k])))
    print(f"object {k} ({scene.categories[k]}) tau {tau:.2f}: {time.time() - t0:.0f} s", flush=True)

rows = {
    name: {key: float(np.nanmean(v) * (100 if "iou" in key else 1)) for key, v in a.items()} for name, a in acc.items()
}
rows_per_object = {name: {key: [float(x) for x in v] for key, v in a.items()} for name, a in acc.items()}
result = {
    "checkpoint": str(ckpt),
    "step": step,
    "resolution": res,
    "edit_frames_per_object": len(edit_frames),
    "seconds": round(time.time() - t0, 1),
    "mean": rows,
    "per_object_and_frame": rows_per_object,
}
out.write_text(json.dumps(result, indent=1))
for name, r in rows.items():
    print(name, {k: round(v, 2) for k, v in r.items()})
