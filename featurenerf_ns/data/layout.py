"""On-disk layout of FeatureNeRF data, shared by the procedural generator and the dataparser.

The layout is the official FeatureNeRF one (renders of ShapeNet), plus our annotation files::

    <root>/img/<category>/<id>/000.png ... 049.png     RGBA renders (background alpha = 0)
    <root>/camera/<category>/<id>.json                 NeRF-synthetic style cameras (see below)
    <root>/splits/<category>.json                      {"train": [ids], "val": [ids], "test": [ids]}
    <root>/annotations/<category>/category.json        part names, keypoint names, generator settings
    <root>/annotations/<category>/<id>/shape.npz       surface points + part labels, 3D keypoints, mesh
    <root>/annotations/<category>/<id>/views.npz       per view: depth, part-label map, 2D keypoints
    <root>/annotations/<category>/<id>/meta.json       style choices and colours of this instance

``<category>`` is a name (``chair``) or a ShapeNet synset id (``03001627``); both are accepted.
Camera JSON: ``camera_angle_x`` (horizontal field of view, radians) and ``frames[i].file_path`` /
``frames[i].transform_matrix`` (4x4 camera-to-world, OpenGL/Blender convention: the camera looks down
its -z axis, +y is up in the image). Focal length in pixels = 0.5 * W / tan(0.5 * camera_angle_x);
the principal point is the image centre; pixel (row i, column j) has its centre at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Optional

import numpy as np

# ShapeNetCore synset ids of the paper's six categories.
SYNSETS: Dict[str, str] = {
    "chair": "03001627",
    "car": "02958343",
    "airplane": "02691156",
    "table": "04379243",
    "bottle": "02876657",
    "motorbike": "03790512",
}
SYNSET_TO_NAME = {v: k for k, v in SYNSETS.items()}

NEAR, FAR = 0.8, 1.8
"""Ray near/far bounds used by the official implementation for every category."""


class FeatureNeRFDataError(ValueError):
    """A problem with input data; the message is one line naming the file and the fix."""


def category_dirnames(category: str) -> list:
    """Directory names under which a category may be stored (name first, then synset id)."""
    if category in SYNSETS:
        return [category, SYNSETS[category]]
    if category in SYNSET_TO_NAME:
        return [category, SYNSET_TO_NAME[category]]
    return [category]


def canonical_name(category: str) -> str:
    return SYNSET_TO_NAME.get(category, category)


# ----------------------------------------------------------------------------------------------------------------------
# Atomic writes: write to a temporary file in the destination directory, then os.replace.


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Writes through ``write(file_obj)`` to a temporary file beside ``path``, then renames it over ``path``;
    readers never see a half-written file. The file gets the usual umask permissions (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def append_jsonl(path: Path, record: Any) -> None:
    """Appends one JSON line (one write call, flushed and fsynced); readers (:func:`read_jsonl`) skip a torn last
    line left by a killed process, so a log is never half-valid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        if f.tell() > 0:  # a torn line from a killed writer would swallow this record: start a fresh line
            with open(path, "rb") as r:
                r.seek(-1, 2)
                if r.read(1) != b"\n":
                    f.write("\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list:
    """The records of a JSON-lines file; unparseable (torn) lines are skipped."""
    out = []
    for ln in Path(path).read_text(encoding="utf-8").splitlines():
        if ln.strip():
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                continue
    return out


def npz_bytes(arrays: Dict[str, np.ndarray]) -> bytes:
    """Compressed .npz as bytes, byte-identical for identical arrays (fixed zip timestamps, sorted keys),
    unlike ``np.savez_compressed`` which stamps the current time."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, arr_buf.getvalue())
    return buf.getvalue()


def load_npz(path: Path) -> Dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FeatureNeRFDataError(
            f"{path}: annotation file missing; regenerate the instance with featurenerf-data procedural"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise FeatureNeRFDataError(
            f"{path}: unreadable annotation archive ({e.__class__.__name__}); delete it and re-run featurenerf-data "
            "procedural to regenerate"
        ) from e


def load_json(path: Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FeatureNeRFDataError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FeatureNeRFDataError(
            f"{path}: invalid JSON ({e.msg} at line {e.lineno}); fix or regenerate the {what}"
        ) from e


def read_image(path: Path, mode: str, fix: str, what: str = "image") -> np.ndarray:
    """(H, W[, C]) uint8 pixels of an image file converted to PIL ``mode`` (``RGB``, ``RGBA``, ``L``); a missing or
    undecodable file raises a one-line :class:`FeatureNeRFDataError` "<path>: <what> not found; <fix>" or
    "<path>: corrupt or unreadable <what> (<error>); <fix>"."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except FileNotFoundError:
        raise FeatureNeRFDataError(f"{path}: {what} not found; {fix}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise FeatureNeRFDataError(f"{path}: corrupt or unreadable {what} ({e.__class__.__name__}); {fix}") from e


def replace_dir(src: Path, dst: Path) -> None:
    """Moves directory ``src`` to ``dst`` (same filesystem), replacing an existing ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def focal_from_angle(camera_angle_x: float, width: int) -> float:
    """Focal length in pixels of a pinhole camera with horizontal field of view ``camera_angle_x`` (radians)."""
    return float(0.5 * width / np.tan(0.5 * camera_angle_x))


class Layout:
    """Paths of one category inside a data root."""

    def __init__(self, root: Path, category: str, dirname: Optional[str] = None):
        self.root = Path(root)
        self.category = canonical_name(category)
        self.dirname = dirname or category

    def img_dir(self, inst: str) -> Path:
        return self.root / "img" / self.dirname / inst

    def camera_file(self, inst: str) -> Path:
        return self.root / "camera" / self.dirname / f"{inst}.json"

    @property
    def split_file(self) -> Path:
        return self.root / "splits" / f"{self.dirname}.json"

    @property
    def annotation_root(self) -> Path:
        return self.root / "annotations" / self.dirname

    @property
    def category_file(self) -> Path:
        return self.annotation_root / "category.json"

    def annotation_dir(self, inst: str) -> Path:
        return self.annotation_root / inst
