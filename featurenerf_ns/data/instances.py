"""Reading one category of FeatureNeRF data (official ShapeNet renders or our procedural benchmark).

No nerfstudio imports here: this is the validated, framework-free view of the data that the
dataparser, the data manager, the teacher cache and the evaluation build on. Every problem raises
:class:`FeatureNeRFDataError` with a one-line message naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from featurenerf_ns.data.layout import (
    SYNSET_TO_NAME,
    SYNSETS,
    FeatureNeRFDataError,
    Layout,
    category_dirnames,
    focal_from_angle,
    load_json,
    load_npz,
    read_image,
)
from featurenerf_ns.data.official_annotations import OfficialAnnotations, has_official_annotations

GENERATE_HINT = "generate it with `featurenerf-data procedural --category chair --out data/shapenet`"


def resolve_data_path(data: Path, category: Optional[str] = None) -> Tuple[Path, str]:
    """Maps ``--data``/``--category`` to (data root, category directory name).

    Accepted: ``--data <root> --category chair``; ``--data <root>/chair`` (the official layout keeps
    categories under ``<root>/img/<category>``, so this path need not exist itself); ``--data <root>`` when
    the root holds exactly one category. Synset ids (``03001627``) work wherever names do."""
    data = Path(data)
    if category is not None:
        root = data
        if not (root / "img").is_dir():
            if (root.parent / "img" / root.name).is_dir():
                root = root.parent  # --data root/chair --category chair
            else:
                raise FeatureNeRFDataError(f"{root}: data directory not found (no {root / 'img'}); {GENERATE_HINT}")
        for name in category_dirnames(category):
            if (root / "img" / name).is_dir():
                return root, name
        raise _unknown_category(root, category)
    if (data / "img").is_dir():
        available = sorted(p.name for p in (data / "img").iterdir() if p.is_dir())
        if len(available) == 1:
            return data, available[0]
        if not available:
            raise FeatureNeRFDataError(f"{data / 'img'}: no category directories inside; {GENERATE_HINT}")
        raise FeatureNeRFDataError(
            f"{data}: holds several categories ({', '.join(available)}); pass --data {data / available[0]} or set the "
            "category"
        )
    if (data.parent / "img" / data.name).is_dir():
        return data.parent, data.name
    if (data.parent / "img").is_dir():
        raise _unknown_category(data.parent, data.name)
    raise FeatureNeRFDataError(f"{data}: data directory not found; {GENERATE_HINT}")


def _unknown_category(root: Path, category: str) -> FeatureNeRFDataError:
    available = sorted(p.name for p in (root / "img").iterdir() if p.is_dir()) if (root / "img").is_dir() else []
    name = SYNSET_TO_NAME.get(category, category)
    if name in SYNSETS:
        fix = f"generate it with `featurenerf-data procedural --category {name} --out {root}`"
    else:
        fix = f"known categories: {', '.join(SYNSETS)}"
    return FeatureNeRFDataError(
        f"{root / 'img' / category}: unknown category {category!r} (present: {', '.join(available) or 'none'}); {fix}"
    )


@dataclass
class InstanceRecord:
    """One object instance: its images and camera-to-world poses (OpenGL)."""

    id: str
    split: str
    image_paths: List[Path]
    poses: np.ndarray  # (V, 4, 4) float64
    camera_angle_x: float
    width: int
    height: int

    @property
    def focal(self) -> float:
        return focal_from_angle(self.camera_angle_x, self.width)


def _frame_image_path(img_dir: Path, file_path: str) -> Path:
    name = Path(str(file_path)).name
    if not Path(name).suffix:
        name = f"{name}.png"
    return img_dir / name


RENDERS_FIX = "delete that instance's files and re-run featurenerf-data procedural (or re-copy the renders)"


def check_image(path: Path) -> Tuple[int, int]:
    """Verifies a PNG decodes; returns (width, height)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise FeatureNeRFDataError(
            f"{path}: corrupt or unreadable image ({e.__class__.__name__}); {RENDERS_FIX}"
        ) from e


def load_rgba(path: Path) -> np.ndarray:
    """(H, W, 4) float32 in [0, 1]: RGB composited on black (the official background) and alpha (1 if none)."""
    arr = read_image(path, "RGBA", RENDERS_FIX).astype(np.float32) / 255.0
    arr[..., :3] *= arr[..., 3:4]
    return arr


class CategoryData:
    """Validated access to one category: split, per-instance cameras/images and annotations."""

    def __init__(self, data: Path, category: Optional[str] = None, verify_images: bool = False):
        self.root, self.dirname = resolve_data_path(data, category)
        self.category = SYNSET_TO_NAME.get(self.dirname, self.dirname)
        self.layout = Layout(self.root, self.category, self.dirname)
        self.verify_images = verify_images
        split_file = self.layout.split_file
        if not split_file.is_file():
            raise FeatureNeRFDataError(
                f"{split_file}: split file not found — the category is incomplete (interrupted generation?); re-run "
                f"`featurenerf-data procedural --category {self.category} --out {self.root}` to finish it"
            )
        splits = load_json(split_file, "split file")
        if not isinstance(splits, dict) or not all(k in splits for k in ("train", "val", "test")):
            raise FeatureNeRFDataError(
                f"{split_file}: must be a JSON object with 'train', 'val' and 'test' id lists; fix or regenerate it"
            )
        self.splits: Dict[str, List[str]] = {k: [str(i) for i in splits[k]] for k in ("train", "val", "test")}
        self._records: Dict[str, InstanceRecord] = {}

    # -- metadata ------------------------------------------------------------------------------------------------------
    @cached_property
    def manifest(self) -> Optional[dict]:
        """Our category.json (part and keypoint names), or None for official renders without annotations."""
        f = self.layout.category_file
        return load_json(f, "category manifest") if f.is_file() else None

    @cached_property
    def official(self) -> Optional[OfficialAnnotations]:
        """The official annotation files (``<root>/{kp,part}_{2d,3d}_anno/<synset>/``), read when there is no
        category.json of ours (:mod:`featurenerf_ns.data.official_annotations`)."""
        if self.manifest is None and has_official_annotations(self.root, self.dirname):
            return OfficialAnnotations(self.root, self.dirname)
        return None

    @property
    def annotation_format(self) -> Optional[str]:
        """``featurenerf_ns`` (our annotations/), ``official`` (the official *_anno folders) or None."""
        return "featurenerf_ns" if self.manifest is not None else ("official" if self.official else None)

    @property
    def fingerprint(self) -> Optional[str]:
        """Identifies the annotated data (protocols are tied to it)."""
        if self.manifest is not None:
            return self.manifest.get("fingerprint")
        return self.official.fingerprint if self.official else None

    @property
    def part_names(self) -> List[str]:
        if self.official:
            return self.official.part_names
        return list(self.manifest["parts"]) if self.manifest else []

    @property
    def keypoint_names(self) -> List[str]:
        if self.official:
            return self.official.keypoint_names
        return [k["name"] for k in self.manifest["keypoints"]] if self.manifest else []

    @property
    def has_annotations(self) -> bool:
        return self.annotation_format is not None

    def ids(self, split: str) -> List[str]:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; use train, val or test")
        return self.splits[split]

    # -- instances -----------------------------------------------------------------------------------------------------
    def instance(self, inst: str) -> InstanceRecord:
        if inst not in self._records:
            self._records[inst] = self._load_instance(inst)
        return self._records[inst]

    def named_instance(self, inst: str, what: str) -> InstanceRecord:
        """:meth:`instance` for an id a user typed (``what``: the option, e.g. ``--source``): one line naming the
        data root and a few valid ids when there is no such instance."""
        try:
            return self.instance(inst)
        except (KeyError, FeatureNeRFDataError):
            raise FeatureNeRFDataError(
                f"{what} {inst!r}: no such instance in {self.root}; e.g. {', '.join(self.ids('test')[:3])}"
            ) from None

    def instances(self, split: str) -> List[InstanceRecord]:
        return [self.instance(i) for i in self.ids(split)]

    def _load_instance(self, inst: str) -> InstanceRecord:
        split = next((s for s, ids in self.splits.items() if inst in ids), "unknown")
        cam_file = self.layout.camera_file(inst)
        img_dir = self.layout.img_dir(inst)
        if not cam_file.is_file():
            raise FeatureNeRFDataError(
                f"{cam_file}: camera file missing for instance {inst} listed in {self.layout.split_file}; regenerate "
                "the "
                f"category (featurenerf-data procedural resumes) or remove the id from the split"
            )
        if not img_dir.is_dir():
            raise FeatureNeRFDataError(
                f"{img_dir}: image directory missing for instance {inst}; regenerate or re-copy it"
            )
        cam = load_json(cam_file, "camera file")
        frames = cam.get("frames") if isinstance(cam, dict) else None
        if not frames or "camera_angle_x" not in cam:
            raise FeatureNeRFDataError(
                f"{cam_file}: needs 'camera_angle_x' and a non-empty 'frames' list (NeRF-synthetic style); fix or "
                "regenerate it"
            )
        poses, paths = [], []
        for i, frame in enumerate(frames):
            m = np.asarray(frame.get("transform_matrix", []), dtype=np.float64)
            if m.shape != (4, 4):
                raise FeatureNeRFDataError(
                    f"{cam_file}: frame {i} transform_matrix has shape {m.shape}, expected 4x4 camera-to-world; fix "
                    "the camera file"
                )
            if not np.isfinite(m).all():
                raise FeatureNeRFDataError(
                    f"{cam_file}: frame {i} transform_matrix contains NaN/inf; fix the camera file"
                )
            poses.append(m)
            paths.append(_frame_image_path(img_dir, frame.get("file_path", f"{i:03d}")))
        n_images = len(list(img_dir.glob("*.png")))
        if n_images != len(frames):
            raise FeatureNeRFDataError(
                f"{img_dir}: {n_images} images but {cam_file} lists {len(frames)} poses; regenerate the instance or "
                "fix the camera file"
            )
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FeatureNeRFDataError(
                f"{missing[0]}: image named in {cam_file} not found; fix file_path or regenerate the instance"
            )
        if self.verify_images:
            sizes = {check_image(p) for p in paths}
        else:
            with Image.open(paths[0]) as im:
                sizes = {im.size}
        if len(sizes) != 1:
            raise FeatureNeRFDataError(
                f"{img_dir}: images of one instance differ in size {sorted(sizes)}; re-render the instance"
            )
        width, height = sizes.pop()
        return InstanceRecord(
            id=inst,
            split=split,
            image_paths=paths,
            poses=np.stack(poses),
            camera_angle_x=float(cam["camera_angle_x"]),
            width=width,
            height=height,
        )

    # -- annotations (procedural data) ---------------------------------------------------------------------------------
    def _require_annotations(self) -> None:
        if not self.has_annotations:
            raise FeatureNeRFDataError(
                f"{self.layout.category_file}: no annotations for {self.category} (neither this file nor the official "
                f"{{kp,part}}_{{2d,3d}}_anno/{self.dirname}/ folders); use the procedural benchmark or add annotation "
                "files in either format (see README)"
            )

    def shape_annotations(self, inst: str) -> Dict[str, np.ndarray]:
        """points (N,3), point_labels (N,), point_normals, keypoints (K,3; NaN = absent), keypoint_present (K,),
        mesh_vertices, mesh_faces, face_labels; official annotations: points, point_labels, keypoints,
        keypoint_present and keypoint_candidates (M,3), the targets of 3D keypoint transfer."""
        self._require_annotations()
        if self.official:
            return self.official.shape(inst)
        return load_npz(self.layout.annotation_dir(inst) / "shape.npz")

    def view_annotations(self, inst: str) -> Dict[str, np.ndarray]:
        """depth (V,H,W) optical-axis depth (0 = background), parts (V,H,W) labels, kp2d (V,K,2), kp_visible (V,K);
        official annotations have no depth."""
        self._require_annotations()
        if self.official:
            return self.official.view(inst, len(self.instance(inst).poses))
        return load_npz(self.layout.annotation_dir(inst) / "views.npz")

    def instance_meta(self, inst: str) -> dict:
        self._require_annotations()
        return load_json(self.layout.annotation_dir(inst) / "meta.json", "instance metadata")
