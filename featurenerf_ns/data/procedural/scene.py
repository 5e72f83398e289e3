"""The embedded multi-object scene of the per-scene systems (N3F, smoothing, editing), in nerfstudio's format.

A handful of procedural objects of the benchmark's categories (two of them of the same category: the teacher
groups similar objects, so retrieving "this chair" must not return the other chair for free) stand on a textured
platform; cameras look at the platform from a band of the upper hemisphere. Everything is derived from the
settings (seed, objects, resolution, views): re-running reproduces the same bytes.

Layout of ``<root>``::

    transforms.json            nerfstudio-data format (OpenGL camera-to-world, pinhole intrinsics), with
                               train_filenames / val_filenames / test_filenames: every ``heldout_every``-th frame
                               is held out (val = test), the rest train
    images/frame_XXXXX.png     RGB on black (the background beyond the platform is empty space)
    annotations/frames.npz     depth (F, H, W) float16 along the optical axis (0 = background); instance (F, H, W)
                               uint8 of the pixel-centre ray: 0 background, 1..N objects, N + 1 platform;
                               amodal (F, N, H, W) bool: object k's silhouette ignoring occluders
    annotations/objects.npz    points (M, 3) float32 world-frame surface samples of every object and the platform
                               (samples buried in another surface are rejected), point_object (M,) int16
                               (0..N-1 objects, N platform), normals (M, 3)
    edits/remove_<k>/frame_XXXXX.png   held-out frames rendered without object k (ground truth of "remove")
    edits/extract_<k>/frame_XXXXX.png  held-out frames of object k alone on black (ground truth of "extract")
    scene.json                 settings + fingerprint, objects (category, placement, scale), splits, conventions;
                               written last: it marks the scene complete

Atomicity: the scene is built in ``<root>.staging-<pid>`` and moved into place in one rename; an interrupted run
leaves no ``scene.json`` at ``<root>`` and re-running rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from featurenerf_ns.data.layout import (
    FeatureNeRFDataError,
    atomic_write_json,
    load_json,
    npz_bytes,
    replace_dir,
)
from featurenerf_ns.data.procedural.appearance import Material, sample_materials
from featurenerf_ns.data.procedural.categories import CATEGORY_NAMES, get_category
from featurenerf_ns.data.procedural.generate import (
    LONGEST_EDGE,
    _merge_and_normalise,
    _png_bytes,
    _sample_surface,
)
from featurenerf_ns.data.procedural.render import Intrinsics, Raycaster, look_at, pixel_rays, render_view

SCENE_VERSION = 1
SCENE_FILE = "scene.json"
PLATFORM_SIZE = 2.4
"""Edge of the square platform the objects stand on (its top face is z = 0)."""
CAMERA_TARGET = (0.0, 0.0, 0.25)
CAMERA_RADIUS = 2.6
CAMERA_ANGLE_X = float(2.0 * np.arcsin(1.2 / CAMERA_RADIUS))
"""A 1.2-radius sphere around the target just fills the image width: every object is in every frame."""
GOLDEN_ANGLE = float(np.pi * (3.0 - np.sqrt(5.0)))


@dataclass(frozen=True)
class SceneSettings:
    objects: Tuple[str, ...] = ("chair", "chair", "car", "bottle", "table", "motorbike")
    """Categories of the objects, in order (object k has instance id k + 1); repeats are wanted."""
    seed: int = 0
    resolution: int = 128
    num_views: int = 120
    heldout_every: int = 6
    """Every n-th frame is held out from training (val = test): 120 views -> 100 train, 20 held out."""
    object_size: float = 0.7
    """Longest edge of every object's bounding box (the benchmark's objects: 0.6)."""
    min_elevation_deg: float = 25.0
    max_elevation_deg: float = 60.0
    supersample: int = 2
    num_points: int = 4096
    """Surface samples per object (and for the platform)."""

    def fingerprint(self) -> str:
        payload = json.dumps({**asdict(self), "version": SCENE_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check(self) -> None:
        bad = [c for c in self.objects if c not in CATEGORY_NAMES]
        if bad:
            raise FeatureNeRFDataError(f"scene: unknown categories {bad}; choose from {', '.join(CATEGORY_NAMES)}")
        if not 1 <= len(self.objects) <= 12:
            raise FeatureNeRFDataError(f"scene: {len(self.objects)} objects; use 1 to 12 (the platform fits ~8)")
        if self.heldout_every < 2 or self.num_views < 2 * self.heldout_every:
            raise FeatureNeRFDataError(
                f"scene: num_views {self.num_views} / heldout_every {self.heldout_every} leave no train or held-out "
                "frames; use heldout_every >= 2 and num_views >= 2 x heldout_every"
            )


@dataclass
class SceneObject:
    category: str
    vertices: np.ndarray  # (V, 3) world frame
    faces: np.ndarray  # (T, 3)
    materials: List[Material]
    face_materials: np.ndarray  # (T,) index into materials
    placement: Dict[str, Any] = field(default_factory=dict)


def frame_name(i: int) -> str:
    return f"frame_{i:05d}.png"


def heldout_frames(settings: SceneSettings) -> List[int]:
    return list(range(settings.heldout_every // 2, settings.num_views, settings.heldout_every))


def render_count(settings: SceneSettings) -> int:
    """Frames rendered by :func:`generate_scene`: every view, plus remove / extract renders of each held-out frame."""
    return settings.num_views + len(heldout_frames(settings)) * 2 * len(settings.objects)


def camera_poses(settings: SceneSettings) -> np.ndarray:
    """(F, 4, 4) OpenGL camera-to-world: a Fibonacci spiral over the elevation band (even coverage by area)."""
    lo, hi = np.sin(np.deg2rad(settings.min_elevation_deg)), np.sin(np.deg2rad(settings.max_elevation_deg))
    n = settings.num_views
    poses = []
    target = np.asarray(CAMERA_TARGET)
    for i in range(n):
        z = lo + (hi - lo) * (i + 0.5) / n
        el, az = np.arcsin(z), i * GOLDEN_ANGLE
        pos = target + CAMERA_RADIUS * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        poses.append(look_at(pos, target))
    return np.stack(poses)


def _platform() -> SceneObject:
    h, s = 0.05, PLATFORM_SIZE / 2.0
    corners = np.array([[x, y, z] for z in (-h, 0.0) for x, y in ((-s, -s), (s, -s), (s, s), (-s, s))])
    quads = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    mat = Material(np.array([0.62, 0.6, 0.55]), "checker", 8.0, 0.18, np.array([0.0, 0.0, 1.0]), 0)
    return SceneObject("platform", corners, faces, [mat], np.zeros(len(faces), dtype=np.int64))


def _place(rng: np.random.Generator, radii: Sequence[float], half: float, margin: float = 0.06) -> np.ndarray:
    """Non-overlapping footprint discs (centres (N, 2)) inside the square [-half, half]^2: largest first, random
    positions, the whole layout redrawn when one does not fit."""
    order = np.argsort(radii)[::-1]
    for _ in range(200):
        centres = np.zeros((len(radii), 2))
        placed: List[int] = []
        for k in order:
            for _ in range(500):
                p = rng.uniform(-(half - radii[k]), half - radii[k], size=2)
                if all(np.linalg.norm(p - centres[j]) >= radii[k] + radii[j] + margin for j in placed):
                    centres[k] = p
                    placed.append(k)
                    break
            else:
                break
        if len(placed) == len(radii):
            return centres
    raise FeatureNeRFDataError(
        f"scene: cannot place {len(radii)} objects of size up to {max(radii) * 2:.2f} without overlap on the "
        f"{2 * half:.1f} platform; use fewer objects or a smaller object_size"
    )


def build_objects(settings: SceneSettings) -> List[SceneObject]:
    """The scene's objects in the world frame (standing on z = 0, random yaw, non-overlapping)."""
    settings.check()
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 4242]))
    shapes = []
    for k, cat in enumerate(settings.objects):
        module = get_category(cat)
        part_names = list(module.PARTS)
        obj_rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 4242, k]))
        spec = module.build(obj_rng)
        v, f, labels, _ = _merge_and_normalise(spec, part_names)
        yaw = float(obj_rng.uniform(0.0, 2.0 * np.pi))
        c, s = np.cos(yaw), np.sin(yaw)
        v = v * (settings.object_size / LONGEST_EDGE) @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        v[:, 2] -= v[:, 2].min()
        materials, part_to_mat = sample_materials(obj_rng, part_names)
        mat_of_label = np.array([part_to_mat[n] for n in part_names], dtype=np.int64)
        shapes.append((cat, v, f, materials, mat_of_label[labels.astype(np.int64) - 1], yaw))
    radii = [
        float(np.linalg.norm(v[:, :2] - (v[:, :2].max(0) + v[:, :2].min(0)) / 2, axis=1).max()) for _, v, *_ in shapes
    ]
    centres = _place(rng, radii, half=PLATFORM_SIZE / 2.0 - 0.05)
    objects = []
    for (cat, v, f, mats, fm, yaw), r, ctr in zip(shapes, radii, centres):
        mid = (v[:, :2].max(0) + v[:, :2].min(0)) / 2
        v = v.copy()
        v[:, :2] += ctr - mid
        objects.append(
            SceneObject(
                cat,
                v,
                f,
                mats,
                fm,
                {
                    "centre": np.round(ctr, 5).tolist(),
                    "yaw": round(yaw, 5),
                    "footprint_radius": round(r, 5),
                    "height": round(float(v[:, 2].max()), 5),
                },
            )
        )
    return objects


def _merge(objs: Sequence[SceneObject], labels: Sequence[int]):
    """One mesh of several objects: vertices, faces, face normals, face labels, face materials, materials."""
    verts, faces, flab, fmat, mats = [], [], [], [], []
    off_v = off_m = 0
    for o, lab in zip(objs, labels):
        verts.append(o.vertices)
        faces.append(o.faces + off_v)
        flab.append(np.full(len(o.faces), lab, dtype=np.uint8))
        fmat.append(o.face_materials + off_m)
        mats.extend(o.materials)
        off_v += len(o.vertices)
        off_m += len(o.materials)
    v, f = np.concatenate(verts), np.concatenate(faces)
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return v, f, n, np.concatenate(flab), np.concatenate(fmat), mats


class _SceneRenderer:
    """Renders any subset of the scene's surfaces (label 0 = background, k + 1 = object k, N + 1 = platform)."""

    def __init__(self, objects: Sequence[SceneObject], labels: Sequence[int], K: Intrinsics, supersample: int):
        self.v, self.f, self.n, self.labels, self.fmat, self.mats = _merge(objects, labels)
        self.caster = Raycaster(self.v, self.f)
        self.K, self.ss = K, supersample

    def render(self, c2w: np.ndarray):
        return render_view(self.caster, self.n, self.labels, self.fmat, self.mats, c2w, self.K, self.ss)

    def coverage(self, c2w: np.ndarray) -> np.ndarray:
        """(H, W) bool: the pixel-centre ray hits one of these surfaces."""
        o, d = pixel_rays(c2w, self.K, np.array([[0.5, 0.5]]))
        prim, _ = self.caster.first_hit(o, d)
        return (prim >= 0).reshape(self.K.height, self.K.width)


def scene_intrinsics(settings: SceneSettings) -> Intrinsics:
    return Intrinsics.from_angle(CAMERA_ANGLE_X, settings.resolution, settings.resolution)


def transforms_json(settings: SceneSettings, poses: np.ndarray) -> Dict[str, Any]:
    K = scene_intrinsics(settings)
    held = set(heldout_frames(settings))
    names = [f"images/{frame_name(i)}" for i in range(len(poses))]
    return {
        "camera_model": "OPENCV",
        "fl_x": K.fx,
        "fl_y": K.fy,
        "cx": K.cx,
        "cy": K.cy,
        "w": K.width,
        "h": K.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": [{"file_path": n, "transform_matrix": np.round(p, 8).tolist()} for n, p in zip(names, poses)],
        "train_filenames": [n for i, n in enumerate(names) if i not in held],
        "val_filenames": [n for i, n in enumerate(names) if i in held],
        "test_filenames": [n for i, n in enumerate(names) if i in held],
    }


def scene_complete(root: Path, settings: SceneSettings) -> bool:
    f = Path(root) / SCENE_FILE
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text()).get("fingerprint") == settings.fingerprint()
    except (OSError, json.JSONDecodeError):
        return False


def generate_scene(
    root: Path,
    settings: SceneSettings = SceneSettings(),
    overwrite: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """Builds the scene at ``root`` (skipped when a complete scene of the same settings is there). ``progress(done,
    total)`` is called after every rendered frame. Returns ``root``."""
    root = Path(root)
    if scene_complete(root, settings) and not overwrite:
        return root
    if (root / SCENE_FILE).is_file() and not overwrite:
        old = load_json(root / SCENE_FILE, "scene manifest")
        raise FeatureNeRFDataError(
            f"{root / SCENE_FILE}: a scene with other settings (fingerprint {old.get('fingerprint')}) is there; pass "
            "--overwrite or another --out"
        )
    settings.check()
    objects = build_objects(settings)
    n = len(objects)
    platform = _platform()
    K = scene_intrinsics(settings)
    poses = camera_poses(settings)
    held = heldout_frames(settings)
    everything = list(objects) + [platform]
    all_labels = list(range(1, n + 2))
    full = _SceneRenderer(everything, all_labels, K, settings.supersample)
    alone = [_SceneRenderer([o], [k + 1], K, settings.supersample) for k, o in enumerate(objects)]
    removed = [
        _SceneRenderer(
            [o for j, o in enumerate(everything) if j != k],
            [lab for j, lab in enumerate(all_labels) if j != k],
            K,
            settings.supersample,
        )
        for k in range(n)
    ]
    total, done = render_count(settings), 0

    staging = root.parent / f".{root.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "images").mkdir(parents=True)
    (staging / "annotations").mkdir()
    F, H, W = len(poses), K.height, K.width
    depth = np.zeros((F, H, W), np.float16)
    instance = np.zeros((F, H, W), np.uint8)
    amodal = np.zeros((F, n, H, W), bool)
    try:
        for i, c2w in enumerate(poses):
            view = full.render(c2w)
            (staging / "images" / frame_name(i)).write_bytes(_png_bytes(view.rgba[..., :3].copy()))
            depth[i], instance[i] = view.depth, view.parts
            for k in range(n):
                amodal[i, k] = alone[k].coverage(c2w)
            done += 1
            if progress:
                progress(done, total)
        for k in range(n):
            for kind, renderer in (("remove", removed[k]), ("extract", alone[k])):
                d = staging / "edits" / f"{kind}_{k}"
                d.mkdir(parents=True)
                for i in held:
                    d.joinpath(frame_name(i)).write_bytes(_png_bytes(renderer.render(poses[i]).rgba[..., :3].copy()))
                    done += 1
                    if progress:
                        progress(done, total)
        (staging / "annotations" / "frames.npz").write_bytes(
            npz_bytes({"depth": depth, "instance": instance, "amodal": amodal})
        )
        (staging / "annotations" / "objects.npz").write_bytes(npz_bytes(_surface_samples(settings, everything, full)))
        (staging / "transforms.json").write_text(json.dumps(transforms_json(settings, poses), indent=1) + "\n")
        manifest = {
            "fingerprint": settings.fingerprint(),
            "settings": {**asdict(settings), "version": SCENE_VERSION},
            "objects": [
                {"index": k, "instance_id": k + 1, "category": o.category, **o.placement} for k, o in enumerate(objects)
            ],
            "platform": {"instance_id": n + 1, "size": PLATFORM_SIZE},
            "frames": {"train": [i for i in range(F) if i not in set(held)], "heldout": held},
            "camera": {"radius": CAMERA_RADIUS, "target": list(CAMERA_TARGET), "camera_angle_x": CAMERA_ANGLE_X},
            "conventions": {
                "world": "+z up, platform top at z = 0; transforms.json holds OpenGL camera-to-world matrices",
                "instance": "0 background, 1..N objects (scene.json objects[k].instance_id = k + 1), N + 1 platform",
                "depth": "distance along the optical axis, 0 = background, float16",
            },
        }
        atomic_write_json(staging / SCENE_FILE, manifest)
        replace_dir(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _surface_samples(settings: SceneSettings, everything: Sequence[SceneObject], full: _SceneRenderer):
    """Area-weighted samples of each surface that escape the whole scene (not buried in another surface)."""
    pts, owner, nrm = [], [], []
    for k, o in enumerate(everything):
        v, f, fn, _, _, _ = _merge([o], [k])
        rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 77, k]))
        p, _, nn = _sample_surface(full.caster, v, f, fn, np.zeros(len(f), np.uint8), settings.num_points, rng)
        pts.append(p)
        nrm.append(nn)
        owner.append(np.full(len(p), k, np.int16))
    return {"points": np.concatenate(pts), "point_object": np.concatenate(owner), "normals": np.concatenate(nrm)}
