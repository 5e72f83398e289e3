"""Generates the embedded procedural benchmark ("ShapeNet-like") in the official FeatureNeRF layout.

One instance = one parametric object of a category: mesh with per-face part labels, named 3D keypoints,
a per-instance colour scheme, 50 RGBA renders with depth / part-label maps / 2D keypoints + visibility,
and a part-labelled surface point cloud. Everything is derived from ``(seed, category, index)``, so an
instance is identical whichever order or process renders it, and re-running reproduces the same bytes.

Atomicity: an instance is staged in ``<root>/.staging/`` and moved into place directory by directory;
its camera JSON is written last and marks it complete. ``splits/<category>.json`` is written once all
instances are complete and marks the category complete. An interrupted run leaves nothing that reads as
complete, and re-running resumes with the missing instances.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, cast

import numpy as np
import trimesh
from PIL import Image
from threadpoolctl import threadpool_limits

from featurenerf_ns.data.layout import (
    FAR,
    NEAR,
    SYNSETS,
    FeatureNeRFDataError,
    Layout,
    atomic_write_json,
    load_json,
    npz_bytes,
    replace_dir,
)
from featurenerf_ns.data.procedural.appearance import sample_materials
from featurenerf_ns.data.procedural.categories import CATEGORY_NAMES, get_category
from featurenerf_ns.data.procedural.render import (
    CAMERA_ANGLE_X,
    AlbedoFn,
    Intrinsics,
    Raycaster,
    fixed_poses,
    keypoint_visibility,
    material_albedo_fn,
    random_hemisphere_poses,
    render_albedo_view,
)

GENERATOR_VERSION = 1
LONGEST_EDGE = 0.6
"""Every object is scaled so the longest edge of its bounding box has this length."""
MAX_RADIUS = 0.49
"""Objects must fit within this distance of the centre so near/far 0.8/1.8 cover them from radius 1.3."""
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True, kw_only=True)
class ViewSettings:
    """How every instance is rendered and sampled (the procedural generator's and the mesh renderer's settings and
    command lines extend it; keyword-only, so subclasses keep their own positional fields)."""

    seed: int = 0
    resolution: int = 128
    """Render width = height in pixels."""
    train_views: int = 50
    """Random upper-hemisphere views per train instance."""
    eval_views: int = 50
    """Fixed views per val/test instance (the same for every instance)."""
    supersample: int = 2
    """Anti-aliasing: supersample^2 rays per pixel for RGBA (labels/depth use the pixel-centre ray)."""
    num_points: int = 2048
    """Part-labelled surface points per instance."""

    def view_settings(self) -> Dict[str, Any]:
        """These fields as keyword arguments (to build one settings class from another)."""
        return {f.name: getattr(self, f.name) for f in fields(ViewSettings)}


@dataclass(frozen=True)
class CategorySettings(ViewSettings):
    """One category's rendering settings: what rendering and writing an instance read (the procedural generator's
    :class:`GeneratorSettings` and the mesh renderer's settings extend it with their own fingerprint)."""

    category: str

    def fingerprint(self) -> str:
        """A short hash of everything that changes the rendered data."""
        raise NotImplementedError(f"{type(self).__name__} must define fingerprint()")


@dataclass(frozen=True)
class GeneratorSettings(CategorySettings):
    num_instances: int = 60

    def fingerprint(self) -> str:
        payload = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def instance_id(index: int) -> str:
    return f"inst_{index:04d}"


def split_ids(ids: List[str], entropy: Sequence[int]) -> Dict[str, List[str]]:
    """70/10/20 train/val/test split of ``ids`` by a fixed permutation drawn from ``entropy`` (at least one val and
    one test id once there are 3 ids)."""
    n = len(ids)
    perm = np.random.default_rng(np.random.SeedSequence(list(entropy))).permutation(n)
    n_train = int(round(SPLIT_FRACTIONS[0] * n))
    n_val = int(round(SPLIT_FRACTIONS[1] * n))
    if n >= 3:  # keep at least one val and one test instance
        n_val = max(n_val, 1)
        n_train = min(n_train, n - n_val - 1)
    shuffled = [ids[i] for i in perm]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def split_assignment(settings: GeneratorSettings) -> Dict[str, List[str]]:
    """70/10/20 train/val/test split of the instance ids by a fixed permutation of the seed."""
    cat_idx = CATEGORY_NAMES.index(settings.category)
    return split_ids([instance_id(i) for i in range(settings.num_instances)], [settings.seed, cat_idx, 7919])


def _merge_and_normalise(spec, part_names: List[str]):
    meshes, labels = [], []
    for part, mesh in spec.parts:
        if part not in part_names:
            raise ValueError(f"generator produced unknown part {part!r}")
        meshes.append(mesh)
        labels.append(np.full(len(mesh.faces), part_names.index(part) + 1, dtype=np.uint8))
    merged = cast(trimesh.Trimesh, trimesh.util.concatenate(meshes))
    vertices = np.asarray(merged.vertices, dtype=np.float64)
    lo, hi = vertices.min(0), vertices.max(0)
    center = (lo + hi) / 2.0
    scale = LONGEST_EDGE / float((hi - lo).max())
    vertices = (vertices - center) * scale
    keypoints = {k: (None if v is None else (v - center) * scale) for k, v in spec.keypoints.items()}
    return vertices, np.asarray(merged.faces, dtype=np.int64), np.concatenate(labels), keypoints


def _sample_surface(caster: Raycaster, vertices, faces, face_normals, face_labels, n: int, rng: np.random.Generator):
    """Area-weighted surface samples that lie on the object's outer surface (samples buried inside another
    part, e.g. the top of a leg inside the seat, are rejected: none of 8 rays from them escapes)."""
    tri = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    prob = areas / areas.sum()
    pts_out, lab_out, nrm_out = [], [], []
    total = 0
    for _ in range(20):
        m = 4 * n
        fid = rng.choice(len(faces), size=m, p=prob)
        r1, r2 = rng.random(m), rng.random(m)
        s1 = np.sqrt(r1)
        bary = np.stack([1 - s1, s1 * (1 - r2), s1 * r2], axis=1)
        pts = np.einsum("ij,ijk->ik", bary, tri[fid])
        nrm = face_normals[fid]
        k_dirs = 8
        jitter = rng.normal(size=(m, k_dirs, 3))
        jitter /= np.linalg.norm(jitter, axis=2, keepdims=True)
        dirs = nrm[:, None, :] + 0.95 * jitter
        dirs[:, 0] = nrm  # always try straight out along the normal
        flip = np.einsum("ijk,ik->ij", dirs, nrm) < 0
        dirs[flip] *= -1
        origins = np.repeat(pts + 1e-4 * nrm, k_dirs, axis=0)
        prim, _ = caster.first_hit(origins, dirs.reshape(-1, 3))
        escaped = (prim.reshape(m, k_dirs) < 0).any(axis=1)
        pts_out.append(pts[escaped])
        lab_out.append(face_labels[fid][escaped])
        nrm_out.append(nrm[escaped])
        total += int(escaped.sum())
        if total >= n:
            break
    pts, lab, nrm = (np.concatenate(a)[:n] for a in (pts_out, lab_out, nrm_out))
    return pts.astype(np.float32), lab.astype(np.uint8), nrm.astype(np.float32)


@dataclass
class InstanceScene:
    """One instance's geometry and appearance, before any rendering (what :func:`build_instance` renders)."""

    vertices: np.ndarray
    """(V, 3) float, normalised into the bounding sphere."""
    faces: np.ndarray
    """(F, 3) int."""
    face_labels: np.ndarray
    """(F,) part label 1..L."""
    face_normals: np.ndarray
    """(F, 3) unit."""
    keypoints: np.ndarray
    """(K, 3), NaN rows = absent."""
    materials: List[Any]
    """The instance's palette (:class:`~featurenerf_ns.data.procedural.appearance.Material`)."""
    part_to_mat: Dict[str, int]
    """Part name -> index into ``materials``."""
    face_materials: np.ndarray
    """(F,) index into ``materials``."""
    style: Dict[str, Any]


def build_scene(settings: GeneratorSettings, index: int, rng: Optional[np.random.Generator] = None) -> InstanceScene:
    """Instance ``index``'s geometry and materials, drawn from its own seed (``rng``: that generator, to go on
    drawing from it, as :func:`build_instance` does for cameras and surface points)."""
    module = get_category(settings.category)
    part_names = list(module.PARTS)
    kp_names = [k for k, _ in module.KEYPOINTS]
    if rng is None:
        rng = instance_rng(settings, index)
    for attempt in range(50):
        spec = module.build(rng)
        vertices, faces, face_labels, kp_dict = _merge_and_normalise(spec, part_names)
        if np.linalg.norm(vertices, axis=1).max() <= MAX_RADIUS:
            break
    else:
        raise RuntimeError(f"{settings.category} generator never fit the {MAX_RADIUS} bounding sphere")
    missing = set(kp_names) - set(kp_dict)
    if missing:
        raise RuntimeError(f"{settings.category} generator did not set keypoints {sorted(missing)}")
    keypoints = np.full((len(kp_names), 3), np.nan)
    for i, name in enumerate(kp_names):
        if kp_dict[name] is not None:
            keypoints[i] = kp_dict[name]
    materials, part_to_mat = sample_materials(rng, part_names)
    material_of_label = np.array([part_to_mat[name] for name in part_names], dtype=np.int64)
    face_materials = material_of_label[face_labels.astype(np.int64) - 1]
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_normals /= np.maximum(np.linalg.norm(face_normals, axis=1, keepdims=True), 1e-12)
    return InstanceScene(
        vertices, faces, face_labels, face_normals, keypoints, materials, part_to_mat, face_materials, spec.style
    )


def instance_rng(settings: GeneratorSettings, index: int) -> np.random.Generator:
    """The random generator of instance ``index`` (everything about the instance is drawn from it, in order)."""
    cat_idx = CATEGORY_NAMES.index(settings.category)
    return np.random.default_rng(np.random.SeedSequence([settings.seed, cat_idx, index]))


def build_instance(settings: GeneratorSettings, index: int, split: str) -> Dict[str, Any]:
    """Builds and renders one instance entirely in memory."""
    rng = instance_rng(settings, index)
    sc = build_scene(settings, index, rng)
    poses = camera_poses(settings, split, rng)
    data = render_instance(
        settings,
        sc.vertices,
        sc.faces,
        sc.face_labels,
        sc.face_normals,
        sc.keypoints,
        material_albedo_fn(sc.face_materials, sc.materials),
        poses,
        rng,
    )
    meta = {
        "id": instance_id(index),
        "category": settings.category,
        "split": split,
        "index": index,
        "style": {k: (v.item() if isinstance(v, np.generic) else v) for k, v in sc.style.items()},
        "materials": [m.to_json() for m in sc.materials],
        "part_materials": sc.part_to_mat,
        "fingerprint": settings.fingerprint(),
    }
    return {"id": instance_id(index), "split": split, "meta": meta, **data}


def camera_poses(settings: CategorySettings, split: str, rng: np.random.Generator) -> np.ndarray:
    """(V, 4, 4) c2w: ``train_views`` random upper-hemisphere views (drawn from ``rng``) for a train instance,
    else the ``eval_views`` fixed views every val/test instance shares."""
    if split == "train":
        return random_hemisphere_poses(rng, settings.train_views)
    return fixed_poses(settings.eval_views)


def render_instance(
    settings: CategorySettings,
    vertices: np.ndarray,
    faces: np.ndarray,
    face_labels: np.ndarray,
    face_normals: np.ndarray,
    keypoints: np.ndarray,
    albedo: AlbedoFn,
    poses: np.ndarray,
    rng: np.random.Generator,
) -> Dict[str, Any]:
    """Renders a normalised, part-labelled mesh (``vertices`` (V, 3), ``faces`` (F, 3), ``face_labels`` (F,) in 1..L,
    unit ``face_normals`` (F, 3), ``keypoints`` (K, 3) with NaN rows = absent) from every pose (V_c, 4, 4) at
    ``settings.resolution``: RGBA, optical-axis depth, part maps, projected keypoints + visibility, and
    ``settings.num_points`` part-labelled outer-surface samples (drawn from ``rng``). Returns the ``poses``, ``rgba``,
    ``views`` and ``shape`` entries of an instance (:func:`write_instance` writes them)."""
    K = Intrinsics.from_angle(CAMERA_ANGLE_X, settings.resolution, settings.resolution)
    caster = Raycaster(vertices, faces)
    rgba, depth, parts, kp2d, kp_vis = [], [], [], [], []
    for c2w in poses:
        view = render_albedo_view(caster, face_normals, face_labels, albedo, c2w, K, settings.supersample)
        uv, vis = keypoint_visibility(caster, keypoints, c2w, K)
        rgba.append(view.rgba)
        depth.append(view.depth)
        parts.append(view.parts)
        kp2d.append(uv)
        kp_vis.append(vis)
    points, point_labels, point_normals = _sample_surface(
        caster, vertices, faces, face_normals, face_labels, settings.num_points, rng
    )
    return {
        "poses": poses,
        "rgba": np.stack(rgba),
        "views": {
            "depth": np.stack(depth).astype(np.float16),
            "parts": np.stack(parts),
            "kp2d": np.stack(kp2d).astype(np.float32),
            "kp_visible": np.stack(kp_vis),
        },
        "shape": {
            "points": points,
            "point_labels": point_labels,
            "point_normals": point_normals,
            "keypoints": keypoints.astype(np.float32),
            "keypoint_present": np.isfinite(keypoints).all(axis=1),
            "mesh_vertices": vertices.astype(np.float32),
            "mesh_faces": faces.astype(np.int32),
            "face_labels": face_labels,
        },
    }


def _png_bytes(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buf, format="PNG", optimize=False, compress_level=6)  # RGB(A)
    return buf.getvalue()


def write_instance(root: Path, settings: CategorySettings, data: Dict[str, Any]) -> None:
    """Stages the instance, then moves images and annotations into place and writes the camera JSON last."""
    layout = Layout(root, settings.category)
    inst = data["id"]
    staging = Path(root) / ".staging" / settings.category / f"{inst}.{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "img").mkdir(parents=True)
    (staging / "ann").mkdir(parents=True)
    frames = []
    for v, (rgba, pose) in enumerate(zip(data["rgba"], data["poses"])):
        (staging / "img" / f"{v:03d}.png").write_bytes(_png_bytes(rgba))
        frames.append({"file_path": f"{v:03d}", "transform_matrix": np.round(pose, 8).tolist()})
    (staging / "ann" / "views.npz").write_bytes(npz_bytes(data["views"]))
    (staging / "ann" / "shape.npz").write_bytes(npz_bytes(data["shape"]))
    (staging / "ann" / "meta.json").write_text(json.dumps(data["meta"], indent=1, sort_keys=True) + "\n")
    camera = {
        "camera_angle_x": CAMERA_ANGLE_X,
        "near": NEAR,
        "far": FAR,
        "width": settings.resolution,
        "height": settings.resolution,
        "frames": frames,
        "generator_fingerprint": settings.fingerprint(),
    }
    layout.camera_file(inst).unlink(missing_ok=True)  # the instance is incomplete from here on
    replace_dir(staging / "img", layout.img_dir(inst))
    replace_dir(staging / "ann", layout.annotation_dir(inst))
    atomic_write_json(layout.camera_file(inst), camera)
    shutil.rmtree(staging, ignore_errors=True)


def instance_complete(root: Path, settings: CategorySettings, inst: str) -> bool:
    layout = Layout(root, settings.category)
    cam = layout.camera_file(inst)
    if not cam.is_file():
        return False
    try:
        camera = json.loads(cam.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if camera.get("generator_fingerprint") != settings.fingerprint():
        return False
    n_views = len(camera.get("frames", []))
    img_dir = layout.img_dir(inst)
    pngs = list(img_dir.glob("*.png")) if img_dir.is_dir() else []
    ann = layout.annotation_dir(inst)
    return len(pngs) == n_views > 0 and all((ann / f).is_file() for f in ("views.npz", "shape.npz", "meta.json"))


def _build_procedural(settings: GeneratorSettings, inst: str, split: str) -> Dict[str, Any]:
    return build_instance(settings, int(inst.split("_")[-1]), split)


def _single_thread_blas() -> None:
    """Worker initialiser: one BLAS thread per process. The renderer's small products ((N, 3) @ (3,) per view) ran
    2-3x slower with OpenBLAS's two threads per worker fighting the other worker for the 2 cores (measured: lambert
    3.05 vs 0.35 ms per 128 px view, a whole view 17.3 vs 11.4 ms); the results are the same bytes."""
    global _BLAS_LIMIT
    _BLAS_LIMIT = threadpool_limits(1, user_api="blas")  # kept: the limit holds for the worker's life


_BLAS_LIMIT = None


def _build_and_write(args) -> str:
    root, settings, build, inst, split = args
    data = build(settings, inst, split)
    write_instance(root, settings, data)
    return data["id"]


def category_conventions() -> Dict[str, Any]:
    """The ``camera`` and ``conventions`` entries of every category.json (procedural or rendered meshes)."""
    return {
        "camera": {
            "radius": 1.3,
            "camera_angle_x": CAMERA_ANGLE_X,
            "near": NEAR,
            "far": FAR,
            "longest_edge": LONGEST_EDGE,
        },
        "conventions": {
            "object_frame": "+z up, front faces -y; left/right are the object's own (+x is its left)",
            "depth": "views.npz depth = distance along the camera's optical axis (0 = background), float16",
            "kp2d": "pixel coordinates (x right, y down), pixel centres at +0.5; NaN when the keypoint is absent",
            "labels": "part label id = index in 'parts' + 1; 0 = background",
        },
    }


def category_manifest(settings: GeneratorSettings) -> Dict[str, Any]:
    module = get_category(settings.category)
    return {
        "category": settings.category,
        "synset": SYNSETS[settings.category],
        "parts": list(module.PARTS),
        "keypoints": [{"name": k, "part": p} for k, p in module.KEYPOINTS],
        "generator": {**asdict(settings), "version": GENERATOR_VERSION},
        "fingerprint": settings.fingerprint(),
        **category_conventions(),
    }


def generate_category(
    root: Path, settings: GeneratorSettings, workers: int = 1, overwrite: bool = False, progress=None
) -> Dict[str, List[str]]:
    """Generates (or resumes) one category; returns its split. ``progress(n_done, n_total)`` is called."""
    if settings.category not in CATEGORY_NAMES:
        raise FeatureNeRFDataError(f"unknown category {settings.category!r}; choose one of {', '.join(CATEGORY_NAMES)}")
    manifest, split = category_manifest(settings), split_assignment(settings)
    return write_category(root, settings, manifest, split, _build_procedural, workers, overwrite, progress)


def write_category(
    root: Path,
    settings: CategorySettings,
    manifest: Dict[str, Any],
    split: Dict[str, List[str]],
    build: Callable[[Any, str, str], Dict[str, Any]],
    workers: int = 1,
    overwrite: bool = False,
    progress=None,
) -> Dict[str, List[str]]:
    """Writes (or resumes) one category: ``manifest`` (its ``generator`` entry: the settings, compared with the
    existing data's), every instance of ``split`` not yet complete, built by ``build(settings, id, split)`` (a
    module-level function: it may run in worker processes) and written by :func:`write_instance`, then the split
    file, last. ``progress(n_done, n_total)`` is called. Returns ``split``."""
    root = Path(root)
    layout = Layout(root, settings.category)
    if layout.category_file.exists() and not overwrite:
        old = load_json(layout.category_file, "category manifest")
        if old.get("fingerprint") != settings.fingerprint():
            diff = {
                k: (old.get("generator", {}).get(k), v)
                for k, v in manifest["generator"].items()
                if old.get("generator", {}).get(k) != v
            }
            raise FeatureNeRFDataError(
                f"{layout.category_file}: existing {settings.category} data was generated with other settings "
                f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in diff.items())}); pass --overwrite or choose another "
                "--out"
            )
    if overwrite:
        for path in (
            layout.root / "img" / layout.dirname,
            layout.root / "camera" / layout.dirname,
            layout.annotation_root,
        ):
            shutil.rmtree(path, ignore_errors=True)
        layout.split_file.unlink(missing_ok=True)
    shutil.rmtree(root / ".staging" / settings.category, ignore_errors=True)  # leftovers of killed runs
    atomic_write_json(layout.category_file, manifest)

    ids = sorted(inst for ids in split.values() for inst in ids)
    split_of = {inst: name for name, ids in split.items() for inst in ids}
    todo = [(root, settings, build, i, split_of[i]) for i in ids if not instance_complete(root, settings, i)]
    done = len(ids) - len(todo)
    if progress:
        progress(done, len(ids))
    if workers <= 1 or len(todo) <= 1:
        with threadpool_limits(1, user_api="blas"):
            for job in todo:
                _build_and_write(job)
                done += 1
                if progress:
                    progress(done, len(ids))
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_single_thread_blas) as pool:
            for _ in pool.map(_build_and_write, todo):
                done += 1
                if progress:
                    progress(done, len(ids))
    atomic_write_json(layout.split_file, split)
    for d in (root / ".staging" / settings.category, root / ".staging"):
        try:
            d.rmdir()
        except OSError:
            pass
    return split


def check_settings(settings: CategorySettings) -> Optional[str]:
    """A one-line problem with the settings (None when they are fine)."""
    if getattr(settings, "num_instances", 1) < 1:
        return "--num-instances must be >= 1"
    if settings.resolution < 8:
        return "--resolution must be >= 8"
    if settings.train_views < 1 or settings.eval_views < 1:
        return "--train-views and --eval-views must be >= 1"
    return None
