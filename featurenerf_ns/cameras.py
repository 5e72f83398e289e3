"""Camera geometry shared by the data manager, the field, the evaluation and the viewer. Conventions: OpenGL /
NeRF-synthetic camera-to-world matrices (x right, y up, looking down -z), pixel coordinates (u right, v down) with
pixel centres at +0.5, principal point at the image centre, one focal length in pixels."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle


def camera_rays(c2w: torch.Tensor, focal: float, hw: Tuple[int, int], u: torch.Tensor, v: torch.Tensor):
    """Rays through pixel centres (u + 0.5, v + 0.5) of OpenGL cameras c2w (R, 4, 4): origins, unit directions."""
    H, W = hw
    d = torch.stack(
        [(u + 0.5 - W / 2) / focal, -(v + 0.5 - H / 2) / focal, -torch.ones_like(u, dtype=torch.float32)], -1
    )
    d = torch.einsum("rij,rj->ri", c2w[:, :3, :3], d)
    return c2w[:, :3, 3], F.normalize(d, dim=-1)


def pinhole_camera(c2w: torch.Tensor, focal: float, hw: Tuple[int, int]) -> Cameras:
    """A nerfstudio camera: OpenGL c2w (4, 4) (or (3, 4)), focal in pixels, principal point at the image centre."""
    H, W = hw
    return Cameras(
        camera_to_worlds=c2w[None, :3, :4].float(),
        fx=focal,
        fy=focal,
        cx=W / 2.0,
        cy=H / 2.0,
        width=W,
        height=H,
        camera_type=CameraType.PERSPECTIVE,
    )


def world_to_source(points: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """points (B, P, 3) world, c2w (B, N, 4, 4) -> (B, N, P, 3) in each source camera frame."""
    rot = c2w[..., :3, :3]
    t = c2w[..., :3, 3]
    # x_cam = R^T (x - t)
    return torch.einsum("bnji,bnpj->bnpi", rot, points[:, None] - t[:, :, None])


def project(x_cam: torch.Tensor, focal: torch.Tensor, center: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, N, P, 3) camera-frame points -> (B, N, P, 2) pixel coordinates (u right, v down; pixel centres at +0.5)."""
    z = (-x_cam[..., 2]).clamp(min=eps)
    u = center[..., 0, None] + focal[..., None] * x_cam[..., 0] / z
    v = center[..., 1, None] - focal[..., None] * x_cam[..., 1] / z
    return torch.stack([u, v], dim=-1)


def single_ray_bundle(origin, direction) -> RayBundle:
    """One ray (origin (3,), direction (3,), normalised here) as a (1,)-shaped nerfstudio RayBundle."""
    o = torch.as_tensor(origin, dtype=torch.float32).reshape(1, 3)
    d = F.normalize(torch.as_tensor(direction, dtype=torch.float32).reshape(1, 3), dim=-1)
    return RayBundle(
        origins=o, directions=d, pixel_area=torch.full((1, 1), 1e-4), camera_indices=torch.zeros(1, 1, dtype=torch.long)
    )


def ray_hits(origins: torch.Tensor, directions: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Where rays meet the rendered surface: x = o + t d with d normalised here and t the rendered depth.

    origins (..., 3), directions (..., 3), depth (..., 1) -> (..., 3). nerfstudio's ``depth`` output is the
    distance along the unit direction, so the direction must be normalised (camera rays are not always)."""
    return origins + F.normalize(directions, dim=-1) * depth


def look_at_of(c2w: np.ndarray, height: int, focal: float) -> Tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """A camera-to-world pose (OpenGL convention, 3x4 or 4x4) as an orbit camera: (vertical fov = 2 atan(H / 2f),
    up = the camera's y axis, position, look-at = position + |position| * forward with forward = -z)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    pos, forward = c2w[:3, 3], -c2w[:3, 2]
    fov = 2 * np.arctan(height / 2 / focal)
    return float(fov), c2w[:3, 1], pos, pos + forward * np.linalg.norm(pos)


def data_to_model(points: torch.Tensor, transform: torch.Tensor, scale: float) -> torch.Tensor:
    """Points (N, 3) in the dataset's frame -> nerfstudio's model frame: ``(T[:, :3] p + T[:, 3]) * scale`` with the
    dataparser's ``dataparser_transform`` T (3, 4) and ``dataparser_scale``."""
    T = transform.float().to(points.device)
    return (points.float() @ T[:, :3].T + T[:, 3]) * float(scale)


def model_to_data(points: torch.Tensor, transform: torch.Tensor, scale: float) -> torch.Tensor:
    """The inverse of :func:`data_to_model` (T's 3x3 block is a rotation): (N, 3) model frame -> dataset frame."""
    T = transform.float().to(points.device)
    return (points.float() / float(scale) - T[:, 3]) @ T[:, :3]


def cap_resolution(camera: Cameras, max_side: int) -> Cameras:
    """Rescale ``camera`` (in place; returned) so that its longer image side is at most ``max_side`` pixels."""
    H, W = int(camera.height[0, 0]), int(camera.width[0, 0])
    if max(H, W) > max_side:
        camera.rescale_output_resolution(max_side / max(H, W))
    return camera
