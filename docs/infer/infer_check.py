# usage: python docs/infer/infer_check.py docs/infer docs/infer/photos  (after featurenerf-infer ... --out docs/infer/<photo>__<model>)
"""GT check of featurenerf-infer on the photos of photos.py (uses ground truth: a check of the transfer, not a
prediction): part label accuracy and mIoU over pixels both call foreground, keypoint PCK at 10% of the object's
longer side."""
import sys, json
from pathlib import Path
import numpy as np
from PIL import Image

root, photos = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for d in sorted(p for p in root.iterdir() if (p / "result.json").is_file()):
    name = d.name.split("__")[0]
    gt = np.load(photos / f"gt_{name}.npz")
    pred = np.asarray(Image.open(d / "part_labels.png")).astype(np.int64)
    res = json.loads((d / "result.json").read_text())
    g = gt["parts"].astype(np.int64)
    both = (pred > 0) & (g > 0)
    fg_iou = ((pred > 0) & (g > 0)).sum() / ((pred > 0) | (g > 0)).sum()
    acc = float((pred[both] == g[both]).mean())
    ious = []
    for lab in np.unique(g[g > 0]):
        u = ((pred == lab) | (g == lab)) & both
        if u.sum():
            ious.append(((pred == lab) & (g == lab) & both).sum() / u.sum())
    ys, xs = np.nonzero(g > 0)
    side = max(xs.ptp(), ys.ptp()) + 1
    errs = []
    for k in res["keypoints"]:
        if gt["vis"][k["id"]]:
            errs.append(np.hypot(k["x"] - 0.5 - gt["kp"][k["id"]][0], k["y"] - 0.5 - gt["kp"][k["id"]][1]) / side)
    rows.append(dict(photo=d.name, feature=res["feature"], step=res["step"], foreground=res["foreground"],
                     foreground_iou_vs_gt=round(float(fg_iou), 4), part_accuracy=round(acc, 4),
                     part_miou=round(float(np.mean(ious)), 4), kp_pck10=round(float(np.mean(np.array(errs) < 0.1)), 4) if errs else None,
                     kp_n=len(errs)))
for r in rows:
    print(r)
(root / "gt_check.json").write_text(json.dumps(rows, indent=1) + "\n")
