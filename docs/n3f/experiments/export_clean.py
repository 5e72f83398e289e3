"""Export-only experiment (issue 16): the exported segment, cleaned on a grid (``featurenerf-scene export``'s default)
or raw (``--no-clean``, the per-point feature rule), against the scene's ground truth.

For each object k, ``featurenerf-scene export --object k --frame F`` (the selection is the object's ground-truth
visible mask in train frame F: an oracle *selection*, as the CLI labels it; the segment itself is the model's), F the
train frame where k shows most pixels (as the scene tasks pick their query frame) unless a frame is given. Each
exported surface point gets the label of its nearest ground-truth surface sample (points farther than 5% of the
scene's extent count as background); precision / recall / IoU of the exported ``segment`` against label k.

Usage: python docs/n3f/experiments/export_clean.py <run>/config.yml <scene dir> <out.json> [frame]
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from featurenerf_ns.data.layout import atomic_write_json
from featurenerf_ns.data.procedural.scene_data import SceneData
from featurenerf_ns.scripts.scene import load_n3f

cfg, scene_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
fixed_frame = int(sys.argv[4]) if len(sys.argv) > 4 else None
scene = SceneData.load(scene_dir)
pipe, _, _ = load_n3f(cfg)
stems = [int(Path(f).stem.split("_")[-1]) for f in pipe.datamanager.train_dataset.image_filenames]
instance = scene.frames()["instance"]
surf = scene.surface()
tree, owner = cKDTree(surf["points"]), surf["point_object"]
near_tol = 0.05 * float(np.ptp(surf["points"], axis=0).max())
exe = Path(sys.executable).parent / "featurenerf-scene"
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for k in range(scene.num_objects):
        sizes = [int((instance[s] == k + 1).sum()) for s in stems]
        frame = int(np.argmax(sizes)) if fixed_frame is None else fixed_frame
        for flag in ("--clean", "--no-clean"):
            d = Path(tmp) / f"{k}{flag}"
            cmd = [str(exe), "export", "--load-config", str(cfg), "--out", str(d), "--object", str(k)]
            cmd += ["--frame", str(frame), "--mesh-resolution", "0", flag]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                err = [ln for ln in (r.stdout + r.stderr).splitlines() if "rror" in ln]
                rows.append({"object": k, "variant": flag, "error": err[-1] if err else r.stderr[-300:]})
                print(rows[-1])
                continue
            z = np.load(d / "points.npz")
            dist, idx = tree.query(z["points"])
            gt = (owner[idx] == k) & (dist < near_tol)
            seg = z["segment"].astype(bool)
            tp = int((seg & gt).sum())
            rows.append({
                "object": k, "frame": frame, "selection_pixels": sizes[frame], "variant": flag, "segment_points": int(seg.sum()), "gt_points": int(gt.sum()),
                "precision": tp / max(int(seg.sum()), 1), "recall": tp / max(int(gt.sum()), 1),
                "iou": tp / max(int((seg | gt).sum()), 1), "tau": float(z["tau"].item()),
            })  # fmt: skip
            print({key: (round(v, 3) if isinstance(v, float) else v) for key, v in rows[-1].items()})
summary = {}
for flag in ("--clean", "--no-clean"):
    ok = [r for r in rows if r["variant"] == flag and "iou" in r]
    summary[flag] = {m: float(np.mean([r[m] for r in ok])) if ok else None for m in ("precision", "recall", "iou")}
    summary[flag]["objects"] = len(ok)
print(json.dumps(summary, indent=1))
atomic_write_json(out, {"config": str(cfg), "frame": fixed_frame or "largest", "summary": summary, "rows": rows})
