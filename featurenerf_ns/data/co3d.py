"""CO3D (v2) sequences -> our multi-instance layout (:mod:`featurenerf_ns.data.layout`), so that the FeatureNeRF data
manager, its batching and the teacher cache read CO3D exactly as they read the ShapeNet renders. One sequence (one
video of one object) becomes one instance.

Input: the CO3D v2 layout of one category (paths inside the annotations are relative to ``<root>``)::

    <root>/<category>/frame_annotations.jgz     gzipped JSON list, one dict per frame: sequence_name, frame_number,
                                                image {path, size [H, W]}, mask {path, mass},
                                                viewpoint {R 3x3, T 3, focal_length [2], principal_point [2],
                                                           intrinsics_format "ndc_isotropic" | "ndc_norm_image_bounds"}
    <root>/<category>/sequence_annotations.jgz  gzipped JSON list: sequence_name, category,
                                                point_cloud {path, quality_score, n_points} | null,
                                                viewpoint_quality_score | null
    <root>/<category>/set_lists/set_lists_<subset>.json   {"train"|"val"|"test": [[sequence, frame_number, path], ...]}
    <root>/<category>/<sequence>/images/frame000001.jpg, masks/frame000001.png (soft, 0-255), pointcloud.ply

Cameras (PyTorch3D's convention, in which CO3D stores them): ``x_cam = R^T x_world + T`` (the row-vector form
``X_cam = X_world R + T``), camera +x left, +y up, +z forward. Pixel coordinates (u right, v down, pixel centres at
+0.5): ``u = cx - fx x/z``, ``v = cy - fy y/z`` with, for ``ndc_isotropic``, s = min(H, W) / 2,
``fx, fy = focal_length * s`` and ``cx, cy = (W/2, H/2) - principal_point * s``; for ``ndc_norm_image_bounds``
the same with s_x = W/2 for x and s_y = H/2 for y. The camera centre is ``C = -R T``; the OpenGL camera-to-world
rotation is ``R diag(-1, 1, -1)``.

Normalisation per sequence (CO3D's world frames are arbitrary per sequence: SfM origin, scale and rotation):

* centre c (3,): the median of the sequence point cloud when it has one (``centre="auto"`` or ``"pointcloud"``),
  else the least-squares intersection of the cameras' optical axes (``"cameras"``: the point nearest to all axes);
* scale s: the median camera distance to c becomes 1.3, the benchmark's camera radius (the centre of the official
  near/far 0.8-1.8, so points within 0.5 of c are covered from a median-distance camera);
* rotation Q (3, 3) (rows: new axes in the old frame): +z is the mean of the cameras' up vectors (videos are filmed
  upright: gravity up), +x points from c towards the first kept frame's camera, projected off +z. Yaw is not
  canonical across sequences: CO3D objects are not aligned, so the coordinate loss regresses a per-sequence frame.

``x_ours = s Q (x_co3d - c)``; (c, s, Q) of every sequence are stored in ``co3d_conversion.json``.

Crop around the object: each kept frame is re-rendered through a virtual pinhole camera at the same centre that
looks at c (up: the real camera's up), with the benchmark's field of view (a 0.5-radius sphere at distance 1.3 just
fills the image) and ``image_size``^2 pixels. A pure rotation about the camera centre maps images exactly (a
homography), so geometry is preserved: for virtual pixel (u', v'), the direction
``d_v = ((u' - S/2) / f', -(v' - S/2) / f', -1)`` maps to the real camera as ``d_c = R^T Q^T M_v d_v`` (M_v the
virtual camera's rotation in our frame) and is looked up at ``(cx - fx d_c.x / d_c.z, cy - fy d_c.y / d_c.z)``,
bilinearly, supersampled by up to 8 x 8 and area-averaged (so a 1000-pixel frame is not aliased into 128 pixels).
RGB is composited on black (the official background) with the mask (thresholded at ``mask_threshold``, then
supersampled into a soft alpha); what falls outside the real frame is background.

Quality filters (frames, then sequences): a frame is kept when its object covers at least ``min_foreground`` of the
crop and at most ``max_border_foreground`` of the crop's one-pixel border ring (else the object is cut off);
a sequence is kept with at least ``min_frames`` kept frames and, when set, a ``viewpoint_quality_score`` of at least
``min_viewpoint_quality``. ``num_views`` kept frames, evenly spaced by frame number, become the instance's views.

Splits: a sequence listed in the set list's ``test`` list is a test instance, else in ``val`` a val instance, else
a train instance (held-out lists win: FeatureNeRF generalises across instances, so an instance is wholly in one
split). Without the set-list file, every tenth sequence (sorted by name) is val and the next one test.

The converted data is written once per settings under ``<cache>/<key>`` (key: a hash of the settings and of the
annotation files' sizes and times), sequence by sequence into ``<key>.partial`` (a killed conversion resumes), and
renamed to ``<key>`` when complete, so a reader never sees a half-written dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from featurenerf_ns.data.layout import (
    FeatureNeRFDataError,
    Layout,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    focal_from_angle,
    load_json,
    read_image,
    read_jsonl,
)
from featurenerf_ns.data.procedural.render import CAMERA_ANGLE_X, CAMERA_RADIUS, look_at

CONVERSION_FILE = "co3d_conversion.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
Centre = Literal["auto", "pointcloud", "cameras"]


@dataclass(frozen=True)
class Co3DSettings:
    """Everything that changes the converted data (part of the cache key). The one home of these knobs: the
    ``co3d-data`` dataparser nests it (its flags keep these names: ``co3d-data --image-size 128``)."""

    image_size: int = 128
    """Side of the square crops (the benchmark's 128)."""
    num_views: int = 50
    """Frames per sequence, evenly spaced among those passing the filters (the benchmark has 50 views)."""
    subset_name: str = "fewview_dev"
    """Set list ``set_lists/set_lists_<subset>.json`` that assigns sequences to train/val/test."""
    centre: Centre = "auto"
    """Sequence centre: auto (point cloud when present, else cameras) | pointcloud | cameras (optical axes)."""
    mask_threshold: float = 0.5
    """CO3D's soft masks are foreground where >= this."""
    min_foreground: float = 0.02
    """Drop a frame whose object covers less of the crop."""
    max_border_foreground: float = 0.05
    """Drop a frame whose object covers more of the crop's border ring (cut off)."""
    min_frames: int = 10
    """Drop a sequence with fewer usable frames."""
    min_viewpoint_quality: Optional[float] = None
    """Drop sequences whose viewpoint_quality_score is below this (None: keep all)."""
    max_sequences: Optional[int] = None
    """Convert only the first N sequences (by name) of each split (quick experiments)."""


# ----------------------------------------------------------------------------------------------------------------------
# Reading the annotations


def read_jgz(path: Path, what: str) -> Any:
    """A gzipped JSON file (CO3D's ``*.jgz``)."""
    if not path.is_file():
        raise FeatureNeRFDataError(
            f"{path}: CO3D {what} not found; point --data at the CO3D root (or <root>/<category>)"
        )
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FeatureNeRFDataError(
            f"{path}: unreadable CO3D {what} ({e.__class__.__name__}); re-download or re-extract the category"
        ) from e


def resolve_co3d(data: Path, category: Optional[str]) -> Tuple[Path, str]:
    """(CO3D root, category) from ``--data <root> --category <c>`` or ``--data <root>/<c>``."""
    data = Path(data)
    if category is None:
        if (data / "frame_annotations.jgz").is_file():
            return data.parent, data.name
        cats = sorted(p.parent.name for p in data.glob("*/frame_annotations.jgz"))
        if len(cats) == 1:
            return data, cats[0]
        raise FeatureNeRFDataError(
            f"{data}: not a CO3D category folder (no frame_annotations.jgz)"
            + (
                f"; it holds {', '.join(cats[:5])}: pass --data {data / cats[0]}"
                if cats
                else "; pass --data <root>/<category>"
            )
        )
    if (data / category / "frame_annotations.jgz").is_file():
        return data, category
    if data.name == category and (data / "frame_annotations.jgz").is_file():
        return data.parent, category
    raise FeatureNeRFDataError(f"{data / category / 'frame_annotations.jgz'}: CO3D category {category!r} not found")


@dataclass
class Co3DFrame:
    sequence: str
    frame_number: int
    image_path: Path
    mask_path: Optional[Path]
    size_hw: Tuple[int, int]
    R: np.ndarray  # (3, 3)
    T: np.ndarray  # (3,)
    K: Tuple[float, float, float, float]  # fx, fy, cx, cy in pixels (see module docstring)


def pixel_intrinsics(viewpoint: Dict[str, Any], hw: Tuple[int, int], where: str) -> Tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels from CO3D's NDC focal length and principal point (module docstring)."""
    H, W = hw
    fmt = viewpoint.get("intrinsics_format", "ndc_norm_image_bounds")
    fl, pp = np.asarray(viewpoint["focal_length"], float), np.asarray(viewpoint["principal_point"], float)
    if fl.shape != (2,) or pp.shape != (2,):
        raise FeatureNeRFDataError(f"{where}: focal_length and principal_point must have 2 values each")
    if fmt == "ndc_isotropic":
        sx = sy = min(H, W) / 2.0
    elif fmt == "ndc_norm_image_bounds":
        sx, sy = W / 2.0, H / 2.0
    else:
        raise FeatureNeRFDataError(
            f"{where}: unknown intrinsics_format {fmt!r}; expected ndc_isotropic or ndc_norm_image_bounds"
        )
    return float(fl[0] * sx), float(fl[1] * sy), float(W / 2.0 - pp[0] * sx), float(H / 2.0 - pp[1] * sy)


def parse_frames(root: Path, category: str) -> Dict[str, List[Co3DFrame]]:
    """Frames of every sequence, sorted by frame number."""
    path = root / category / "frame_annotations.jgz"
    raw = read_jgz(path, "frame annotations")
    if not isinstance(raw, list):
        raise FeatureNeRFDataError(f"{path}: expected a JSON list of frame annotations")
    out: Dict[str, List[Co3DFrame]] = {}
    for i, fa in enumerate(raw):
        where = f"{path} (entry {i})"
        try:
            vp, im = fa["viewpoint"], fa["image"]
            hw = (int(im["size"][0]), int(im["size"][1]))
            R, T = np.asarray(vp["R"], float), np.asarray(vp["T"], float)
            mask = fa.get("mask") or {}
            frame = Co3DFrame(
                sequence=str(fa["sequence_name"]),
                frame_number=int(fa["frame_number"]),
                image_path=root / im["path"],
                mask_path=(root / mask["path"]) if mask.get("path") else None,
                size_hw=hw,
                R=R,
                T=T,
                K=pixel_intrinsics(vp, hw, where),
            )
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise FeatureNeRFDataError(
                f"{where}: malformed frame annotation ({e.__class__.__name__}: {e}); re-download the category"
            ) from None
        if R.shape != (3, 3) or T.shape != (3,) or not (np.isfinite(R).all() and np.isfinite(T).all()):
            raise FeatureNeRFDataError(f"{where}: viewpoint R must be finite 3x3 and T finite 3-vector")
        out.setdefault(frame.sequence, []).append(frame)
    for frames in out.values():
        frames.sort(key=lambda f: f.frame_number)
    return out


def parse_sequences(root: Path, category: str) -> Dict[str, Dict[str, Any]]:
    path = root / category / "sequence_annotations.jgz"
    raw = read_jgz(path, "sequence annotations")
    if not isinstance(raw, list):
        raise FeatureNeRFDataError(f"{path}: expected a JSON list of sequence annotations")
    try:
        return {str(s["sequence_name"]): s for s in raw}
    except (KeyError, TypeError):
        raise FeatureNeRFDataError(f"{path}: every entry needs a sequence_name") from None


def split_of_sequences(root: Path, category: str, subset: str, sequences: List[str]) -> Dict[str, str]:
    """sequence -> train/val/test from ``set_lists/set_lists_<subset>.json`` (module docstring); sequences the set
    lists do not name are left out."""
    path = root / category / "set_lists" / f"set_lists_{subset}.json"
    names = sorted(sequences)
    if not path.is_file():
        return {s: ("val" if i % 10 == 8 else "test" if i % 10 == 9 else "train") for i, s in enumerate(names)}
    lists = load_json(path, "CO3D set list")
    if not isinstance(lists, dict):
        raise FeatureNeRFDataError(f"{path}: expected a JSON object with train/val/test lists")
    listed: Dict[str, set] = {k: set() for k in SPLITS}
    for k in SPLITS:
        for entry in lists.get(k, []):
            if not isinstance(entry, (list, tuple)) or len(entry) < 2:
                raise FeatureNeRFDataError(f"{path}: {k} entries must be [sequence_name, frame_number, image_path]")
            listed[k].add(str(entry[0]))
    out = {}
    for s in names:
        for k in ("test", "val", "train"):
            if s in listed[k]:
                out[s] = k
                break
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Geometry


def opengl_c2w(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """4x4 OpenGL camera-to-world of a PyTorch3D camera (x_cam = R^T x + T)."""
    c2w = np.eye(4)
    c2w[:3, :3] = R @ np.diag([-1.0, 1.0, -1.0])
    c2w[:3, 3] = -R @ T
    return c2w


def axes_intersection(centres: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """The point nearest (least squares) to the lines centres + t forwards (N, 3): solves
    sum_i (I - d_i d_i^T) x = sum_i (I - d_i d_i^T) c_i."""
    d = forwards / np.linalg.norm(forwards, axis=1, keepdims=True)
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), np.einsum("nij,nj->i", P, centres)
    return np.linalg.lstsq(A, b, rcond=None)[0]


def read_point_cloud(path: Path) -> np.ndarray:
    """(N, 3) points of a PLY point cloud (trimesh)."""
    import trimesh

    try:
        geom = trimesh.load(path, process=False)
    except Exception as e:  # trimesh raises many types on bad files
        raise FeatureNeRFDataError(
            f"{path}: unreadable point cloud ({e.__class__.__name__}); use --centre cameras"
        ) from e
    pts = np.asarray(getattr(geom, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or not len(pts):
        raise FeatureNeRFDataError(f"{path}: point cloud has no points; use --centre cameras")
    return pts


@dataclass
class Normalisation:
    """x_ours = scale * rotation @ (x - centre)."""

    centre: np.ndarray
    scale: float
    rotation: np.ndarray
    centre_source: str

    def apply_c2w(self, c2w: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = self.rotation @ c2w[:3, :3]
        out[:3, 3] = self.scale * self.rotation @ (c2w[:3, 3] - self.centre)
        return out

    def to_json(self) -> Dict[str, Any]:
        return {
            "centre": self.centre.tolist(),
            "scale": self.scale,
            "rotation": self.rotation.tolist(),
            "centre_source": self.centre_source,
        }


def normalisation(frames: List[Co3DFrame], point_cloud: Optional[Path], how: Centre) -> Normalisation:
    """Centre, scale and rotation of one sequence (module docstring)."""
    c2ws = np.stack([opengl_c2w(f.R, f.T) for f in frames])
    centres, forwards, ups = c2ws[:, :3, 3], -c2ws[:, :3, 2], c2ws[:, :3, 1]
    if how == "pointcloud" and (point_cloud is None or not point_cloud.is_file()):
        raise FeatureNeRFDataError(f"{point_cloud}: point cloud not found for --centre pointcloud; use auto or cameras")
    if how != "cameras" and point_cloud is not None and point_cloud.is_file():
        c, src = np.median(read_point_cloud(point_cloud), axis=0), "pointcloud"
    else:
        c, src = axes_intersection(centres, forwards), "cameras"
    dist = np.linalg.norm(centres - c, axis=1)
    med = float(np.median(dist))
    if not math.isfinite(med) or med <= 1e-9:
        raise FeatureNeRFDataError(f"{frames[0].image_path.parent}: cameras coincide with the object centre")
    z = ups.mean(0)
    z = z / max(np.linalg.norm(z), 1e-12)
    x = (centres[0] - c) - np.dot(centres[0] - c, z) * z
    if np.linalg.norm(x) < 1e-9:  # first camera straight above: any horizontal direction
        x = np.cross(z, [1.0, 0.0, 0.0] if abs(z[0]) < 0.9 else [0.0, 1.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return Normalisation(c, CAMERA_RADIUS / med, np.stack([x, y, z]), src)


# ----------------------------------------------------------------------------------------------------------------------
# Re-rendering one frame through the virtual camera


def _read_image(path: Path, mode: str) -> np.ndarray:
    """(H, W[, C]) float32 in [0, 1] of a CO3D frame or mask."""
    return read_image(path, mode, "re-extract the sequence", "CO3D image").astype(np.float32) / 255.0


def crop_frame(frame: Co3DFrame, norm: Normalisation, settings: Co3DSettings) -> Tuple[np.ndarray, np.ndarray]:
    """(RGBA uint8 (S, S, 4) on black, virtual OpenGL c2w (4, 4) in our frame) of one frame."""
    S = settings.image_size
    rgb = _read_image(frame.image_path, "RGB")
    H, W = rgb.shape[:2]
    if (H, W) != tuple(frame.size_hw):
        raise FeatureNeRFDataError(
            f"{frame.image_path}: image is {W}x{H} but the frame annotation says {frame.size_hw[1]}x{frame.size_hw[0]}"
        )
    if frame.mask_path is None:
        raise FeatureNeRFDataError(f"{frame.image_path}: frame has no mask path; CO3D masks are required")
    mask = _read_image(frame.mask_path, "L")
    if mask.shape != (H, W):
        raise FeatureNeRFDataError(f"{frame.mask_path}: mask size {mask.shape[::-1]} differs from its image {(W, H)}")
    real = norm.apply_c2w(opengl_c2w(frame.R, frame.T))
    up = real[:3, 1]
    virt = look_at(real[:3, 3], (0.0, 0.0, 0.0), up)
    f_v = focal_from_angle(CAMERA_ANGLE_X, S)
    fx, fy, cx, cy = frame.K
    ss = int(min(8, max(1, math.ceil(max(fx, fy) / f_v))))  # supersampling so each real pixel is seen once or more
    n = S * ss
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / ss  # virtual pixel coordinates of the sub-samples
    vv, uu = torch.meshgrid(t, t, indexing="ij")
    d_v = torch.stack([(uu - S / 2) / f_v, -(vv - S / 2) / f_v, -torch.ones_like(uu)], -1)  # (n, n, 3)
    # virtual camera -> our world -> CO3D world -> PyTorch3D camera of the real frame
    A = frame.R.T @ norm.rotation.T @ virt[:3, :3]
    d_c = d_v @ torch.from_numpy(A).T
    z = d_c[..., 2]
    ok = z > 1e-9
    zs = torch.where(ok, z, torch.ones_like(z))
    u = cx - fx * d_c[..., 0] / zs
    v = cy - fy * d_c[..., 1] / zs
    grid = torch.stack([u / W * 2 - 1, v / H * 2 - 1], -1)[None].float()  # align_corners=False: edges at +-1
    src = torch.from_numpy(np.concatenate([rgb, (mask >= settings.mask_threshold)[..., None]], -1)).permute(2, 0, 1)
    out = F.grid_sample(src[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    inside = (ok & (u >= 0) & (u <= W) & (v >= 0) & (v <= H)).float()
    out = out * inside[None]
    if ss > 1:
        out = F.avg_pool2d(out[None], ss)[0]
    a = out[3:4].clamp(0, 1)
    col = (out[:3] * a).clamp(0, 1)  # composited on black; stored straight alpha: rgb / a where a > 0
    straight = torch.where(a > 1e-6, col / a.clamp(min=1e-6), torch.zeros_like(col)).clamp(0, 1)
    rgba = torch.cat([straight, a], 0).permute(1, 2, 0).numpy()
    return np.round(rgba * 255).astype(np.uint8), virt


def frame_quality(rgba: np.ndarray, settings: Co3DSettings) -> Optional[str]:
    """None when the crop is usable, else why not."""
    fg = rgba[..., 3] > 127
    if fg.mean() < settings.min_foreground:
        return "small"
    ring = np.concatenate([fg[0], fg[-1], fg[1:-1, 0], fg[1:-1, -1]])
    if ring.mean() > settings.max_border_foreground:
        return "cut"
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Conversion


def _source_stamp(root: Path, category: str, subset: str) -> List[Any]:
    out = []
    for p in (
        root / category / "frame_annotations.jgz",
        root / category / "sequence_annotations.jgz",
        root / category / "set_lists" / f"set_lists_{subset}.json",
    ):
        st = p.stat() if p.is_file() else None
        out.append([p.name, st.st_size if st else None, int(st.st_mtime) if st else None])
    return out


def cache_key(root: Path, category: str, settings: Co3DSettings) -> str:
    blob = json.dumps(
        {
            "v": FORMAT_VERSION,
            "settings": asdict(settings),
            "source": _source_stamp(root, category, settings.subset_name),
        },
        sort_keys=True,
    )
    return f"{category}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def _evenly(items: List[Any], n: int) -> List[Any]:
    if len(items) <= n:
        return list(items)
    idx = np.round(np.linspace(0, len(items) - 1, n)).astype(int)
    return [items[i] for i in idx]


def _png(rgba: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def convert_sequence(
    out_root: Path, category: str, seq: str, frames: List[Co3DFrame], meta: Dict[str, Any], settings: Co3DSettings
) -> Dict[str, Any]:
    """Writes one sequence as an instance (images, then the camera file last: its presence marks it complete);
    returns its report entry."""
    layout = Layout(out_root, category)
    pc = (meta.get("point_cloud") or {}).get("path")
    norm = normalisation(frames, (_co3d_root_of(frames[0]) / pc) if pc else None, settings.centre)
    kept, why = [], {"small": 0, "cut": 0}
    for fr in frames:
        rgba, c2w = crop_frame(fr, norm, settings)
        bad = frame_quality(rgba, settings)
        if bad:
            why[bad] += 1
        else:
            kept.append((fr.frame_number, rgba, c2w))
    entry: Dict[str, Any] = {"frames": len(frames), "dropped": why, "normalisation": norm.to_json()}
    if len(kept) < settings.min_frames:
        entry["kept"] = False
        entry["reason"] = f"{len(kept)} usable frames < min_frames {settings.min_frames}"
        return entry
    chosen = _evenly(kept, settings.num_views)
    img_dir = layout.img_dir(seq)
    img_dir.mkdir(parents=True, exist_ok=True)
    cam_frames = []
    for k, (num, rgba, c2w) in enumerate(chosen):
        atomic_write_bytes(img_dir / f"{k:03d}.png", _png(rgba))
        cam_frames.append({"file_path": f"{k:03d}", "transform_matrix": c2w.tolist(), "co3d_frame_number": num})
    atomic_write_json(layout.camera_file(seq), {"camera_angle_x": CAMERA_ANGLE_X, "frames": cam_frames})
    entry.update(kept=True, views=len(chosen))
    return entry


def _co3d_root_of(frame: Co3DFrame) -> Path:
    """The CO3D root: image paths are <root>/<category>/<sequence>/images/<file>."""
    return frame.image_path.parents[3]


def convert_category(
    data: Path, category: Optional[str], settings: Co3DSettings, cache_dir: Optional[Path] = None, progress: bool = True
) -> Tuple[Path, str]:
    """Converts (once; resumable) and returns (our data root, category name) for :class:`CategoryData`."""
    root, category = resolve_co3d(data, category)
    cache = Path(cache_dir) if cache_dir is not None else root / category / "_featurenerf_ns"
    key = cache_key(root, category, settings)
    final = cache / key
    if (final / CONVERSION_FILE).is_file():
        return final, category
    partial = cache / f"{key}.partial"
    try:
        partial.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FeatureNeRFDataError(
            f"{cache}: cannot write the converted CO3D data ({e.strerror}); set "
            "--pipeline.datamanager.dataparser.cache-dir to a writable folder"
        ) from None
    frames = parse_frames(root, category)
    seqs = parse_sequences(root, category)
    split = split_of_sequences(root, category, settings.subset_name, list(frames))
    report_path = partial / "sequences.jsonl"
    done: Dict[str, Dict[str, Any]] = {}
    if report_path.is_file():
        done = {r["sequence"]: r for r in read_jsonl(report_path)}
    todo: Dict[str, List[str]] = {k: [] for k in SPLITS}
    skipped_quality = 0
    unlisted = 0
    for s in sorted(frames):
        if s not in split:  # not in the subset's set lists
            unlisted += 1
            continue
        q = (seqs.get(s) or {}).get("viewpoint_quality_score")
        if settings.min_viewpoint_quality is not None and (q is None or q < settings.min_viewpoint_quality):
            skipped_quality += 1
            continue
        todo[split[s]].append(s)
    if settings.max_sequences is not None:
        todo = {k: v[: settings.max_sequences] for k, v in todo.items()}
    order = [s for k in SPLITS for s in todo[k]]

    if progress:
        from rich.progress import Progress

        prog = Progress(transient=False)
        prog.start()
        task = prog.add_task(f"CO3D {category} -> {final.name}", total=len(order))
    try:
        for s in order:
            if s not in done:
                rec = convert_sequence(partial, category, s, frames[s], seqs.get(s) or {}, settings)
                rec.update(sequence=s, split=split[s])
                append_jsonl(report_path, rec)
                done[s] = rec
            if progress:
                prog.advance(task)
    finally:
        if progress:
            prog.stop()
    splits = {k: [s for s in todo[k] if done[s].get("kept")] for k in SPLITS}
    if not splits["train"]:
        raise FeatureNeRFDataError(
            f"{root / category}: no CO3D train sequence passed the quality filters ({report_path}); lower "
            "--pipeline.datamanager.dataparser.min-frames or min-foreground"
        )
    borrowed = [k for k in ("val", "test") if not splits[k]]
    for k in borrowed:  # ns-eval and the eval callback need held-out instances: say so, loudly
        splits[k] = splits["train"][-1:]
        CONSOLE.print(f"[yellow]CO3D {category}: no usable {k} sequence; {k} borrows train sequence {splits[k][0]}")
    atomic_write_json(Layout(partial, category).split_file, splits)
    report = {
        "format_version": FORMAT_VERSION,
        "source": str(root / category),
        "settings": asdict(settings),
        "sequences": {s: done[s] for s in order},
        "kept": {k: len(v) for k, v in splits.items()},
        "dropped_viewpoint_quality": skipped_quality,
        "not_in_set_lists": unlisted,
        "held_out_borrowed_from_train": borrowed,
    }
    atomic_write_json(partial / CONVERSION_FILE, report)
    os.replace(partial, final)
    return final, category
