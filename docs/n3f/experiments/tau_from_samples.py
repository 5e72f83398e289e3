"""Evaluation-only experiment: tau from the query frame's rendered features (current) vs from its per-sample
features (weighted IoU of samples inside vs outside the region), on the 1400-step n3f-tiny run."""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from featurenerf_ns.scripts.scene import load_n3f
from featurenerf_ns.data.procedural.scene import SceneData
from featurenerf_ns.eval.scene_tasks import SceneRenders, evenly, world_to_model, mask_iou, _load_rgb, _psnr_ssim
from featurenerf_ns.model_components.segment_edit import SegmentEdit, best_threshold, feature_distance, region_query
from nerfstudio.field_components.field_heads import FieldHeadNames

cfg = Path(sys.argv[1]); out = Path(sys.argv[2])
pipe, ckpt, step = load_n3f(cfg)
model = pipe.model
scene = SceneData.load(pipe.scene_root)
R = SceneRenders(pipe, scene)
inst = scene.frames()["instance"]
train = [f for f in scene.train if f in R.where]; held = [f for f in scene.heldout if f in R.where]
queries = evenly(train, 4); edit_frames = evenly(held, 2)

@torch.no_grad()
def sample_feats(frame):
    cam = R.camera(frame)
    bundle = cam.generate_rays(camera_indices=0, keep_shape=False)
    ds, ws = [], []
    for s in range(0, len(bundle), 4096):
        rb = bundle[s:s+4096]
        if model.collider is not None: rb = model.collider(rb)
        rs, _, _ = model.proposal_sampler(rb, density_fns=model.density_fns)
        fo = model.field.forward(rs)
        w = rs.get_weights(fo[FieldHeadNames.DENSITY])[..., 0]
        f = model.feature_field(rs.frustums.get_positions())
        ds.append(f.cpu()); ws.append(w.cpu())
    return torch.cat(ds), torch.cat(ws)  # (P, S, D), (P, S)

def sample_tau(d, w, region):
    pos = region.reshape(-1)[:, None].expand_as(w)
    taus = np.linspace(0.05, 1.5, 30); best, bi = taus[0], -1
    wp = w[pos].sum()
    for t in taus:
        inside = d <= t
        iou = float((w * (inside & pos)).sum() / (wp + (w * (inside & ~pos)).sum()))
        if iou > bi: best, bi = float(t), iou
    return best

surf = scene.surface()
pts = world_to_model(pipe, surf["points"])
f3, s3 = model.query(pts)
owner = torch.from_numpy(surf["point_object"].astype(np.int64))
rows = []
t0 = time.time()
for k in range(scene.num_objects):
    sizes = [int((inst[q] == k + 1).sum()) for q in queries]
    q = queries[int(np.argmax(sizes))]
    region = torch.from_numpy(inst[q] == k + 1)
    fq = R.n3f_feature(q); query = region_query(fq, region)
    tau_r = best_threshold(feature_distance(fq, query), region)
    sf, sw = sample_feats(q)
    tau_s = sample_tau(feature_distance(sf, query), sw, region)
    row = {"object": k, "category": scene.categories[k], "tau_render": tau_r, "tau_samples": tau_s}
    for name, tau in (("render", tau_r), ("samples", tau_s)):
        seg = (feature_distance(f3, query) <= tau) & (s3 >= 1.0)
        row[f"seg_iou_{name}"] = mask_iou(seg, owner == k) * 100
        ps, pe = [], []
        for f in edit_frames:
            for mode, lst in (("remove", ps), ("extract", pe)):
                o = R.render(f, SegmentEdit(query, tau, mode), key=(k, mode + name))
                lst.append(_psnr_ssim(pipe, o["rgb"], _load_rgb(scene.edit_path(mode, k, f)))[0])
        row[f"remove_psnr_{name}"] = float(np.mean(ps)); row[f"extract_psnr_{name}"] = float(np.mean(pe))
    base = [ _psnr_ssim(pipe, R.render(f)["rgb"], _load_rgb(scene.edit_path("remove", k, f)))[0] for f in edit_frames]
    row["remove_unedited"] = float(np.mean(base))
    print(json.dumps(row), flush=True); rows.append(row)
summary = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key not in ("object", "category")}
print("MEAN", json.dumps(summary))
out.write_text(json.dumps({"checkpoint": str(ckpt), "rows": rows, "mean": summary, "s": time.time() - t0}, indent=1))
