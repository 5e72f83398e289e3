"""What a teacher cache is built from: named groups of images ("instances"), with content fingerprints.

A benchmark category's instances (:class:`CategoryImages`) or a scene's frames in groups (:class:`FrameSet`); both
hash image bytes (and cameras), so a cache entry is re-extracted when its images change, never when only their
timestamps do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import torch

from featurenerf_ns.data.instances import CategoryData, InstanceRecord, load_rgba
from featurenerf_ns.data.layout import FeatureNeRFDataError


class TeacherCacheError(FeatureNeRFDataError):
    """A missing, stale or corrupt cache; one line naming the file and the fix."""


class ImageSet(Protocol):
    """What a cache is built from: named groups of images ("instances": an object's views, or one scene's frames)."""

    root: Path
    dirname: str
    category: Optional[str]
    """Passed to the teacher (the diffusion teacher's prompt); None for a scene."""

    def image_paths(self, inst: str) -> List[Path]: ...

    def fingerprint(self, inst: str) -> str: ...

    def default_pca_ids(self) -> List[str]: ...


@dataclass
class CategoryImages:
    """A benchmark category's instances (train split fits the PCA)."""

    cat: CategoryData
    root: Path = field(init=False)
    dirname: str = field(init=False)
    category: Optional[str] = field(init=False)

    def __post_init__(self):
        self.root, self.dirname, self.category = self.cat.root, self.cat.dirname, self.cat.category

    def image_paths(self, inst: str) -> List[Path]:
        return list(self.cat.instance(inst).image_paths)

    def fingerprint(self, inst: str) -> str:
        return instance_fingerprint(self.cat, self.cat.instance(inst))

    def default_pca_ids(self) -> List[str]:
        return self.cat.ids("train")[:20]


@dataclass
class FrameSet:
    """A scene's frames in named groups, each group one cache "instance" (e.g. "train" and "eval"); the PCA is
    fitted on frames ``pca_frames`` of group ``pca_group`` only, so held-out frames never shape the reduction."""

    root: Path
    groups: Dict[str, List[Path]]
    name: str = "frames"
    pca_group: str = "train"
    pca_frames: Optional[List[int]] = None
    category: Optional[str] = None
    dirname: str = field(init=False)

    def __post_init__(self):
        self.dirname = self.name

    def image_paths(self, inst: str) -> List[Path]:
        if inst not in self.groups:
            raise TeacherCacheError(f"{self.root}: no frame group {inst!r} (groups: {', '.join(self.groups)})")
        return list(self.groups[inst])

    def fingerprint(self, inst: str) -> str:
        h = hashlib.sha256()
        for p in self.image_paths(inst):
            if not p.is_file():
                raise TeacherCacheError(f"{p}: image not found; check the dataset's transforms.json")
            h.update(p.name.encode())
            h.update(p.read_bytes())
        return h.hexdigest()

    def default_pca_ids(self) -> List[str]:
        return [self.pca_group]


Source = Union[CategoryData, ImageSet]


def image_set(src: Source) -> ImageSet:
    return CategoryImages(src) if isinstance(src, CategoryData) else src


def instance_fingerprint(cat: CategoryData, rec: InstanceRecord) -> str:
    """sha256 of the camera file and every image of the instance (content, not timestamps)."""
    h = hashlib.sha256(cat.layout.camera_file(rec.id).read_bytes())
    for p in rec.image_paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def load_views(
    rec: Union[InstanceRecord, Sequence[Path]], views: Optional[Sequence[int]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(V, 3, H, W) RGB on black and (V, 1, H, W) alpha (1 without an alpha channel) of an instance's views or of
    a list of image files."""
    paths = rec.image_paths if isinstance(rec, InstanceRecord) else list(rec)
    idx = range(len(paths)) if views is None else views
    rgba = torch.from_numpy(np.stack([load_rgba(paths[v]) for v in idx])).permute(0, 3, 1, 2)
    return rgba[:, :3].contiguous(), rgba[:, 3:].contiguous()
