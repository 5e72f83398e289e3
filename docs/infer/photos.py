# usage (from a checkout with the 60-chair benchmark in data/shapenet): python docs/infer/photos.py docs/infer/photos
"""Photo-like test images no test generated: test chairs ray-cast at 256 px (twice the dataset's), on a noisy
gradient backdrop, saved as JPEG (no alpha); GT part labels and keypoints at the photo's pixels in gt_<name>.npz."""
import sys, json
from pathlib import Path
import numpy as np
from PIL import Image
from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.procedural.part_swap import dataset_settings, instance_index
from featurenerf_ns.data.procedural.generate import build_scene
from featurenerf_ns.data.procedural.render import CAMERA_ANGLE_X, Intrinsics, Raycaster, render_view, keypoint_visibility

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
cat = CategoryData(Path("data/shapenet"), "chair")
st = dataset_settings(cat)
rng = np.random.default_rng(7)
S = 256
K = Intrinsics.from_angle(CAMERA_ANGLE_X, S, S)
for inst, view, bg in [("inst_0000", 0, (235, 232, 225)), ("inst_0010", 0, (170, 190, 215)), ("inst_0012", 2, (200, 215, 190))]:
    sc = build_scene(st, instance_index(inst))
    c2w = cat.instance(inst).poses[view]
    caster = Raycaster(sc.vertices, sc.faces)
    v = render_view(caster, sc.face_normals, sc.face_labels, sc.face_materials, sc.materials, c2w, K, 3)
    uv, vis = keypoint_visibility(caster, sc.keypoints, c2w, K)
    yy, xx = np.mgrid[0:S, 0:S] / S
    back = np.array(bg)[None, None] * (0.85 + 0.15 * (1 - yy))[..., None] + rng.normal(0, 4, (S, S, 3))
    a = v.rgba[..., 3:4] / 255.0
    img = v.rgba[..., :3] * a + back * (1 - a)
    name = f"{inst}_v{view}"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out / f"{name}.jpg", quality=85)
    np.savez(out / f"gt_{name}.npz", parts=v.parts, kp=uv, vis=vis, view=view)
Image.new("RGB", (128, 128), (240, 240, 240)).save(out / "blank.png")
print("photos in", out)
