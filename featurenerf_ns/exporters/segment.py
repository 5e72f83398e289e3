"""Export a trained N3F scene's surface with its distilled features, and a feature-space segment of it, as files.

Surface points (model frame): for each of ``num_frames`` evenly spaced training cameras rendered at ``scale`` of
their resolution, every pixel with accumulation >= ``min_accumulation`` gives

    x = o + t d          o, d (unit) the pixel's ray, t the median depth of the render        (N, 3)

with its rendered colour (N, 3); the field gives f(x) (N, D) and sigma(x) (N,) at the point (``model.query``), so
the exported feature is the 3D feature itself, not a blend along the ray. The segment of a query q is
{x : ||eta(f(x)) - eta(q)|| <= tau} (:mod:`featurenerf_ns.model_components.segment_edit`, N3F Sec. 4.3), or,
given a cleaned :class:`SegmentVolume` (the default of ``featurenerf-scene export``, as in the scene tasks and the
viewer), the points inside its occupied voxels.

Mesh: marching cubes (scikit-image) of sigma on a ``resolution``^3 grid over the scene box, with sigma set to 0
outside the segment; vertex colours are the field's colour seen along the direction from the vertex
to the segment's centroid (an outside-in view of a roughly convex object; no normals needed).

Files are written in the *dataset's* frame (the dataparser's transform and scale undone, so they line up with the
user's data and cameras); ``points.npz`` stores the transform. Own code because nerfstudio's point-cloud exporter
samples random training rays and keeps colour and depth only: features need the field at the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from featurenerf_ns.cameras import model_to_data, ray_hits
from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write, atomic_write_json, npz_bytes
from featurenerf_ns.model_components.segment_edit import SegmentVolume, best_threshold, feature_distance, region_query

N3FPipeline = Any
"""A trained ``pipelines.n3f_pipeline.N3FPipeline`` (exporters/ sits below pipelines/ and does not import it)."""


class ExportError(FeatureNeRFDataError):
    """A bad export request (frame out of range, empty box, nothing on the surface)."""


@dataclass
class SurfaceCloud:
    points: torch.Tensor  # (N, 3) model frame
    rgb: torch.Tensor  # (N, 3) in [0, 1]
    feature: torch.Tensor  # (N, D) f(x)
    density: torch.Tensor  # (N,) sigma(x)
    frame: torch.Tensor  # (N,) index of the train camera the point came from


def _evenly(n_items: int, n: int) -> list:
    return sorted({int(i) for i in np.linspace(0, n_items - 1, max(1, min(n, n_items))).round()})


def render_train_frame(pipeline: N3FPipeline, index: int, scale: float = 1.0) -> Tuple[Dict[str, torch.Tensor], Any]:
    """Render train camera ``index`` (at ``scale`` of its size): (outputs, its ray bundle)."""
    cams = pipeline.datamanager.train_dataset.cameras
    if not 0 <= index < len(cams):
        raise ExportError(f"export: train frame {index} out of range; this run has train frames 0..{len(cams) - 1}")
    cam = cams[index : index + 1].to(pipeline.device)
    if scale != 1.0:
        cam.rescale_output_resolution(scale)
    out = pipeline.model.get_outputs_for_camera(cam)
    bundle = cam.generate_rays(camera_indices=0, keep_shape=True)
    return out, bundle


@torch.no_grad()
def surface_cloud(
    pipeline: N3FPipeline,
    num_frames: int = 12,
    scale: float = 0.5,
    min_accumulation: float = 0.5,
    progress: Optional[Callable[[int, int], None]] = None,
) -> SurfaceCloud:
    """Surface points of ``num_frames`` evenly spaced train cameras (see the module docstring)."""
    model = pipeline.model
    frames = _evenly(len(pipeline.datamanager.train_dataset.cameras), num_frames)
    pts, rgbs, ids = [], [], []
    for i, f in enumerate(frames):
        out, bundle = render_train_frame(pipeline, f, scale)
        keep = out["accumulation"][..., 0] >= min_accumulation
        pts.append(ray_hits(bundle.origins[keep], bundle.directions[keep], out["depth"][keep]).cpu())
        rgbs.append(out["rgb"][keep].clamp(0, 1).cpu())
        ids.append(torch.full((int(keep.sum()),), f, dtype=torch.int64))
        if progress is not None:
            progress(i + 1, len(frames))
    points = torch.cat(pts)
    if len(points) == 0:
        raise ExportError(
            f"export: no pixel of {len(frames)} train frames reaches accumulation {min_accumulation}; the model has "
            "not learned a surface (train longer) or lower --min-accumulation"
        )
    feats, sigma = model.query(points.to(pipeline.device))
    return SurfaceCloud(points, torch.cat(rgbs), feats.float().cpu(), sigma.float().cpu(), torch.cat(ids))


def box_mask(height: int, width: int, box: Sequence[int]) -> torch.Tensor:
    """(H, W) bool mask of a box (x0, y0, x1, y1) in pixels, end-exclusive, clipped to the image."""
    if len(box) != 4:
        raise ExportError(f"export: a box is four pixel coordinates x0 y0 x1 y1, got {tuple(box)}")
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, max(x1, x0 + 1)), min(height, max(y1, y0 + 1))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def query_from_render(
    feature: torch.Tensor,
    accumulation: torch.Tensor,
    region: torch.Tensor,
    what: str = "the selection",
    min_accumulation: float = 0.5,
) -> Tuple[torch.Tensor, float]:
    """A selected region (H, W) bool of a render (feature (H, W, D), accumulation (H, W)) -> (q (D,), tau): the
    query of the region's pixels that the model renders as surface (accumulation >= min_accumulation), and the
    threshold chosen in that render alone (``best_threshold``; background pixels never enter the 2D segment)."""
    feat, acc = feature.float().cpu(), accumulation.cpu() >= min_accumulation
    if tuple(region.shape) != tuple(acc.shape):
        raise ExportError(f"segment query: {what} is {tuple(region.shape)}, the render is {tuple(acc.shape)}")
    mask = region.cpu() & acc
    if not bool(mask.any()):
        raise ExportError(f"segment query: {what} covers no rendered surface; select the object")
    query = region_query(feat, mask)
    dist = feature_distance(feat, query)
    dist[~acc] = 4.0
    return query, best_threshold(dist, mask)


@torch.no_grad()
def frame_query(
    pipeline: N3FPipeline, frame: int, region: torch.Tensor, what: str = "region", min_accumulation: float = 0.5
) -> Tuple[torch.Tensor, float, torch.Tensor]:
    """:func:`query_from_render` of a region (H, W) bool of train frame ``frame`` (rendered at full size), and the
    region's rendered surface points (M, 3) (model frame; the seeds of a cleaned segment)."""
    out, bundle = render_train_frame(pipeline, frame)
    acc = out["accumulation"][..., 0]
    query, tau = query_from_render(out["feature"], acc, region, f"the {what} in train frame {frame}", min_accumulation)
    keep = region.to(acc.device) & (acc >= min_accumulation)
    seeds = ray_hits(bundle.origins[keep], bundle.directions[keep], out["depth"][keep]).cpu()
    return query, tau, seeds


@torch.no_grad()
def segment_mesh(
    pipeline: N3FPipeline,
    query: torch.Tensor,
    tau: float,
    resolution: int = 128,
    level: float = 10.0,
    chunk: int = 1 << 16,
    volume: Optional[SegmentVolume] = None,
):
    """A trimesh.Trimesh (model frame) of the segment (``volume``'s voxels when given, else the feature rule):
    marching cubes of sigma masked to the segment; None when the masked density does not cross ``level``."""
    import trimesh
    from nerfstudio.cameras.rays import Frustums, RaySamples
    from nerfstudio.field_components.field_heads import FieldHeadNames
    from skimage.measure import marching_cubes

    model = pipeline.model
    lo, hi = model.scene_box.aabb[0].float(), model.scene_box.aabb[1].float()
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    feats, sigma = model.query(grid.to(pipeline.device), chunk=chunk)
    if volume is not None:
        inside = volume.contains(grid)
    else:
        inside = (feature_distance(feats.float(), query) <= tau).cpu()
    vol = (sigma.float().cpu() * inside).reshape(resolution, resolution, resolution).numpy()
    if not float(vol.min()) < level < float(vol.max()):  # no crossing of the level: nothing to mesh
        return None
    verts, faces, _, _ = marching_cubes(vol, level=level)
    step = ((hi - lo) / (resolution - 1)).numpy()
    v = torch.from_numpy(verts * step + lo.numpy()).float()
    d = F.normalize(v.mean(0, keepdim=True) - v, dim=-1)
    colors = []
    for s in range(0, len(v), chunk):
        p, dd = v[s : s + chunk, None].to(pipeline.device), d[s : s + chunk, None].to(pipeline.device)
        ones = torch.ones_like(p[..., :1])
        samples = RaySamples(
            frustums=Frustums(origins=p, directions=dd, starts=ones * 0, ends=ones * 0, pixel_area=ones),
            camera_indices=torch.zeros_like(p[..., :1], dtype=torch.long),
        )
        colors.append(model.field.forward(samples)[FieldHeadNames.RGB][:, 0].float().cpu())
    rgb = (torch.cat(colors).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return trimesh.Trimesh(vertices=v.numpy(), faces=faces, vertex_colors=rgb, process=False)


# ---------------------------------------------------------------------------------------------------------- files
def write_point_ply(path: Path, points: np.ndarray, rgb: np.ndarray, extra: Dict[str, np.ndarray]) -> None:
    """Binary PLY: x, y, z (float32), red, green, blue (uint8), then one vertex property per ``extra`` array (N,);
    written atomically."""
    from plyfile import PlyData, PlyElement

    n = len(points)
    cols = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    cols += [(k, np.asarray(a).dtype.str.lstrip("<>|=")) for k, a in extra.items()]
    arr = np.empty(n, dtype=cols)
    for i, c in enumerate("xyz"):
        arr[c] = points[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        arr[c] = (np.clip(rgb[:, i], 0, 1) * 255).round().astype(np.uint8)
    for k, a in extra.items():
        arr[k] = a
    atomic_write(Path(path), lambda f: PlyData([PlyElement.describe(arr, "vertex")]).write(f))


def export_segment(
    pipeline: N3FPipeline,
    out_dir: Path,
    query: torch.Tensor,
    tau: float,
    cloud: SurfaceCloud,
    mesh_resolution: int = 0,
    mesh_level: float = 10.0,
    info: Optional[Dict[str, Any]] = None,
    volume: Optional[SegmentVolume] = None,
) -> Dict[str, Any]:
    """Write ``points.ply`` (all surface points: rgb, PCA colours of f(x) as pca_r/g/b, ``segment`` 0/1),
    ``segment.ply`` (the segment's points, rgb), ``points.npz`` (model-frame and dataset-frame points, rgb,
    features, distances, segment, query, tau, the dataparser transform), ``segment_mesh.ply`` when
    ``mesh_resolution`` > 0, and ``export.json`` (counts and settings) last. With ``volume`` the segment is the
    points (and mesh) inside its occupied voxels; ``distance`` is always the feature distance. Returns the summary."""
    out_dir = Path(out_dir)
    dp = pipeline.datamanager.train_dataparser_outputs
    T, scale = dp.dataparser_transform, float(dp.dataparser_scale)
    dist = feature_distance(cloud.feature, query.cpu())
    seg = volume.contains(cloud.points) if volume is not None else dist <= tau
    pts = model_to_data(cloud.points, T, scale).numpy()
    rgb = cloud.rgb.numpy()
    pca = (pipeline.model.pca_colors()(cloud.feature).numpy() * 255).round().astype(np.uint8)
    extra = {"pca_r": pca[:, 0], "pca_g": pca[:, 1], "pca_b": pca[:, 2], "segment": seg.numpy().astype(np.uint8)}
    write_point_ply(out_dir / "points.ply", pts, rgb, extra)
    write_point_ply(out_dir / "segment.ply", pts[seg.numpy()], rgb[seg.numpy()], {})
    arrays = {
        "points": pts.astype(np.float32),
        "points_model": cloud.points.numpy().astype(np.float32),
        "rgb": rgb.astype(np.float32),
        "feature": cloud.feature.numpy().astype(np.float32),
        "density": cloud.density.numpy().astype(np.float32),
        "distance": dist.numpy().astype(np.float32),
        "segment": seg.numpy(),
        "frame": cloud.frame.numpy(),
        "query": query.cpu().float().numpy(),
        "tau": np.float32(tau),
        "dataparser_transform": T.float().numpy(),
        "dataparser_scale": np.float32(scale),
    }
    if volume is not None:  # the cleaned segment itself, to re-apply it to other points
        arrays.update(
            segment_voxels=volume.occupied.numpy(), segment_box_lo=volume.lo.numpy(), segment_box_hi=volume.hi.numpy()
        )
    atomic_write(out_dir / "points.npz", lambda f: f.write(npz_bytes(arrays)))
    summary: Dict[str, Any] = {
        "points": int(len(pts)),
        "segment_points": int(seg.sum()),
        "tau": float(tau),
        "segment": (
            f"cleaned on a {tuple(volume.occupied.shape)} grid ({int(volume.occupied.sum())} voxels)"
            if volume is not None
            else "per point: feature distance <= tau"
        ),
        "frame": "dataset (dataparser transform and scale undone)",
        **(info or {}),
    }
    if mesh_resolution > 0:
        mesh = segment_mesh(pipeline, query, tau, mesh_resolution, mesh_level, volume=volume)
        if mesh is None:
            summary["mesh"] = f"none: the segment's density does not cross {mesh_level}"
        else:
            mesh.vertices = model_to_data(torch.from_numpy(np.asarray(mesh.vertices)), T, scale).numpy()
            atomic_write(out_dir / "segment_mesh.ply", lambda f: f.write(mesh.export(file_type="ply")))
            summary["mesh"] = {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces))}
    atomic_write_json(out_dir / "export.json", summary)
    return summary
