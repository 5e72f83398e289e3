"""Ground truth for 3D part texture swaps: instance B drawn with one part in instance A's material for that part.

The procedural generator rebuilds both instances' geometry and materials from their seeds
(:func:`~featurenerf_ns.data.procedural.generate.build_scene`; nothing is read from the renders), gives every face of
B's part the material A uses for the same part, and ray-casts B from the requested cameras exactly as the dataset's
renders were made (same intrinsics, supersampling and lights). Materials are solid textures (colour + a 3D pattern
evaluated at the surface point), so "A's material on B's part" is well defined on B's own surface.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.procedural.generate import GENERATOR_VERSION, GeneratorSettings, build_scene
from featurenerf_ns.data.procedural.render import CAMERA_ANGLE_X, Intrinsics, Raycaster, render_view


def dataset_settings(cat) -> GeneratorSettings:
    """The generator settings a procedural category (:class:`~featurenerf_ns.data.instances.CategoryData`) was made
    with, from its category.json; one-line error when it is not procedural or was made by another version."""
    gen = dict((cat.manifest or {}).get("generator") or {})
    if not gen:
        raise FeatureNeRFDataError(
            f"{cat.root}: no procedural generator settings in category.json; ground-truth part swaps need a "
            "dataset made by featurenerf-data procedural"
        )
    version = gen.pop("version", None)
    if version != GENERATOR_VERSION:
        raise FeatureNeRFDataError(
            f"{cat.root}: made by generator version {version}, this code is version {GENERATOR_VERSION}; "
            "regenerate it with featurenerf-data procedural"
        )
    return GeneratorSettings(**gen)


def instance_index(inst: str) -> int:
    """'inst_0007' -> 7."""
    try:
        return int(inst.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise FeatureNeRFDataError(f"{inst!r}: not a procedural instance id (inst_NNNN)") from None


def swapped_part_renders(
    settings: GeneratorSettings,
    target: str,
    source: str,
    part: str,
    poses: Sequence[np.ndarray],
    resolution: int,
    part_names: Sequence[str],
) -> Tuple[np.ndarray, np.ndarray]:
    """(rgb (V, R, R, 3) float in [0, 1] on black, part labels (V, R, R)) of ``target`` with ``part`` in
    ``source``'s material, from cameras ``poses`` (V x (4, 4) OpenGL c2w), rendered at the dataset's resolution
    and area-averaged to R = ``resolution`` like the training images (labels: nearest, from the centre rays)."""
    if part not in part_names:
        raise FeatureNeRFDataError(f"part {part!r} unknown; choose one of {', '.join(part_names)}")
    label = list(part_names).index(part) + 1
    tgt = build_scene(settings, instance_index(target))
    src = build_scene(settings, instance_index(source))
    materials = list(tgt.materials) + [src.materials[src.part_to_mat[part]]]
    face_materials = np.where(tgt.face_labels == label, len(tgt.materials), tgt.face_materials)
    caster = Raycaster(tgt.vertices, tgt.faces)
    K = Intrinsics.from_angle(CAMERA_ANGLE_X, settings.resolution, settings.resolution)
    rgb, parts = [], []
    for c2w in poses:
        view = render_view(
            caster,
            tgt.face_normals,
            tgt.face_labels,
            face_materials,
            materials,
            np.asarray(c2w),
            K,
            settings.supersample,
        )
        rgba = torch.from_numpy(view.rgba.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        rgba[:, :3] *= rgba[:, 3:]  # composited on black, as load_rgba does
        if resolution != settings.resolution:
            rgba = F.interpolate(rgba, size=(resolution, resolution), mode="area")
        rgb.append(rgba[0, :3].permute(1, 2, 0).numpy())
        lab = torch.from_numpy(view.parts.astype(np.int64))[None, None].float()
        parts.append(F.interpolate(lab, size=(resolution, resolution), mode="nearest")[0, 0].long().numpy())
    return np.stack(rgb), np.stack(parts)
