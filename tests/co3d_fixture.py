"""A tiny CO3D v2 category written in the exact CO3D layout (frame/sequence annotations as gzipped JSON, set
lists, JPEG frames, soft PNG masks, PLY point clouds), rendered from procedural chairs with Embree.

Each sequence's world frame is a random similarity transform of the object frame (x_obj = s0 Q0 (x_w - c0)), as
in CO3D, where every sequence has its own SfM frame; cameras are PyTorch3D cameras with NDC-isotropic intrinsics
of a non-square image with an off-centre principal point and fx != fy; the cameras orbit at varying distances and
look slightly off the object. One frame per sequence looks far away from the object (the filters must drop it).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
import trimesh
from PIL import Image

from featurenerf_ns.data.procedural.generate import GeneratorSettings, build_scene
from featurenerf_ns.data.procedural.render import Intrinsics, Raycaster, look_at, render_view

W, H = 96, 72
FX, FY, CX, CY = 80.0, 82.0, 50.0, 35.0
"""Intrinsics at ``scale`` 1 (pixels; the principal point is off the image centre and fx != fy)."""
BACKGROUND = np.array([120, 160, 200], dtype=np.float64)


@dataclass
class FixtureSequence:
    name: str
    index: int  # procedural chair index
    s0: float
    Q0: np.ndarray
    c0: np.ndarray

    def to_world(self, x_obj: np.ndarray) -> np.ndarray:
        return (x_obj / self.s0) @ self.Q0 + self.c0  # x_w = Q0^T x_obj / s0 + c0 (row vectors)


def _rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def p3d_camera(c2w_obj: np.ndarray, seq: FixtureSequence):
    """PyTorch3D R, T (x_cam = R^T x_w + T) of an OpenGL camera given in the object frame."""
    rot_w = seq.Q0.T @ c2w_obj[:3, :3]
    C = seq.to_world(c2w_obj[:3, 3])
    R = rot_w @ np.diag([-1.0, 1.0, -1.0])
    return R, -R.T @ C


def write_co3d_fixture(
    root: Path, category: str = "chair", frames_per_sequence: int = 12, scale: int = 1
) -> Dict[str, FixtureSequence]:
    """Writes ``<root>/<category>/...`` with frames of (W, H) x ``scale`` pixels; sequences seq_a, seq_b (train),
    seq_c (test), seq_x (in no set list)."""
    rng = np.random.default_rng(0)
    settings = GeneratorSettings(category="chair", num_instances=8)
    cat_dir = root / category
    frame_annos: List[dict] = []
    seq_annos: List[dict] = []
    sequences: Dict[str, FixtureSequence] = {}
    w, h = W * scale, H * scale
    s = min(h, w) / 2.0
    K = Intrinsics(w, h, FX * scale, FY * scale, CX * scale, CY * scale)
    for k, name in enumerate(["seq_a", "seq_b", "seq_c", "seq_x"]):
        seq = FixtureSequence(name, k, float(rng.uniform(0.5, 2.0)), _rotation(rng), rng.normal(size=3))
        sequences[name] = seq
        scene = build_scene(settings, k)
        caster = Raycaster(scene.vertices, scene.faces)
        (cat_dir / name / "images").mkdir(parents=True, exist_ok=True)
        (cat_dir / name / "masks").mkdir(parents=True, exist_ok=True)
        for f in range(frames_per_sequence):
            az = 2 * np.pi * f / frames_per_sequence
            el = np.deg2rad(rng.uniform(10, 40))
            r = rng.uniform(1.6, 1.9)
            pos = r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
            target = rng.normal(scale=0.04, size=3) if f != 3 else np.array([0.0, 0.0, 3.0])  # frame 3: away
            c2w = look_at(pos, target)
            view = render_view(
                caster, scene.face_normals, scene.face_labels, scene.face_materials, scene.materials, c2w, K
            )
            a = view.rgba[..., 3:4].astype(np.float64) / 255.0
            rgb = view.rgba[..., :3] * a + BACKGROUND * (1 - a)
            img_rel = f"{category}/{name}/images/frame{f + 1:06d}.jpg"
            mask_rel = f"{category}/{name}/masks/frame{f + 1:06d}.png"
            Image.fromarray(np.round(rgb).astype(np.uint8)).save(root / img_rel, quality=95)
            Image.fromarray(view.rgba[..., 3]).save(root / mask_rel)
            R, T = p3d_camera(c2w, seq)
            frame_annos.append(
                {
                    "sequence_name": name,
                    "frame_number": f + 1,
                    "frame_timestamp": f / 30.0,
                    "image": {"path": img_rel, "size": [h, w]},
                    "depth": None,
                    "mask": {"path": mask_rel, "mass": float(view.rgba[..., 3].sum() / 255.0)},
                    "viewpoint": {
                        "R": R.tolist(),
                        "T": T.tolist(),
                        "focal_length": [K.fx / s, K.fy / s],
                        "principal_point": [(w / 2 - K.cx) / s, (h / 2 - K.cy) / s],
                        "intrinsics_format": "ndc_isotropic",
                    },
                    "meta": {},
                }
            )
        pts_obj = trimesh.Trimesh(scene.vertices, scene.faces).sample(800, seed=k)
        pc_rel = f"{category}/{name}/pointcloud.ply"
        trimesh.PointCloud(seq.to_world(pts_obj)).export(root / pc_rel)
        seq_annos.append(
            {
                "sequence_name": name,
                "category": category,
                "video": {"path": f"{category}/{name}/video.mp4", "length": frames_per_sequence},
                "point_cloud": {"path": pc_rel, "quality_score": 1.0, "n_points": 800},
                "viewpoint_quality_score": 1.0,
            }
        )
    with gzip.open(cat_dir / "frame_annotations.jgz", "wt", encoding="utf-8") as f:
        json.dump(frame_annos, f)
    with gzip.open(cat_dir / "sequence_annotations.jgz", "wt", encoding="utf-8") as f:
        json.dump(seq_annos, f)
    lists: Dict[str, list] = {"train": [], "val": [], "test": []}
    for fa in frame_annos:
        split = {"seq_a": "train", "seq_b": "train", "seq_c": "test"}.get(fa["sequence_name"])
        if split:
            lists[split].append([fa["sequence_name"], fa["frame_number"], fa["image"]["path"]])
    (cat_dir / "set_lists").mkdir(exist_ok=True)
    (cat_dir / "set_lists" / "set_lists_fewview_dev.json").write_text(json.dumps(lists))
    return sequences
