"""Cameras and ray-cast rendering of labelled meshes with Embree (via the ``embreex`` binding).

Conventions match nerfstudio's pinhole cameras: OpenGL camera-to-world matrices (camera looks down -z,
image +y up), principal point at the image centre, pixel (row i, col j) centred at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np

from featurenerf_ns.data.layout import focal_from_angle
from featurenerf_ns.data.procedural.appearance import Material, lambert, material_albedo

CAMERA_RADIUS = 1.3
"""Camera distance from the object centre; with near/far 0.8/1.8 any point within 0.5 of the centre is covered."""
CAMERA_ANGLE_X = float(2.0 * np.arcsin(0.5 / CAMERA_RADIUS))
"""Horizontal field of view (radians): a 0.5-radius sphere around the centre just fills the image."""


def look_at(position: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 OpenGL camera-to-world matrix of a camera at ``position`` looking at ``target``."""
    p = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - p
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, p
    return c2w


def spherical_position(azimuth: float, elevation: float, radius: float = CAMERA_RADIUS) -> np.ndarray:
    return radius * np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
    )


def random_hemisphere_poses(
    rng: np.random.Generator, n: int, min_elev_deg: float = 5.0, max_elev_deg: float = 75.0
) -> np.ndarray:
    """``n`` camera-to-world matrices uniformly distributed (by area) over a band of the upper hemisphere."""
    z = rng.uniform(np.sin(np.deg2rad(min_elev_deg)), np.sin(np.deg2rad(max_elev_deg)), size=n)
    az = rng.uniform(0.0, 2.0 * np.pi, size=n)
    return np.stack([look_at(spherical_position(a, np.arcsin(e))) for a, e in zip(az, z)])


def fixed_poses(n: int = 50) -> np.ndarray:
    """The fixed val/test views shared by every instance: 5 elevation rings x n/5 azimuths, rings offset."""
    rings = 5
    per_ring = int(np.ceil(n / rings))
    poses = []
    for r, elev in enumerate(np.linspace(10.0, 70.0, rings)):
        for k in range(per_ring):
            az = 2.0 * np.pi * (k + 0.5 * (r % 2)) / per_ring
            poses.append(look_at(spherical_position(az, np.deg2rad(elev))))
    return np.stack(poses[:n])


@dataclass
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_angle(cls, camera_angle_x: float, width: int, height: int) -> "Intrinsics":
        f = focal_from_angle(camera_angle_x, width)
        return cls(width, height, f, f, width / 2.0, height / 2.0)


def pixel_rays(c2w: np.ndarray, K: Intrinsics, offsets: np.ndarray):
    """Ray origins and directions for every pixel and sub-pixel offset (offsets in [0, 1)^2, (S, 2)).

    Directions are NOT normalised: their camera-frame z component is -1, so the ray parameter at a hit is
    the hit's depth along the optical axis. Returns (origins (S*H*W, 3), dirs (S*H*W, 3)) ordered
    offset-major, then row, then column."""
    cam = _camera_dirs(K.width, K.height, K.fx, K.fy, K.cx, K.cy, np.asarray(offsets, float).tobytes())
    dirs = np.concatenate([d_cam @ c2w[:3, :3].T for d_cam in cam])
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
    return origins, dirs


@functools.lru_cache(maxsize=8)
def _camera_dirs(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float, offsets: bytes
) -> Tuple[np.ndarray, ...]:
    """Camera-frame directions (H*W, 3) per sub-pixel offset (``offsets``: the (S, 2) float64 array's bytes); the
    same for every view of a camera, so computed once (rendering 50 views re-made them per view)."""
    jj, ii = np.meshgrid(np.arange(width), np.arange(height))
    out = []
    for ox, oy in np.frombuffer(offsets).reshape(-1, 2):
        x = (jj + ox - cx) / fx
        y = -(ii + oy - cy) / fy
        d = np.stack([x, y, -np.ones_like(x)], axis=-1).reshape(-1, 3)
        d.flags.writeable = False
        out.append(d)
    return tuple(out)


def project(points: np.ndarray, c2w: np.ndarray, K: Intrinsics):
    """Pixel coordinates (N, 2) (x right, y down, pixel centres at +0.5) and depth along the optical axis."""
    w2c_r = c2w[:3, :3].T
    pc = (points - c2w[:3, 3]) @ w2c_r.T
    depth = -pc[:, 2]
    u = K.fx * pc[:, 0] / depth + K.cx
    v = -K.fy * pc[:, 1] / depth + K.cy
    return np.stack([u, v], axis=-1), depth


class Raycaster:
    """Embree scene of one triangle mesh; returns the first hit of many rays at once."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        # imported here: the cameras above are imported by training and evaluation (data/co3d.py), which must not need
        # the Embree binding (a 15 MB wheel on machines that only train, e.g. a GPU machine fed with rendered data)
        from embreex import rtcore_scene as rtcs
        from embreex.mesh_construction import TriangleMesh

        self.triangles = np.ascontiguousarray(vertices[faces], dtype=np.float32)
        self.scene = rtcs.EmbreeScene()
        TriangleMesh(self.scene, self.triangles)

    def first_hit(self, origins: np.ndarray, dirs: np.ndarray):
        """(triangle id or -1, ray parameter t or inf) for each ray."""
        prim, t, _ = self.first_hit_barycentric(origins, dirs)
        return prim, t

    def first_hit_barycentric(self, origins: np.ndarray, dirs: np.ndarray):
        """(triangle id or -1, ray parameter t or inf, barycentrics (N, 2)) for each ray: the hit point is
        (1 - b0 - b1) v0 + b0 v1 + b1 v2 of the triangle's corners (Embree's u, v)."""
        res = self.scene.run(
            np.ascontiguousarray(origins, dtype=np.float32), np.ascontiguousarray(dirs, dtype=np.float32), output=1
        )
        prim = res["primID"].astype(np.int64)
        t = res["tfar"].astype(np.float64)
        hit = prim >= 0
        t[~hit] = np.inf
        prim[~hit] = -1
        return prim, t, np.stack([res["u"], res["v"]], axis=1).astype(np.float64)


AlbedoFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``albedo(points (N, 3), triangle ids (N,), barycentrics (N, 2)) -> (N, 3)`` colours in [0, 1] of surface hits."""


def material_albedo_fn(face_materials: np.ndarray, materials: List[Material]) -> AlbedoFn:
    """The procedural appearance as an :data:`AlbedoFn`: each face's solid-textured material (``face_materials`` (F,)
    indexes ``materials``)."""
    return lambda pts, prim, bary: material_albedo(pts, face_materials[prim], materials)


@dataclass
class RenderedView:
    rgba: np.ndarray  # (H, W, 4) uint8, straight (not premultiplied) alpha
    depth: np.ndarray  # (H, W) float32 depth along the optical axis, 0 for background
    parts: np.ndarray  # (H, W) uint8 part label (0 background)


def render_view(
    caster: Raycaster,
    face_normals: np.ndarray,
    face_labels: np.ndarray,
    face_materials: np.ndarray,
    materials: List[Material],
    c2w: np.ndarray,
    K: Intrinsics,
    supersample: int = 2,
) -> RenderedView:
    """:func:`render_albedo_view` of a procedural object: each face in its material (``face_materials`` (F,))."""
    albedo = material_albedo_fn(face_materials, materials)
    return render_albedo_view(caster, face_normals, face_labels, albedo, c2w, K, supersample)


def render_albedo_view(
    caster: Raycaster,
    face_normals: np.ndarray,
    face_labels: np.ndarray,
    albedo: AlbedoFn,
    c2w: np.ndarray,
    K: Intrinsics,
    supersample: int = 2,
) -> RenderedView:
    """Renders RGBA (anti-aliased with ``supersample``^2 rays per pixel; colour = :func:`lambert` of ``albedo`` at
    the hit with the hit face's normal), and depth and part labels (``face_labels`` (F,)) from the ray through each
    pixel centre."""
    H, W = K.height, K.width
    s = max(1, int(supersample))
    grid = (np.arange(s) + 0.5) / s
    offsets = np.concatenate([np.array([[0.5, 0.5]]), np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)])
    if s == 1:
        offsets = offsets[:1]
    origins, dirs = pixel_rays(c2w, K, offsets)
    prim, t, bary = caster.first_hit_barycentric(origins, dirs)
    hit = prim >= 0
    n_pix = H * W
    colors = np.zeros((len(prim), 3))
    shade = hit.copy()
    if s > 1:  # the pixel-centre rays give depth and labels only: shade the sub-pixel rays
        shade[:n_pix] = False
    if shade.any():
        idx = np.flatnonzero(shade)
        d, p = dirs[idx], prim[idx]
        pts = origins[idx] + d * t[idx, None]
        unit_dirs = d / np.linalg.norm(d, axis=1, keepdims=True)
        colors[idx] = lambert(albedo(pts, p, bary[idx]), face_normals[p], unit_dirs)
    center_prim, center_t = prim[:n_pix], t[:n_pix]
    if s == 1:
        cover, rgb = hit.astype(np.float64), colors
    else:
        sub_hit = hit[n_pix:].reshape(s * s, n_pix)
        sub_rgb = colors[n_pix:].reshape(s * s, n_pix, 3)
        cover = sub_hit.mean(axis=0)
        rgb = sub_rgb.sum(axis=0) / np.maximum(sub_hit.sum(axis=0), 1)[:, None]
    rgba = np.concatenate([rgb, cover[:, None]], axis=1).reshape(H, W, 4)
    rgba = np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgba[rgba[..., 3] == 0, :3] = 0
    depth = np.where(center_prim >= 0, center_t, 0.0).reshape(H, W).astype(np.float32)
    parts = np.where(center_prim >= 0, face_labels[np.maximum(center_prim, 0)], 0).reshape(H, W).astype(np.uint8)
    return RenderedView(rgba=rgba, depth=depth, parts=parts)


def keypoint_visibility(caster: Raycaster, keypoints: np.ndarray, c2w: np.ndarray, K: Intrinsics, tol: float = 4e-3):
    """Projects 3D keypoints (K, 3; NaN rows = absent) and tests visibility: inside the image and not
    occluded (the first hit along the camera ray is within ``tol`` of the keypoint)."""
    present = np.isfinite(keypoints).all(axis=1)
    uv = np.full((len(keypoints), 2), np.nan, dtype=np.float64)
    visible = np.zeros(len(keypoints), dtype=bool)
    if not present.any():
        return uv, visible
    kp = keypoints[present]
    uv_p, depth = project(kp, c2w, K)
    origin = c2w[:3, 3]
    dirs = kp - origin
    dist = np.linalg.norm(dirs, axis=1)
    _, t = caster.first_hit(np.broadcast_to(origin, dirs.shape), dirs)
    unoccluded = t * dist >= dist - tol
    inside = (uv_p[:, 0] >= 0) & (uv_p[:, 0] < K.width) & (uv_p[:, 1] >= 0) & (uv_p[:, 1] < K.height) & (depth > 0)
    uv[present] = uv_p
    visible[present] = unoccluded & inside
    return uv, visible
