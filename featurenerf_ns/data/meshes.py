"""Your own meshes rendered into the FeatureNeRF layout (``featurenerf-data meshes``): a directory of OBJ / GLB / glTF /
PLY / STL / OFF files, one instance each, becomes a category with the benchmark's cameras, renders and annotations.

Everything after reading a mesh is the procedural generator's own path (:mod:`featurenerf_ns.data.procedural.generate`):
the same cameras (``train_views`` random upper-hemisphere views for train instances, ``eval_views`` fixed views for
val/test), the same Embree renderer, depth / part maps / projected keypoints, outer-surface samples, the 70/10/20
split by the seed, staged atomic writes, resumability and the refusal of changed settings.

Files beside ``<dir>/<stem>.<ext>`` (all optional):

* ``<stem>.labels.txt`` (one part per line: a name, or an integer id 1..L naming ``--parts``' L-th entry) or
  ``<stem>.labels.npy`` (integer ids 1..L, shape (F,)): one part per triangle, in the order trimesh loads them
  (``process=False, group_material=False``: for PLY / STL / OFF and single-material OBJ files
  the file's own face order, an n-gon counting as n - 2 fan triangles).
* ``<stem>.keypoints.json``: ``{"keypoints": [{"name": "nose", "xyz": [x, y, z]}, ...]}`` in the mesh file's own
  frame and units; keypoints an instance lacks are absent (NaN, never visible), as in the benchmark. They are
  transformed exactly like the vertices, not snapped to the surface (one farther than 0.01 from it after
  normalisation is reported: it can never be visible).

Part labels, the first that applies: the label file; named sub-meshes (OBJ groups ``g``, with trimesh's
``_<material>`` suffix removed, or the mesh name of each glTF / GLB node); otherwise one part named ``object``. The
category's parts are ``--parts`` in that order, or the sorted union over its meshes; label id = index + 1.

Normalisation, in this order: rotate by ``rotate`` = (rx, ry, rz) degrees about the x, then y, then z axis (extrinsic:
R = Rz Ry Rx) into the category's canonical frame (+z up, front towards -y); centre the bounding box at the origin;
scale so its longest edge is ``LONGEST_EDGE`` (0.6, the benchmark's), or less when a corner would then lie beyond
``MAX_RADIUS`` (0.49: the cameras' near/far bounds must cover the object); the scale used is in ``meta.json``.

Colour (albedo, Lambert-shaded with the benchmark's lights and flat face normals): a texture image sampled at the
interpolated UV (nearest texel, wrapped) where trimesh gives UVs and an image (OBJ ``map_Kd``, glTF
``baseColorTexture``); else vertex colours (interpolated) or face colours; else the material's main colour (OBJ
``Kd``, glTF ``baseColorFactor``); else a neutral grey 0.7 (trimesh's default grey is treated as "no colour").

Errors (one line naming the file and the fix, :class:`FeatureNeRFDataError`): missing input directory or no mesh in
it, an unreadable mesh, a mesh with no faces (a point cloud), a ``mtllib`` or texture map that an OBJ names but that
does not exist, a label file of the wrong length or with unknown names/ids, a malformed keypoint JSON, two meshes
with the same stem. Watertightness does not matter to any step (rendering and labels are ray casts, surface samples
only need one escaping ray, never an inside/outside test), so an open or non-manifold mesh is rendered with a
warning in ``meta.json``; a watertight one has its winding made consistent and outward (``trimesh.repair``) so that
its face normals point out for the surface sampling.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import trimesh

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.procedural.generate import (
    LONGEST_EDGE,
    MAX_RADIUS,
    CategorySettings,
    camera_poses,
    category_conventions,
    render_instance,
    split_ids,
    write_category,
)

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
MESHES_VERSION = 1
FALLBACK_GREY = 0.7
"""Albedo of a mesh without any colour."""
KEYPOINT_SURFACE_TOL = 0.01
"""A keypoint farther than this from the normalised surface is reported in meta.json (it can never be visible)."""


@dataclass(frozen=True)
class MeshSettings(CategorySettings):
    """Everything that changes the rendered category (its fingerprint); built by :func:`mesh_settings`; the
    category and rendering fields (views, resolution, seed, ...) are :class:`CategorySettings`'."""

    input: str
    """The mesh directory (not part of the fingerprint: moving it changes nothing)."""
    sources: Tuple[Tuple[str, str, str], ...] = ()
    """(instance id, mesh file name, sha256 of the mesh and its side files), sorted by id."""
    parts: Tuple[str, ...] = ()
    keypoints: Tuple[str, ...] = ()
    rotate: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    def generator(self) -> Dict[str, Any]:
        """The settings as stored in category.json (``generator``), without the input path."""
        d = asdict(self)
        d.pop("input")
        d["sources"] = [list(s) for s in self.sources]
        return {**d, "rotate": list(self.rotate), "parts": list(self.parts), "keypoints": list(self.keypoints),
                "version": MESHES_VERSION, "kind": "meshes"}  # fmt: skip

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.generator(), sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------------
# Finding and reading meshes


def find_meshes(input_dir: Path) -> List[Path]:
    """The mesh files of ``input_dir`` (not recursive), sorted by name."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FeatureNeRFDataError(f"{input_dir}: mesh directory not found; pass --input <dir of .obj/.glb/.ply files>")
    files = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise FeatureNeRFDataError(
            f"{input_dir}: no mesh files ({', '.join(MESH_SUFFIXES)}); put one mesh per instance in it"
        )
    return files


def instance_name(path: Path) -> str:
    """The instance id of a mesh file: its stem with characters other than letters, digits, ``-``, ``_`` and ``.``
    replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)


def side_file(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}{suffix}")


def check_obj_assets(path: Path) -> List[str]:
    """The material names an OBJ uses (``usemtl``); raises when a ``mtllib`` it names, or a texture map (``map_*``,
    ``bump``, ``disp``, ``norm``) named in that .mtl, does not exist (trimesh would silently render it untextured)."""
    text = path.read_text(errors="replace")
    materials = []
    for line in text.splitlines():
        tok = line.split(maxsplit=1)
        if len(tok) < 2:
            continue
        if tok[0] == "usemtl":
            materials.append(tok[1].strip())
        elif tok[0] == "mtllib":
            mtl = path.parent / tok[1].strip()
            if not mtl.is_file():
                raise FeatureNeRFDataError(
                    f"{path}: material library {tok[1].strip()!r} not found at {mtl}; copy it beside the mesh or "
                    "remove the mtllib line"
                )
            for mline in mtl.read_text(errors="replace").splitlines():
                mtok = mline.split()
                if mtok and (mtok[0].lower().startswith("map_") or mtok[0].lower() in ("bump", "disp", "norm")):
                    name = mtok[-1]  # options (-s 1 1 1 ...) come before the file name
                    if not (mtl.parent / name).is_file():
                        raise FeatureNeRFDataError(
                            f"{mtl}: texture {name!r} ({mtok[0]}) not found at {mtl.parent / name}; copy the texture "
                            "beside the .mtl or remove that line"
                        )
    return sorted(set(materials), key=len, reverse=True)


def _load_scene(path: Path, by_groups: bool) -> trimesh.Scene:
    kwargs: Dict[str, Any] = {"process": False}
    if path.suffix.lower() == ".obj":
        kwargs.update(split_groups=True) if by_groups else kwargs.update(group_material=False)
    try:
        scene = trimesh.load(str(path), force="scene", **kwargs)
    except Exception as e:  # trimesh raises many kinds (ValueError, KeyError, struct.error, ...)
        raise FeatureNeRFDataError(
            f"{path}: unreadable mesh ({e.__class__.__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}); "
            "re-export it as OBJ, GLB or PLY"
        ) from e
    if not isinstance(scene, trimesh.Scene):
        raise FeatureNeRFDataError(f"{path}: not a mesh ({type(scene).__name__}); re-export it as OBJ, GLB or PLY")
    return scene


@dataclass
class MeshAppearance:
    """Albedo of every triangle: per-corner colours, or a texture sampled at per-corner UVs."""

    corner_rgb: np.ndarray
    """(F, 3, 3) albedo in [0, 1] at each triangle corner (interpolated barycentrically)."""
    corner_uv: np.ndarray
    """(F, 3, 2) texture coordinates (only read where ``face_texture`` >= 0)."""
    face_texture: np.ndarray
    """(F,) index into ``textures``, -1 = untextured."""
    textures: List[np.ndarray] = field(default_factory=list)
    """(H, W, 3) float albedo images."""
    sources: List[str] = field(default_factory=list)
    """What the colour of each sub-mesh came from (texture, vertex colours, face colours, material, grey)."""

    def albedo(self, points: np.ndarray, prim: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """(N, 3) albedo at hits on triangles ``prim`` (N,) with barycentrics ``bary`` (N, 2): corner values weighted
        (1 - b0 - b1, b0, b1); textured triangles take the nearest texel at the interpolated UV (u right, v up,
        wrapped into [0, 1))."""
        w = np.concatenate([1.0 - bary.sum(1, keepdims=True), bary], axis=1)[:, :, None]  # (N, 3, 1)
        out = (self.corner_rgb[prim] * w).sum(1)
        tex = self.face_texture[prim]
        for k, image in enumerate(self.textures):
            sel = tex == k
            if not sel.any():
                continue
            uv = np.mod((self.corner_uv[prim[sel]] * w[sel]).sum(1), 1.0)
            h, wd = image.shape[:2]
            col = np.clip((uv[:, 0] * wd).astype(np.int64), 0, wd - 1)
            row = np.clip(((1.0 - uv[:, 1]) * h).astype(np.int64), 0, h - 1)
            out[sel] = image[row, col]
        return np.clip(out, 0.0, 1.0)


def _geometry_appearance(geom: trimesh.Trimesh, path: Path) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], str]:
    """(corner rgb (F, 3, 3), corner uv (F, 3, 2), texture (H, W, 3) or None, colour source) of one sub-mesh."""
    faces = np.asarray(geom.faces, dtype=np.int64)
    n = len(faces)
    grey = np.full((n, 3, 3), FALLBACK_GREY)
    no_uv = np.zeros((n, 3, 2))
    visual = geom.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        mat = visual.material
        image = getattr(mat, "image", None) or getattr(mat, "baseColorTexture", None)
        uv = getattr(visual, "uv", None)
        main = np.asarray(getattr(mat, "main_color", [255, 255, 255, 255])[:3], dtype=np.float64) / 255.0
        if image is not None and uv is not None and len(uv) == len(geom.vertices):
            img = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
            return grey, np.asarray(uv, dtype=np.float64)[faces], img, "texture"
        if mat is not None and hasattr(mat, "main_color"):
            return np.broadcast_to(main, (n, 3, 3)).copy(), no_uv, None, "material colour"
        return grey, no_uv, None, "grey (no colour)"
    kind = getattr(visual, "kind", None)
    if visual is None:
        return grey, no_uv, None, "grey (no colour)"
    if kind == "vertex":
        vc = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
        return vc[faces], no_uv, None, "vertex colours"
    if kind == "face":
        fc = np.asarray(visual.face_colors, dtype=np.float64)[:, :3] / 255.0
        return np.repeat(fc[:, None], 3, axis=1), no_uv, None, "face colours"
    return grey, no_uv, None, "grey (no colour)"


@dataclass
class LabelledMesh:
    """One mesh file, read: triangles in its own frame, a part name per triangle, colour and keypoints."""

    path: Path
    vertices: np.ndarray
    """(V, 3) float64, the file's frame (node transforms applied)."""
    faces: np.ndarray
    """(F, 3) int64."""
    face_parts: List[str]
    """Part name of each of the F triangles."""
    appearance: MeshAppearance
    keypoints: Dict[str, np.ndarray]
    """Name -> (3,) in the file's frame."""
    label_source: str


def read_labels(path: Path, n_faces: int, part_names: Tuple[str, ...]) -> Optional[List[str]]:
    """The part name of each triangle from ``<stem>.labels.txt`` / ``.npy``, or None without a label file."""
    txt, npy = side_file(path, ".labels.txt"), side_file(path, ".labels.npy")
    if npy.is_file():
        try:
            raw: List[Any] = np.load(npy, allow_pickle=False).reshape(-1).tolist()
        except Exception as e:
            raise FeatureNeRFDataError(f"{npy}: unreadable label array ({e.__class__.__name__}); save it with np.save")
        src = npy
    elif txt.is_file():
        raw = [ln.strip() for ln in txt.read_text().splitlines() if ln.strip()]
        src = txt
    else:
        return None
    if len(raw) != n_faces:
        raise FeatureNeRFDataError(
            f"{src}: {len(raw)} labels but {path.name} has {n_faces} triangles; write one label per triangle (see "
            "featurenerf_ns/data/meshes.py for the order)"
        )
    out = []
    for i, lab in enumerate(raw):
        if isinstance(lab, str) and not lab.lstrip("-").isdigit():
            out.append(lab)
            continue
        k = int(lab)
        if k >= 1 and k <= len(part_names):
            out.append(part_names[k - 1])
        elif k >= 1 and not part_names:
            out.append(f"part{k}")
        else:
            raise FeatureNeRFDataError(
                f"{src}: label {k} (triangle {i}) is not an id 1..{len(part_names) or 'L'}"
                + (f" of --parts {' '.join(part_names)}" if part_names else "")
                + "; 0 and negative ids are not allowed (every triangle belongs to a part)"
            )
    return out


def read_keypoints(path: Path) -> Dict[str, np.ndarray]:
    """Name -> (3,) position of ``<stem>.keypoints.json`` (empty without the file)."""
    kp_file = side_file(path, ".keypoints.json")
    if not kp_file.is_file():
        return {}
    fix = 'write {"keypoints": [{"name": "nose", "xyz": [x, y, z]}, ...]} in the mesh\'s own frame'
    try:
        doc = json.loads(kp_file.read_text())
    except json.JSONDecodeError as e:
        raise FeatureNeRFDataError(f"{kp_file}: invalid JSON ({e.msg} at line {e.lineno}); {fix}") from e
    entries = doc.get("keypoints") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise FeatureNeRFDataError(f"{kp_file}: needs a 'keypoints' list; {fix}")
    out: Dict[str, np.ndarray] = {}
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        xyz = np.asarray(entry.get("xyz", []) if isinstance(entry, dict) else [], dtype=object)
        ok = xyz.shape == (3,) and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in xyz)
        if not isinstance(name, str) or not name or not ok or not np.isfinite(xyz.astype(np.float64)).all():
            raise FeatureNeRFDataError(
                f"{kp_file}: entry {i} needs a non-empty 'name' and 'xyz' of 3 finite numbers; {fix}"
            )
        if name in out:
            raise FeatureNeRFDataError(f"{kp_file}: keypoint {name!r} appears twice; keep one")
        out[name] = xyz.astype(np.float64)
    return out


def load_labelled_mesh(path: Path, part_names: Tuple[str, ...] = ()) -> LabelledMesh:
    """Reads one mesh file with its side files (see the module docstring); ``part_names``: ``--parts`` (the names of
    integer label ids)."""
    path = Path(path)
    materials = check_obj_assets(path) if path.suffix.lower() == ".obj" else []
    has_labels = side_file(path, ".labels.txt").is_file() or side_file(path, ".labels.npy").is_file()
    scene = _load_scene(path, by_groups=not has_labels)
    verts, faces, rgb, uvs, tex_idx = [], [], [], [], []
    names: List[str] = []
    textures: List[np.ndarray] = []
    sources: List[str] = []
    offset = 0
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry[geom_name]
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue  # point clouds, paths
        v = trimesh.transform_points(np.asarray(geom.vertices, dtype=np.float64), transform)
        f = np.asarray(geom.faces, dtype=np.int64)
        name = str(geom_name)
        for m in materials:  # OBJ groups come back as "<group>_<material>"
            if name.endswith(f"_{m}") and len(name) > len(m) + 1:
                name = name[: -len(m) - 1]
                break
        c_rgb, c_uv, image, source = _geometry_appearance(geom, path)
        verts.append(v)
        faces.append(f + offset)
        names += [name] * len(f)
        rgb.append(c_rgb)
        uvs.append(c_uv)
        tex_idx.append(np.full(len(f), len(textures) if image is not None else -1))
        if image is not None:
            textures.append(image)
        sources.append(source)
        offset += len(v)
    if not faces:
        raise FeatureNeRFDataError(
            f"{path}: mesh has no faces (a point cloud or empty file); export the surface as triangles"
        )
    all_faces = np.concatenate(faces)
    labels = read_labels(path, len(all_faces), part_names)
    label_source = "label file"
    if labels is None:
        named = len(set(names)) > 1
        labels = names if named else ["object"] * len(all_faces)
        label_source = "sub-mesh names" if named else "one part"
    appearance = MeshAppearance(
        np.concatenate(rgb), np.concatenate(uvs), np.concatenate(tex_idx), textures, sorted(set(sources))
    )
    return LabelledMesh(path, np.concatenate(verts), all_faces, labels, appearance, read_keypoints(path), label_source)


# ----------------------------------------------------------------------------------------------------------------------
# Normalisation


def rotation_matrix(degrees: Tuple[float, float, float]) -> np.ndarray:
    """R = Rz(rz) Ry(ry) Rx(rx) (3, 3): rotate about x, then y, then z (fixed axes), angles in degrees."""
    rx, ry, rz = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


@dataclass
class Normalisation:
    """x -> scale (R x - centre): the mesh file's frame to the benchmark's."""

    rotation: np.ndarray
    centre: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) @ self.rotation.T - self.centre) * self.scale

    def to_json(self) -> Dict[str, Any]:
        return {"rotation": np.round(self.rotation, 10).tolist(), "centre": self.centre.tolist(), "scale": self.scale}


def normalisation(vertices: np.ndarray, rotate: Tuple[float, float, float]) -> Normalisation:
    """Rotation, then bounding-box centre at the origin and longest edge ``LONGEST_EDGE``, shrunk further if a vertex
    would lie beyond ``MAX_RADIUS`` of the centre."""
    R = rotation_matrix(rotate)
    v = vertices @ R.T
    lo, hi = v.min(0), v.max(0)
    centre = (lo + hi) / 2.0
    extent = float((hi - lo).max())
    if extent <= 0:
        raise FeatureNeRFDataError("mesh is a single point")
    scale = LONGEST_EDGE / extent
    radius = float(np.linalg.norm(v - centre, axis=1).max()) * scale
    if radius > MAX_RADIUS:
        scale *= MAX_RADIUS / radius
    return Normalisation(R, centre, float(scale))


# ----------------------------------------------------------------------------------------------------------------------
# The category


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in [path, *(side_file(path, s) for s in (".labels.txt", ".labels.npy", ".keypoints.json"))]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    if path.suffix.lower() == ".obj":  # materials and textures change the renders too
        for f in sorted(path.parent.glob("*")):
            if f.suffix.lower() in (".mtl", ".png", ".jpg", ".jpeg"):
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def mesh_settings(input_dir: Path, category: str, parts: Tuple[str, ...] = (), **render) -> MeshSettings:
    """Reads every mesh of ``input_dir`` once (all errors surface before anything is written) and fixes the category's
    part and keypoint lists; ``render``: the other :class:`MeshSettings` fields (resolution, views, rotate, ...)."""
    files = find_meshes(input_dir)
    ids = [instance_name(p) for p in files]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        clash = [p.name for p, i in zip(files, ids) if i == dupes[0]]
        raise FeatureNeRFDataError(f"{input_dir}: {', '.join(clash)} would be the same instance; rename one")
    seen_parts: set = set()
    kp_names: List[str] = []
    for p in files:
        mesh = load_labelled_mesh(p, parts)
        if parts and not set(mesh.face_parts) <= set(parts):
            extra = sorted(set(mesh.face_parts) - set(parts))
            raise FeatureNeRFDataError(f"{p}: parts {', '.join(extra)} not in --parts {' '.join(parts)}; add them")
        seen_parts |= set(mesh.face_parts)
        kp_names += [k for k in mesh.keypoints if k not in kp_names]
    sources = tuple(sorted((i, p.name, _digest(p)) for i, p in zip(ids, files)))
    return MeshSettings(
        category=category,
        input=str(Path(input_dir).resolve()),
        sources=sources,
        parts=tuple(parts) or tuple(sorted(seen_parts)),
        keypoints=tuple(kp_names),
        **render,
    )


def category_entropy(settings: MeshSettings) -> List[int]:
    """Seed material of the split and of each instance's cameras: the seed and a CRC of the category name."""
    return [settings.seed, zlib.crc32(settings.category.encode())]


@dataclass
class NormalisedMesh:
    """A mesh in the benchmark's frame, ready for :func:`render_instance`."""

    vertices: np.ndarray
    faces: np.ndarray
    face_labels: np.ndarray
    """(F,) uint8 part label 1..L (index in the category's parts + 1)."""
    face_normals: np.ndarray
    keypoints: np.ndarray
    """(K, 3) in the category's keypoint order, NaN = absent."""
    appearance: MeshAppearance
    norm: Normalisation
    notes: List[str]


def normalised_mesh(settings: MeshSettings, path: Path) -> NormalisedMesh:
    mesh = load_labelled_mesh(path, settings.parts)
    notes = []
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    if tm.is_watertight:
        trimesh.repair.fix_normals(tm)  # consistent outward winding (face order kept)
    else:
        notes.append("not watertight: rendered as is (nothing here needs a closed surface)")
    norm = normalisation(mesh.vertices, settings.rotate)
    vertices = norm.apply(mesh.vertices)
    faces = np.asarray(tm.faces, dtype=np.int64)
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    labels = np.array([settings.parts.index(p) + 1 for p in mesh.face_parts], dtype=np.uint8)
    keypoints = np.full((len(settings.keypoints), 3), np.nan)
    for i, name in enumerate(settings.keypoints):
        if name in mesh.keypoints:
            keypoints[i] = norm.apply(mesh.keypoints[name][None])[0]
    present = np.isfinite(keypoints).all(1)
    if present.any():
        _, dist, _ = trimesh.Trimesh(vertices, faces, process=False).nearest.on_surface(keypoints[present])
        for name, d in zip(np.asarray(settings.keypoints)[present], dist):
            if d > KEYPOINT_SURFACE_TOL:
                notes.append(f"keypoint {name} lies {d:.3f} off the surface (never visible)")
    return NormalisedMesh(vertices, faces, labels, normals, keypoints, mesh.appearance, norm, notes)


def build_mesh_instance(settings: MeshSettings, inst: str, split: str) -> Dict[str, Any]:
    """Reads, normalises and renders instance ``inst`` (the procedural generator's cameras and annotations)."""
    index, name = next((k, s[1]) for k, s in enumerate(settings.sources) if s[0] == inst)
    path = Path(settings.input) / name
    m = normalised_mesh(settings, path)
    rng = np.random.default_rng(np.random.SeedSequence([*category_entropy(settings), index]))
    poses = camera_poses(settings, split, rng)
    data = render_instance(
        settings, m.vertices, m.faces, m.face_labels, m.face_normals, m.keypoints, m.appearance.albedo, poses, rng
    )
    meta = {
        "id": inst,
        "category": settings.category,
        "split": split,
        "index": index,
        "source": {"file": name, "sha256_16": settings.sources[index][2]},
        "normalisation": m.norm.to_json(),
        "colour": m.appearance.sources,
        "notes": m.notes,
        "fingerprint": settings.fingerprint(),
    }
    return {"id": inst, "split": split, "meta": meta, **data}


def category_manifest(settings: MeshSettings) -> Dict[str, Any]:
    """category.json of a mesh category: parts, keypoints with the part of the nearest face where first present."""
    kp_part: Dict[str, str] = {}
    for inst, name, _ in settings.sources:
        if len(kp_part) == len(settings.keypoints):
            break
        mesh = load_labelled_mesh(Path(settings.input) / name, settings.parts)
        missing = [k for k in mesh.keypoints if k not in kp_part]
        if missing:
            tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
            _, _, tri = tm.nearest.on_surface(np.stack([mesh.keypoints[k] for k in missing]))
            kp_part.update({k: mesh.face_parts[t] for k, t in zip(missing, tri)})
    common = category_conventions()
    common["conventions"]["object_frame"] = (
        "the meshes' own axes rotated by generator.rotate (R = Rz Ry Rx, degrees), bounding box centred"
    )
    return {
        "category": settings.category,
        "parts": list(settings.parts),
        "keypoints": [{"name": k, "part": kp_part[k]} for k in settings.keypoints],
        "generator": settings.generator(),
        "fingerprint": settings.fingerprint(),
        **common,
    }


def render_meshes(root: Path, settings: MeshSettings, workers: int = 1, overwrite: bool = False, progress=None):
    """Renders (or resumes) the mesh category into ``root``; returns its split."""
    ids = [s[0] for s in settings.sources]
    split = split_ids(ids, [*category_entropy(settings), 7919])
    manifest = category_manifest(settings)
    return write_category(root, settings, manifest, split, build_mesh_instance, workers, overwrite, progress)
