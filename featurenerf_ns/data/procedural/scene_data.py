"""Reading a generated N3F scene (:mod:`featurenerf_ns.data.procedural.scene` writes it): manifest, annotation arrays,
ground-truth edit renders, cameras."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from featurenerf_ns.data.layout import (
    FeatureNeRFDataError,
    load_json,
    load_npz,
)
from featurenerf_ns.data.procedural.render import Intrinsics
from featurenerf_ns.data.procedural.scene import SCENE_FILE, frame_name


@dataclass
class SceneData:
    """A generated scene on disk: manifest, annotations and ground-truth edit renders. The annotation arrays are
    read once per instance (every task, figure and study row of one evaluation shares them); treat them as
    read-only."""

    root: Path
    manifest: Dict[str, Any]
    _arrays: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, root: Path) -> "SceneData":
        root = Path(root)
        mf = root / SCENE_FILE
        if not mf.is_file():
            raise FeatureNeRFDataError(
                f"{mf}: not a generated scene (no scene.json); create one with `featurenerf-data scene --out {root}`"
            )
        return cls(root, load_json(mf, "scene manifest"))

    @property
    def num_objects(self) -> int:
        return len(self.manifest["objects"])

    @property
    def categories(self) -> List[str]:
        return [o["category"] for o in self.manifest["objects"]]

    @property
    def heldout(self) -> List[int]:
        return list(self.manifest["frames"]["heldout"])

    @property
    def train(self) -> List[int]:
        return list(self.manifest["frames"]["train"])

    def _npz(self, name: str) -> Dict[str, np.ndarray]:
        if name not in self._arrays:
            self._arrays[name] = load_npz(self.root / "annotations" / name)
        return self._arrays[name]

    def frames(self) -> Dict[str, np.ndarray]:
        return self._npz("frames.npz")

    def surface(self) -> Dict[str, np.ndarray]:
        return self._npz("objects.npz")

    def image_path(self, frame: int) -> Path:
        return self.root / "images" / frame_name(frame)

    def edit_path(self, kind: str, obj: int, frame: int) -> Path:
        return self.root / "edits" / f"{kind}_{obj}" / frame_name(frame)

    def poses(self) -> np.ndarray:
        meta = load_json(self.root / "transforms.json", "transforms.json")
        return np.array([fr["transform_matrix"] for fr in meta["frames"]], dtype=np.float64)

    def intrinsics(self) -> Intrinsics:
        meta = load_json(self.root / "transforms.json", "transforms.json")
        return Intrinsics(int(meta["w"]), int(meta["h"]), meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"])
