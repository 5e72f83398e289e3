"""Mesh building blocks for the procedural part-based shape generators.

Every helper returns a closed, outward-oriented :class:`trimesh.Trimesh` in object units. The
category generators (``featurenerf_ns.data.procedural.categories``) assemble parts from these and the
writer normalises the whole object afterwards, so absolute units here do not matter.

Object frame used by every generator: +z is up and the object's front faces -y. Keypoint names use
the object's own left/right: someone sitting in the chair / driving the car faces -y and has +x on
their left, -x on their right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import trimesh

Point = Union[Sequence[float], np.ndarray]
"""A point or vector: a sequence of floats or a 1-D array."""
Points = Union[Sequence[Point], np.ndarray]
"""A list of points / profile pairs, or an (N, D) array."""


def _orient_outward(vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    """Builds a mesh and flips all faces when its signed volume is negative (closed meshes only)."""
    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, dtype=np.float64), faces=np.asarray(faces), process=False)
    tri = mesh.triangles
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if signed_volume < 0:
        mesh = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces[:, ::-1], process=False)
    return mesh


def box(center: Sequence[float], size: Sequence[float]) -> trimesh.Trimesh:
    """Axis-aligned box with the given centre and edge lengths (x, y, z)."""
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(size, dtype=np.float64) / 2.0
    lo, hi = c - s, c + s
    corners = np.array(
        [
            [lo[0], lo[1], lo[2]],
            [hi[0], lo[1], lo[2]],
            [hi[0], hi[1], lo[2]],
            [lo[0], hi[1], lo[2]],
            [lo[0], lo[1], hi[2]],
            [hi[0], lo[1], hi[2]],
            [hi[0], hi[1], hi[2]],
            [lo[0], hi[1], hi[2]],
        ]
    )
    return hexahedron(corners)


def hexahedron(corners: np.ndarray) -> trimesh.Trimesh:
    """Closed six-faced solid from 8 corners: ``corners[0:4]`` one quad loop, ``corners[4:8]`` the
    opposite quad loop with matching order (corner i+4 is joined to corner i). Faces may be
    non-planar (tapered wings, trapezoid cabins); each quad is split into two triangles."""
    c = np.asarray(corners, dtype=np.float64)
    if c.shape != (8, 3):
        raise ValueError(f"hexahedron needs 8x3 corners, got {c.shape}")
    quads = [
        (0, 3, 2, 1),  # end A
        (4, 5, 6, 7),  # end B
        (0, 1, 5, 4),
        (1, 2, 6, 5),
        (2, 3, 7, 6),
        (3, 0, 4, 7),
    ]
    faces = []
    for a, b, cc, d in quads:
        faces.append((a, b, cc))
        faces.append((a, cc, d))
    return _orient_outward(c, np.array(faces))


def _frame_from_axis(axis: np.ndarray) -> np.ndarray:
    """Returns two unit vectors orthogonal to ``axis`` (and to each other)."""
    a = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(a, helper)
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    return np.stack([u, v])


def _ring_faces(n_rings: int, sections: int, wrap: bool = False) -> list:
    """Two triangles per quad between consecutive rings of ``sections`` vertices (ring i starts at vertex
    i * sections); with ``wrap`` the last ring is joined back to the first (a torus)."""
    faces = []
    for i in range(n_rings if wrap else n_rings - 1):
        nxt = (i + 1) % n_rings
        for j in range(sections):
            a, b = i * sections + j, i * sections + (j + 1) % sections
            c, d = nxt * sections + (j + 1) % sections, nxt * sections + j
            faces.append((a, b, c))
            faces.append((a, c, d))
    return faces


def _cap_faces(start: int, n_rings: int, sections: int) -> list:
    """Fans closing the first and last ring with centre vertices ``start`` and ``start + 1``."""
    faces = []
    base = (n_rings - 1) * sections
    for j in range(sections):
        faces.append((start, (j + 1) % sections, j))
        faces.append((start + 1, base + j, base + (j + 1) % sections))
    return faces


def loft(centers: Points, radii: Sequence, sections: int = 24, cap: bool = True) -> trimesh.Trimesh:
    """Tube through ``centers`` with circular (or elliptical, when a radius is a pair (ru, rv)) cross
    sections perpendicular to the local path direction. Ends are capped with a centre vertex."""
    pts = np.asarray(centers, dtype=np.float64)
    n = len(pts)
    if n < 2:
        raise ValueError("loft needs at least two centres")
    rad = [np.array(r, dtype=np.float64).reshape(-1) for r in radii]
    rad = [np.array([r[0], r[0]]) if r.size == 1 else r for r in rad]
    theta = np.linspace(0.0, 2.0 * np.pi, sections, endpoint=False)
    verts = []
    # One fixed reference frame from the overall path direction keeps sections from twisting.
    overall = pts[-1] - pts[0]
    u_ref, _ = _frame_from_axis(overall)
    for i in range(n):
        if i == 0:
            d = pts[1] - pts[0]
        elif i == n - 1:
            d = pts[-1] - pts[-2]
        else:
            d = pts[i + 1] - pts[i - 1]
        d = d / np.linalg.norm(d)
        u = u_ref - d * np.dot(u_ref, d)
        u /= np.linalg.norm(u)
        v = np.cross(d, u)
        ring = pts[i] + np.outer(np.cos(theta) * rad[i][0], u) + np.outer(np.sin(theta) * rad[i][1], v)
        verts.append(ring)
    verts = np.concatenate(verts)
    faces = _ring_faces(n, sections)
    if cap:
        start = len(verts)
        verts = np.concatenate([verts, pts[:1], pts[-1:]])
        faces += _cap_faces(start, n, sections)
    return _orient_outward(verts, np.array(faces))


def cylinder(p0: Point, p1: Point, radius: float, sections: int = 24) -> trimesh.Trimesh:
    """Capped cylinder between two points."""
    return loft([p0, p1], [radius, radius], sections=sections)


def revolve(
    profile: Points,
    center: Point = (0, 0, 0),
    axis: Point = (0, 0, 1),
    sections: int = 32,
) -> trimesh.Trimesh:
    """Surface of revolution of a profile ``[(r, h), ...]`` (radius, height along ``axis``) about an
    axis through ``center``. Profile ends with r > 0 are capped with a disk."""
    prof = np.asarray(profile, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    u, v = _frame_from_axis(a)
    theta = np.linspace(0.0, 2.0 * np.pi, sections, endpoint=False)
    verts = []
    for r, h in prof:
        verts.append(c + h * a + np.outer(np.cos(theta) * r, u) + np.outer(np.sin(theta) * r, v))
    verts = np.concatenate(verts)
    n = len(prof)
    start = len(verts)
    verts = np.concatenate([verts, np.array([c + prof[0, 1] * a, c + prof[-1, 1] * a])])
    faces = _ring_faces(n, sections) + _cap_faces(start, n, sections)
    return _orient_outward(verts, np.array(faces))


def sphere(center: Sequence[float], radius: float, subdivisions: int = 2) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_translation(np.asarray(center, dtype=np.float64))
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False)


def torus(
    center: Sequence[float],
    axis: Sequence[float],
    major: float,
    minor: float,
    sections: int = 32,
    tube_sections: int = 12,
) -> trimesh.Trimesh:
    """Ring (e.g. a tyre) around ``axis`` through ``center``."""
    phi = np.linspace(0.0, 2.0 * np.pi, tube_sections, endpoint=False)
    c = np.asarray(center, dtype=np.float64)
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    u, v = _frame_from_axis(a)
    theta = np.linspace(0.0, 2.0 * np.pi, sections, endpoint=False)
    points = []
    for t in theta:
        radial = np.cos(t) * u + np.sin(t) * v
        for p in phi:
            points.append(c + radial * (major + minor * np.cos(p)) + a * minor * np.sin(p))
    verts = np.array(points)
    faces = _ring_faces(sections, tube_sections, wrap=True)
    return _orient_outward(verts, np.array(faces))


def rotate_z(mesh: trimesh.Trimesh, angle: float, about: Sequence[float] = (0, 0, 0)) -> trimesh.Trimesh:
    m = mesh.copy()
    m.apply_transform(trimesh.transformations.rotation_matrix(angle, [0, 0, 1], point=about))
    return m


@dataclass
class ShapeSpec:
    """Output of a category generator: labelled parts, named keypoints and the style choices made.

    ``parts``: list of ``(part_name, mesh)``; several meshes may share a part name.
    ``keypoints``: keypoint name -> xyz on the surface of that keypoint's part, or ``None`` when the
    part carrying it is absent for this instance.
    ``style``: the discrete/continuous choices (for documentation and the contact sheet).
    """

    parts: List[tuple] = field(default_factory=list)
    keypoints: Dict[str, Optional[np.ndarray]] = field(default_factory=dict)
    style: Dict[str, object] = field(default_factory=dict)

    def add(self, part: str, mesh: trimesh.Trimesh) -> None:
        self.parts.append((part, mesh))

    def kp(self, name: str, xyz: Optional[Point]) -> None:
        self.keypoints[name] = None if xyz is None else np.asarray(xyz, dtype=np.float64)


def surface_hit(mesh: trimesh.Trimesh, origin: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """First point where the ray ``origin + t * direction`` (t > 0) meets ``mesh`` — a way to put a
    keypoint exactly on a curved or faceted surface."""
    o = np.asarray(origin, dtype=np.float64)[None]
    d = np.asarray(direction, dtype=np.float64)[None]
    locations, _, _ = mesh.ray.intersects_location(o, d, multiple_hits=True)
    if len(locations) == 0:
        raise ValueError("surface_hit: ray misses the mesh")
    return locations[np.argmin(np.linalg.norm(locations - o, axis=1))]


def pick(rng: np.random.Generator, weights: dict) -> str:
    """One key of ``weights`` drawn with probability proportional to its value."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return str(keys[rng.choice(len(keys), p=p / p.sum())])


def superellipse_warp(mesh: trimesh.Trimesh, power: float, sx: float = 1.0, sy: float = 1.0) -> trimesh.Trimesh:
    """Warps a z-axis surface of revolution so each horizontal section becomes the superellipse
    |x/(sx r)|^p + |y/(sy r)|^p = 1 (p=2: ellipse, large p: rounded rectangle). Topology and orientation
    are kept, and the +-x / +-y vertex columns stay on the axes."""
    v = mesh.vertices.copy()
    rho, ang = np.hypot(v[:, 0], v[:, 1]), np.arctan2(v[:, 1], v[:, 0])
    c, s, e = np.cos(ang), np.sin(ang), 2.0 / power
    v[:, 0] = sx * rho * np.sign(c) * np.abs(c) ** e
    v[:, 1] = sy * rho * np.sign(s) * np.abs(s) ** e
    return trimesh.Trimesh(vertices=v, faces=mesh.faces, process=False)


def fit_sphere(spec: "ShapeSpec", limit: float = 0.78) -> float:
    """Rescales z (meshes and keypoints together, so keypoints stay on their surfaces) until the bounding
    box with edges (1, a, b) relative to the longest satisfies sqrt(1 + a^2 + b^2) / 2 <= limit; returns
    the factor applied (1.0 when it already fits)."""
    lo = np.min([m.bounds[0] for _, m in spec.parts], axis=0)
    hi = np.max([m.bounds[1] for _, m in spec.parts], axis=0)
    x, y, z = hi - lo
    k = 4 * limit**2 - 1
    if (x * x + y * y + z * z) <= (k + 1) * max(x, y, z) ** 2:
        return 1.0
    if z >= max(x, y):  # tall: stretch until the footprint is small enough
        s = np.sqrt((x * x + y * y) / k) / z
    else:  # flat: lower it until it is clearly wider than tall
        s = np.sqrt(k * max(x, y) ** 2 - min(x, y) ** 2) / z
    for _, mesh in spec.parts:
        mesh.apply_transform(np.diag([1.0, 1.0, s, 1.0]))
    for p in spec.keypoints.values():
        if p is not None:
            p[2] *= s
    return float(s)
