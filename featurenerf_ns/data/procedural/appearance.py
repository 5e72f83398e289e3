"""Per-instance appearance that does not give the parts away.

Each instance draws a small palette of 1-3 base colours and assigns every part one of them at random,
so parts often share a colour (a third of the instances are single-coloured). Each palette entry is a
material: base colour plus a solid (3D, object-space) procedural texture — plain, stripes, checker,
wood-like rings or value noise — so texture is consistent across views, like a textured mesh. Shading
is Lambertian with two fixed world-space directional lights and an ambient term.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

PATTERNS = ["plain", "stripes", "checker", "rings", "noise"]

LIGHTS = [  # (direction towards the light, intensity)
    (np.array([0.45, -0.55, 0.70]), 0.60),
    (np.array([-0.60, 0.35, 0.45]), 0.25),
]
AMBIENT = 0.32


@dataclass
class Material:
    color: np.ndarray  # (3,) base albedo in [0, 1]
    pattern: str
    frequency: float
    amplitude: float
    direction: np.ndarray  # (3,) unit vector for stripes / ring axis
    noise_seed: int

    def to_json(self) -> Dict[str, object]:
        return {
            "color": [round(float(c), 4) for c in self.color],
            "pattern": self.pattern,
            "frequency": round(self.frequency, 4),
            "amplitude": round(self.amplitude, 4),
        }


def _random_color(rng: np.random.Generator) -> np.ndarray:
    kind = rng.random()
    if kind < 0.2:  # greys, black-ish and white-ish
        v = rng.uniform(0.15, 0.92)
        return np.array([v, v, v])
    if kind < 0.4:  # wood / leather tones
        h, s, v = rng.uniform(0.05, 0.11), rng.uniform(0.35, 0.75), rng.uniform(0.3, 0.8)
    else:
        h, s, v = rng.uniform(0, 1), rng.uniform(0.25, 0.85), rng.uniform(0.3, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def sample_materials(rng: np.random.Generator, part_names: List[str]) -> tuple:
    """Returns (materials, part_to_material) where part_to_material maps part name -> material index."""
    k = int(rng.choice([1, 2, 3], p=[0.33, 0.42, 0.25]))
    materials = []
    for _ in range(k):
        d = rng.normal(size=3)
        materials.append(
            Material(
                color=_random_color(rng),
                pattern=str(rng.choice(PATTERNS, p=[0.3, 0.2, 0.12, 0.18, 0.2])),
                frequency=float(rng.uniform(8.0, 30.0)),
                amplitude=float(rng.uniform(0.12, 0.35)),
                direction=d / np.linalg.norm(d),
                noise_seed=int(rng.integers(0, 2**31 - 1)),
            )
        )
    part_to_material = {name: int(rng.integers(0, k)) for name in part_names}
    return materials, part_to_material


def _value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at points ``p`` (N, 3), lattice spacing 1."""
    table = np.random.default_rng(seed).random(4096)
    i0 = np.floor(p).astype(np.int64)
    f = p - i0
    f = f * f * (3.0 - 2.0 * f)

    def lattice(ix, iy, iz):
        h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)
        return table[h & 4095]

    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out += wx * wy * wz * lattice(i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz)
    return out


def texture_value(mat: Material, p: np.ndarray) -> np.ndarray:
    """Pattern value in [-1, 1] at object-space points ``p`` (N, 3)."""
    if mat.pattern == "plain" or len(p) == 0:
        return np.zeros(len(p))
    f = mat.frequency
    if mat.pattern == "stripes":
        return np.sign(np.sin(2.0 * f * (p @ mat.direction)))
    if mat.pattern == "checker":
        c = np.floor(p * f / 2.0).astype(np.int64).sum(axis=1)
        return np.where(c % 2 == 0, 1.0, -1.0)
    if mat.pattern == "rings":
        radial = np.linalg.norm(p - np.outer(p @ mat.direction, mat.direction), axis=1)
        wobble = _value_noise(p * f * 0.3, mat.noise_seed)
        return np.sin(f * 2.0 * radial + 3.0 * wobble)
    # value noise, two octaves
    n = 0.65 * _value_noise(p * f * 0.5, mat.noise_seed) + 0.35 * _value_noise(p * f * 1.3, mat.noise_seed + 1)
    return 2.0 * n - 1.0


def material_albedo(points: np.ndarray, material_ids: np.ndarray, materials: List[Material]) -> np.ndarray:
    """Albedo (N, 3) in [0, 1] of object-space ``points`` (N, 3) under their materials (``material_ids`` (N,)):
    base colour x (1 + amplitude x pattern value)."""
    albedo = np.zeros((len(points), 3))
    for m_id, mat in enumerate(materials):
        sel = material_ids == m_id
        if not sel.any():
            continue
        t = texture_value(mat, points[sel])
        albedo[sel] = np.clip(mat.color[None] * (1.0 + mat.amplitude * t[:, None]), 0.0, 1.0)
    return albedo


def lambert(albedo: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray) -> np.ndarray:
    """Lambertian colour (N, 3) = albedo x (ambient + sum_l intensity_l max(0, n . l)) with the normals (N, 3) turned
    to face the viewer (rays along ``view_dirs``), so the winding of a face does not matter."""
    n = normals.copy()
    flip = np.einsum("ij,ij->i", n, view_dirs) > 0  # make normals face the viewer
    n[flip] *= -1
    light = np.full(len(albedo), AMBIENT)
    for direction, intensity in LIGHTS:
        ld = direction / np.linalg.norm(direction)
        light += intensity * np.clip(n @ ld, 0.0, None)
    return np.clip(albedo * light[:, None], 0.0, 1.0)
