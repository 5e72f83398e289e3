"""The official FeatureNeRF annotation files, read into the arrays our evaluation uses.

The official data keeps, next to ``img/`` and ``camera/``, one file per annotated object and annotation type::

    <root>/kp_2d_anno/<synset>/<id>.npz     labels: one array per view (object array of V arrays), rows [x, y, kp_id]
    <root>/kp_3d_anno/<synset>/<id>.npz     labels (K, 4) rows [x, y, z, kp_id]; pts (M, 3) keypoint candidates
    <root>/part_2d_anno/<synset>/<id>.npz   labels (V, H, W) part label maps, 0 = background
    <root>/part_3d_anno/<synset>/<id>.npz   pts (N, 3) surface points; labels (N,) part labels, 0 = unlabelled

What is assumed about each array (as the official evaluation code indexes them; checked on load, one-line errors):

* ``kp_2d_anno`` ``labels``: V entries, entry v an array (K_v, 3) of the keypoints *visible* in view v: x = column,
  y = row, pixels of the stored image (128 x 128; truncated to integers, as official), kp_id the semantic keypoint id
  (at most once per view). A keypoint not listed in a view is not visible there. A plain (V, K, 3) array is accepted
  too. The official code reads the feature at pixel (row y, column x); we store the pixel centre (x + 0.5, y + 0.5),
  so the same pixel is sampled.
* ``kp_3d_anno`` ``labels``: (K, 4) float, xyz in the world frame of ``camera/`` (no scaling) and the kp_id (a
  float holding an integer); ``pts`` (M, 3): the target candidates of 3D keypoint transfer (the official code
  predicts the candidate of highest similarity, not a surface point).
* ``part_2d_anno`` ``labels``: (V, H, W) integer maps at the image size, 0 = background, 1..L = part ids; the
  official foreground is ``labels != 0`` (not the alpha mask), as ours.
* ``part_3d_anno`` ``pts`` (N, 3) and ``labels`` (N,): every point takes part in matching (label 0 included), IoU
  runs over the non-zero labels present in both shapes, as ours.

Keypoint ids and part ids are category-wide: the ids are gathered once from the category's ``kp_3d_anno`` (and
``part_3d_anno``) files, keypoint k of our arrays is the k-th smallest id (named ``kp<id>``), part p is ``part<p>``.
The official files store the 2D/3D keypoint labels as pickled object arrays, so those two types are read with
``allow_pickle``: open only official files you trust. There is no depth map, so the feature-free view-frame prior
cannot lift 2D pixels (its 2D rows are skipped; its 3D rows and the alignment oracle need only 3D points).
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Dict, List

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError

ANNOTATION_TYPES = ("kp_2d_anno", "kp_3d_anno", "part_2d_anno", "part_3d_anno")
PICKLED = ("kp_2d_anno", "kp_3d_anno")
"""Types the official code stores as object arrays (read with allow_pickle)."""


def has_official_annotations(root: Path, dirname: str) -> bool:
    """Whether any official annotation folder exists for the category folder ``dirname``."""
    return any((Path(root) / t / dirname).is_dir() for t in ANNOTATION_TYPES)


class OfficialAnnotations:
    """One category's official annotation files (see the module docstring for the arrays)."""

    def __init__(self, root: Path, dirname: str):
        self.root, self.dirname = Path(root), dirname

    def path(self, kind: str, inst: str) -> Path:
        return self.root / kind / self.dirname / f"{inst}.npz"

    def _load(self, kind: str, inst: str, keys) -> Dict[str, np.ndarray]:
        path = self.path(kind, inst)
        if not path.is_file():
            raise FeatureNeRFDataError(
                f"{path}: official {kind} file missing for instance {inst}; copy it from the official data or leave "
                "the instance out of the pairs"
            )
        try:
            with np.load(path, allow_pickle=kind in PICKLED) as z:
                out = {k: z[k] for k in z.files}
        except Exception as e:  # BadZipFile, ValueError (pickled without allow_pickle), EOFError ...
            raise FeatureNeRFDataError(
                f"{path}: unreadable {kind} archive ({e.__class__.__name__}); re-copy it from the official data"
            ) from e
        missing = [k for k in keys if k not in out]
        if missing:
            raise FeatureNeRFDataError(
                f"{path}: no array {missing[0]!r} (has {', '.join(out) or 'none'}); an official {kind} file holds "
                f"{' and '.join(keys)}"
            )
        return out

    def _bad(self, kind: str, inst: str, what: str) -> FeatureNeRFDataError:
        return FeatureNeRFDataError(f"{self.path(kind, inst)}: {what}; re-copy it from the official data")

    # -- category-wide ids ---------------------------------------------------------------------------------------------
    def _files(self, kind: str) -> List[Path]:
        d = self.root / kind / self.dirname
        return sorted(d.glob("*.npz")) if d.is_dir() else []

    @cached_property
    def keypoint_ids(self) -> List[int]:
        """Sorted semantic keypoint ids found in the category's kp_3d_anno files."""
        ids: set = set()
        for f in self._files("kp_3d_anno"):
            ids.update(int(i) for i in self._kp3d_rows(f.stem)[:, 3])
        return sorted(ids)

    @cached_property
    def num_parts(self) -> int:
        """Largest part label of the category's part_3d_anno files."""
        top = 0
        for f in self._files("part_3d_anno"):
            labels = self._load("part_3d_anno", f.stem, ("pts", "labels"))["labels"]
            top = max(top, int(np.max(labels)) if np.size(labels) else 0)
        return top

    @property
    def part_names(self) -> List[str]:
        return [f"part{p}" for p in range(1, self.num_parts + 1)]

    @property
    def keypoint_names(self) -> List[str]:
        return [f"kp{i}" for i in self.keypoint_ids]

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the annotation files' names and sizes (protocols made on this data are tied to it)."""
        h = hashlib.sha256()
        for kind in ANNOTATION_TYPES:
            for f in self._files(kind):
                h.update(f"{kind}/{f.name}:{f.stat().st_size};".encode())
        return "official-" + h.hexdigest()[:16]

    # -- per instance --------------------------------------------------------------------------------------------------
    def _kp3d_rows(self, inst: str) -> np.ndarray:
        z = self._load("kp_3d_anno", inst, ("labels", "pts"))
        rows = np.asarray(z["labels"], dtype=np.float64)
        if rows.size == 0:
            rows = rows.reshape(0, 4)
        if rows.ndim != 2 or rows.shape[1] != 4 or not np.isfinite(rows).all():
            raise self._bad("kp_3d_anno", inst, f"labels has shape {rows.shape}, expected finite (K, 4) [x, y, z, id]")
        return rows

    def _kp_index(self, kind: str, inst: str, ids: np.ndarray) -> np.ndarray:
        lookup = {k: i for i, k in enumerate(self.keypoint_ids)}
        unknown = [int(i) for i in ids if int(i) not in lookup]
        if unknown:
            raise self._bad(kind, inst, f"keypoint id {unknown[0]} is in no kp_3d_anno file of {self.dirname}")
        return np.asarray([lookup[int(i)] for i in ids], dtype=np.int64)

    def shape(self, inst: str) -> Dict[str, np.ndarray]:
        """points (N, 3), point_labels (N,), keypoints (K, 3; NaN = absent), keypoint_present (K,),
        keypoint_candidates (M, 3)."""
        part = self._load("part_3d_anno", inst, ("pts", "labels"))
        pts, labels = np.asarray(part["pts"], dtype=np.float32), np.asarray(part["labels"])
        if pts.ndim != 2 or pts.shape[1] != 3 or labels.shape != (pts.shape[0],):
            raise self._bad(
                "part_3d_anno", inst, f"pts {pts.shape} and labels {labels.shape}, expected (N, 3) and (N,)"
            )
        if not np.isfinite(pts).all():
            raise self._bad("part_3d_anno", inst, "pts contains NaN/inf")
        rows = self._kp3d_rows(inst)
        cand = np.asarray(self._load("kp_3d_anno", inst, ("labels", "pts"))["pts"], dtype=np.float32)
        if cand.ndim != 2 or cand.shape[1] != 3 or not np.isfinite(cand).all():
            raise self._bad("kp_3d_anno", inst, f"pts has shape {cand.shape}, expected finite (M, 3) candidates")
        K = len(self.keypoint_ids)
        kps = np.full((K, 3), np.nan, np.float32)
        idx = self._kp_index("kp_3d_anno", inst, rows[:, 3])
        kps[idx] = rows[:, :3]
        present = np.zeros(K, bool)
        present[idx] = True
        return {
            "points": pts,
            "point_labels": labels.astype(np.int64),
            "keypoints": kps,
            "keypoint_present": present,
            "keypoint_candidates": cand,
        }

    def view(self, inst: str, num_views: int) -> Dict[str, np.ndarray]:
        """parts (V, H, W), kp2d (V, K, 2) pixel centres (NaN = not visible), kp_visible (V, K)."""
        parts = np.asarray(self._load("part_2d_anno", inst, ("labels",))["labels"])
        if parts.ndim != 3 or parts.shape[0] != num_views or not np.issubdtype(parts.dtype, np.integer):
            raise self._bad(
                "part_2d_anno",
                inst,
                f"labels has shape {parts.shape} ({parts.dtype}), expected integer (V={num_views}, H, W) label maps",
            )
        if parts.size and (parts.min() < 0 or parts.max() > self.num_parts):
            raise self._bad(
                "part_2d_anno", inst, f"labels span {parts.min()}..{parts.max()}, part_3d_anno has 1..{self.num_parts}"
            )
        per_view = self._load("kp_2d_anno", inst, ("labels",))["labels"]
        if len(per_view) != num_views:
            raise self._bad("kp_2d_anno", inst, f"labels has {len(per_view)} views, the camera file {num_views}")
        K = len(self.keypoint_ids)
        kp2d = np.full((num_views, K, 2), np.nan, np.float32)
        vis = np.zeros((num_views, K), bool)
        for v, entry in enumerate(per_view):
            rows = np.asarray(entry, dtype=np.float64).reshape(-1, 3) if np.size(entry) else np.zeros((0, 3))
            if np.size(entry) and np.asarray(entry).shape[-1] != 3:
                raise self._bad("kp_2d_anno", inst, f"view {v} has rows of {np.asarray(entry).shape[-1]}, expected 3")
            idx = self._kp_index("kp_2d_anno", inst, rows[:, 2])
            if len(set(idx.tolist())) != len(idx):
                raise self._bad("kp_2d_anno", inst, f"view {v} lists a keypoint id twice")
            kp2d[v, idx] = np.floor(rows[:, :2]) + 0.5  # official: .long() of non-negative pixels
            vis[v, idx] = True
        return {"parts": parts.astype(np.int64), "kp2d": kp2d, "kp_visible": vis}
