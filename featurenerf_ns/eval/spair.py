"""SPair-71k (Min et al., 2019) read as it ships, and its keypoint-transfer metric (PCK), for the FeatureNeRF
paper's real-image test. Framework-light: numpy + PIL; torch only inside the matcher.

Layout (``root`` = the ``SPair-71k/`` folder)::

    PairAnnotation/{trn,val,test}/<pair>.json   one pair each (names like 000001-2008_000585-2008_000630:aeroplane)
    JPEGImages/<category>/<imname>              the photos (``src_imname`` / ``trg_imname`` of the JSON)
    Segmentation/<category>/<stem>.png          object masks, nonzero = object (optional)
    Layout/large/{trn,val,test}.txt             pair names, one a line (optional: their order; else sorted names)

Each JSON is read, never its name: ``src_imname``, ``trg_imname``, ``category``, ``src_kps`` / ``trg_kps`` (K, 2)
``[x, y]`` photo pixels of the K keypoints both photos show, in the same order, ``kps_ids`` (K,), ``src_bndbox`` /
``trg_bndbox`` ``[x1, y1, x2, y2]`` pixels, ``src_imsize`` / ``trg_imsize`` ``[w, h, c]``, and optionally
``viewpoint_variation`` (0 / 1 / 2), ``scale_variation``, ``truncation``, ``occlusion`` ints.

PCK as SPair defines it: with the target keypoints y (K, 2), the transferred ones y_hat (K, 2) and the target box
(w_b, h_b) = (x2 - x1, y2 - y1),

    correct_k = ||y_hat_k - y_k||_2 <= alpha * max(w_b, h_b),

in the target photo's own pixels (<=: a distance exactly at the threshold counts, as SPair's evaluation code).
Reported as the percentage of all keypoints (PCK per keypoint) and as the mean over pairs of each pair's
percentage (PCK per pair), per category and per viewpoint variation.

Every unusable input raises :class:`~featurenerf_ns.data.layout.FeatureNeRFDataError` with a one-line message
naming the file and the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.layout import read_image as read_image_file

SPAIR_CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dog", "horse",
    "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)  # fmt: skip
"""SPair-71k's 18 categories (its PASCAL VOC names)."""
OUR_TO_SPAIR = {"chair": "chair", "airplane": "aeroplane", "car": "car", "motorbike": "motorbike", "bottle": "bottle"}
"""Our (ShapeNet) category name -> SPair's. ``table`` has no SPair category."""
SPLITS = {"trn": "trn", "train": "trn", "val": "val", "test": "test"}
"""Accepted split names -> SPair's folder names."""
THRESHOLDS = (0.05, 0.1, 0.15)
"""alpha values reported (fractions of the target box's longer side); 0.1 is the headline."""
DEFAULT_ALPHA = 0.1
VIEWPOINT_VARIATIONS = (0, 1, 2)
"""SPair's viewpoint-variation levels: 0 small, 1 medium, 2 large."""
FETCH = "fetch SPair-71k (http://cvlab.postech.ac.kr/research/SPair-71k/) and unpack it unchanged"


def spair_category(category: str) -> str:
    """Our category name (or an SPair name itself) -> the SPair category; one-line error for one SPair lacks."""
    if category in SPAIR_CATEGORIES:
        return category
    if category in OUR_TO_SPAIR:
        return OUR_TO_SPAIR[category]
    raise FeatureNeRFDataError(
        f"spair: category {category!r} has no SPair-71k counterpart; SPair covers "
        f"{', '.join(f'{k} ({v})' for k, v in OUR_TO_SPAIR.items())} of ours: train on one of those"
    )


@dataclass
class SPairPair:
    """One annotated pair. Coordinates are photo pixels (x right, y down) as SPair stores them."""

    name: str
    """The annotation file's stem."""
    annotation: Path
    category: str
    src_image: Path
    trg_image: Path
    src_mask: Optional[Path]
    """``Segmentation/<category>/<stem>.png`` when it exists, else None (the box is the foreground)."""
    trg_mask: Optional[Path]
    src_kps: np.ndarray
    """(K, 2) float64 [x, y]."""
    trg_kps: np.ndarray
    """(K, 2) float64 [x, y], keypoint k corresponds to ``src_kps[k]``."""
    kps_ids: List[str]
    """(K,) keypoint ids as strings."""
    src_bbox: np.ndarray
    """(4,) float64 [x1, y1, x2, y2]."""
    trg_bbox: np.ndarray
    src_imsize: Tuple[int, int]
    """(w, h)."""
    trg_imsize: Tuple[int, int]
    viewpoint_variation: Optional[int] = None
    extra: Dict[str, int] = field(default_factory=dict)
    """The other optional ints present: scale_variation, truncation, occlusion."""

    @property
    def num_keypoints(self) -> int:
        return int(self.src_kps.shape[0])


def _fail(path: Path, what: str, fix: str = "") -> FeatureNeRFDataError:
    return FeatureNeRFDataError(f"{path}: {what}; {fix or 're-extract that file from the SPair-71k archive'}")


def _points(path: Path, data: dict, key: str) -> np.ndarray:
    try:
        arr = np.asarray(data[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(path, f"{key} is not a list of [x, y] numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0 or not np.isfinite(arr).all():
        raise _fail(path, f"{key} has shape {list(arr.shape)}, expected (K, 2) finite [x, y] with K >= 1")
    return arr


def _box(path: Path, data: dict, key: str) -> np.ndarray:
    try:
        arr = np.asarray(data[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise _fail(path, f"{key} is not [x1, y1, x2, y2] numbers") from None
    if arr.shape != (4,) or not np.isfinite(arr).all() or arr[2] <= arr[0] or arr[3] <= arr[1]:
        raise _fail(path, f"{key} {data[key]!r} is not a box [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
    return arr


def _imsize(path: Path, data: dict, key: str) -> Tuple[int, int]:
    v = data[key]
    if not isinstance(v, (list, tuple)) or len(v) < 2 or not all(isinstance(x, (int, float)) for x in v[:2]):
        raise _fail(path, f"{key} {v!r} is not [w, h, c]")
    return int(v[0]), int(v[1])


REQUIRED = ("src_imname", "trg_imname", "category", "src_kps", "trg_kps", "kps_ids", "src_bndbox", "trg_bndbox",
            "src_imsize", "trg_imsize")  # fmt: skip
OPTIONAL_INTS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion")


def load_pair(path: Path, root: Path) -> SPairPair:
    """One ``PairAnnotation`` JSON -> :class:`SPairPair`, its images checked to exist (module docstring)."""
    path, root = Path(path), Path(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "pair annotation not found", FETCH) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise _fail(path, f"malformed JSON ({where})") from None
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise _fail(path, f"missing key(s) {', '.join(missing)}")
    cat = data["category"]
    if cat not in SPAIR_CATEGORIES:
        raise _fail(path, f"category {cat!r} is not an SPair-71k category (one of {', '.join(SPAIR_CATEGORIES)})")
    src, trg = _points(path, data, "src_kps"), _points(path, data, "trg_kps")
    ids = data["kps_ids"]
    if not isinstance(ids, list):
        raise _fail(path, "kps_ids is not a list")
    if not (len(src) == len(trg) == len(ids)):
        raise _fail(path, f"src_kps ({len(src)}), trg_kps ({len(trg)}) and kps_ids ({len(ids)}) differ in length")
    extra: Dict[str, int] = {}
    for k in OPTIONAL_INTS:
        if k in data and data[k] is not None:
            try:
                extra[k] = int(data[k])
            except (TypeError, ValueError):
                raise _fail(path, f"{k} {data[k]!r} is not an int") from None
    vv = extra.pop("viewpoint_variation", None)
    images: List[Path] = []
    masks: List[Optional[Path]] = []
    for side in ("src", "trg"):
        name = data[f"{side}_imname"]
        if not isinstance(name, str) or not name:
            raise _fail(path, f"{side}_imname {name!r} is not a file name")
        img = root / "JPEGImages" / cat / name
        if not img.is_file():
            raise FeatureNeRFDataError(
                f"{img}: image of pair {path.name} not found; copy SPair-71k's JPEGImages/{cat}/ folder unchanged"
            )
        seg = root / "Segmentation" / cat / (Path(name).stem + ".png")
        images.append(img)
        masks.append(seg if seg.is_file() else None)
    return SPairPair(
        name=path.stem,
        annotation=path,
        category=cat,
        src_image=images[0],
        trg_image=images[1],
        src_mask=masks[0],
        trg_mask=masks[1],
        src_kps=src,
        trg_kps=trg,
        kps_ids=[str(i) for i in ids],
        src_bbox=_box(path, data, "src_bndbox"),
        trg_bbox=_box(path, data, "trg_bndbox"),
        src_imsize=_imsize(path, data, "src_imsize"),
        trg_imsize=_imsize(path, data, "trg_imsize"),
        viewpoint_variation=vv,
        extra=extra,
    )


class SPairDataset:
    """The pairs of one split of an SPair-71k folder. ``pair_files()`` in the order of ``Layout/large/<split>.txt``
    when it exists (else sorted file names); ``pairs(category, max_pairs)`` reads them lazily, keeping those whose
    JSON ``category`` matches."""

    def __init__(self, root: Path, split: str = "test"):
        self.root = Path(root)
        if split not in SPLITS:
            raise FeatureNeRFDataError(f"spair: split {split!r} unknown; choose trn (or train), val or test")
        self.split = SPLITS[split]
        if not self.root.is_dir():
            raise FeatureNeRFDataError(f"{self.root}: SPair-71k folder not found; {FETCH} and pass its SPair-71k/ path")
        self.ann_dir = self.root / "PairAnnotation" / self.split
        for d in (self.ann_dir, self.root / "JPEGImages"):
            if not d.is_dir():
                raise FeatureNeRFDataError(
                    f"{d}: folder not found; --spair-root must be the unpacked SPair-71k/ folder (it holds "
                    "PairAnnotation/, JPEGImages/, Segmentation/, Layout/)"
                )
        self.layout_file = self.root / "Layout" / "large" / f"{self.split}.txt"

    def pair_files(self) -> List[Path]:
        if self.layout_file.is_file():
            names = [ln.strip() for ln in self.layout_file.read_text().splitlines() if ln.strip()]
            files = [self.ann_dir / (n if n.endswith(".json") else n + ".json") for n in names]
            for f in files:
                if not f.is_file():
                    raise FeatureNeRFDataError(
                        f"{self.layout_file}: lists {f.stem}, but {f} is missing; copy PairAnnotation/{self.split}/ "
                        "unchanged (or delete the layout file to use every JSON there)"
                    )
            return files
        files = sorted(self.ann_dir.glob("*.json"))
        if not files:
            raise FeatureNeRFDataError(f"{self.ann_dir}: no pair annotations (*.json); {FETCH}")
        return files

    def pairs(self, category: Optional[str] = None, max_pairs: Optional[int] = None) -> Iterator[SPairPair]:
        n = 0
        for f in self.pair_files():
            if max_pairs is not None and n >= max_pairs:
                return
            p = load_pair(f, self.root)
            if category is None or p.category == category:
                n += 1
                yield p


# ----------------------------------------------------------------------------------------------------------------------
# Images, masks and the foreground.


def read_image(path: Path, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """(h, w, 3) uint8 RGB of an SPair photo; ``size`` (w, h) from the JSON is checked when given."""
    arr = read_image_file(path, "RGB", "re-extract it from the SPair-71k archive (its JPEGImages/ unchanged)")
    if size is not None and (arr.shape[1], arr.shape[0]) != tuple(size):
        raise FeatureNeRFDataError(
            f"{path}: image is {arr.shape[1]} x {arr.shape[0]} px but its pair annotation says {size[0]} x {size[1]}; "
            "re-extract the image and its annotations from the same SPair-71k archive"
        )
    return arr


def read_mask(path: Path, hw: Tuple[int, int]) -> np.ndarray:
    """(h, w) bool object mask (nonzero = object) of a ``Segmentation`` PNG, checked to be ``hw`` (h, w)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise FeatureNeRFDataError(
            f"{path}: unreadable mask ({type(e).__name__}); re-extract it from the SPair-71k archive or delete it "
            "(the box is then the foreground)"
        ) from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(-1)
    if arr.shape != tuple(hw):
        raise FeatureNeRFDataError(
            f"{path}: mask is {arr.shape[1]} x {arr.shape[0]} px but its photo is {hw[1]} x {hw[0]}; re-extract "
            "it from the same SPair-71k archive"
        )
    return arr > 0


def box_mask(bbox: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the pixels of the box [x1, y1, x2, y2] (columns round(x1)..round(x2), rows likewise, inclusive,
    clipped to the image)."""
    h, w = hw
    x1, y1, x2, y2 = (int(round(v)) for v in bbox)
    m = np.zeros((h, w), bool)
    m[max(0, y1) : max(0, min(h, y2 + 1)), max(0, x1) : max(0, min(w, x2 + 1))] = True
    return m


def spair_foreground(mask: Optional[np.ndarray], bbox: np.ndarray, hw: Tuple[int, int]) -> Tuple[np.ndarray, str]:
    """(foreground (h, w) bool, ``mask`` | ``bbox``): the SPair mask inside the box (a mask may show other objects
    of the category; the box names the annotated one), else, with no mask or an empty one there, the box itself."""
    inside = box_mask(bbox, hw)
    if mask is not None:
        fg = mask & inside
        if fg.any():
            return fg, "mask"
    return inside, "bbox"


# ----------------------------------------------------------------------------------------------------------------------
# PCK.


def pck_threshold(bbox: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """alpha * max(x2 - x1, y2 - y1) of a box [x1, y1, x2, y2] (pixels)."""
    b = np.asarray(bbox, dtype=np.float64).reshape(4)
    return float(alpha * max(b[2] - b[0], b[3] - b[1]))


def pck_correct(pred: np.ndarray, gt: np.ndarray, bbox: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """(K,) bool: ||pred_k - gt_k||_2 <= alpha * max(w_b, h_b) for pred, gt (K, 2) pixels and the target box."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"pck_correct: expected two (K, 2) arrays, got {pred.shape} and {gt.shape}")
    return np.hypot(*(pred - gt).T) <= pck_threshold(bbox, alpha)


class PCKAccumulator:
    """Per-keypoint correctness of one method over pairs, at every alpha of ``thresholds``.

    With n_p keypoints and c_p(alpha) correct ones in pair p: PCK per keypoint = 100 sum_p c_p / sum_p n_p, PCK per
    pair = 100 mean_p (c_p / n_p); the same within each category and each viewpoint variation."""

    def __init__(self, thresholds: Sequence[float] = THRESHOLDS):
        self.thresholds = tuple(thresholds)
        self.rows: List[Tuple[str, Optional[int], int, Dict[float, int]]] = []

    def add(self, pair: SPairPair, pred: np.ndarray) -> Dict[float, np.ndarray]:
        """Scores pred (K, 2) target-photo pixels against ``pair.trg_kps``; returns alpha -> (K,) bool."""
        correct = {a: pck_correct(pred, pair.trg_kps, pair.trg_bbox, a) for a in self.thresholds}
        self.rows.append(
            (pair.category, pair.viewpoint_variation, pair.num_keypoints, {a: int(c.sum()) for a, c in correct.items()})
        )
        return correct

    @staticmethod
    def _summary(rows, thresholds) -> Dict[str, Any]:
        n = sum(r[2] for r in rows)
        out: Dict[str, Any] = {"pairs": len(rows), "keypoints": n}
        out["pck"] = {str(a): (100.0 * sum(r[3][a] for r in rows) / n if n else None) for a in thresholds}
        out["pck_per_pair"] = {
            str(a): (100.0 * float(np.mean([r[3][a] / r[2] for r in rows])) if rows else None) for a in thresholds
        }
        return out

    def summary(self) -> Dict[str, Any]:
        """pairs, keypoints, pck / pck_per_pair (str(alpha) -> percent), per_category and per_viewpoint_variation
        (each the same dict for its subset; viewpoint levels without pairs are left out)."""
        out = self._summary(self.rows, self.thresholds)
        cats = sorted({r[0] for r in self.rows})
        out["per_category"] = {c: self._summary([r for r in self.rows if r[0] == c], self.thresholds) for c in cats}
        vvs = sorted({r[1] for r in self.rows if r[1] is not None})
        out["per_viewpoint_variation"] = {
            str(v): self._summary([r for r in self.rows if r[1] == v], self.thresholds) for v in vvs
        }
        return out


# ----------------------------------------------------------------------------------------------------------------------
# A photo prepared for the model, and the matcher.

PAD = 0.15
"""Transparent margin added around an SPair photo before :func:`~featurenerf_ns.data.photo.prepare_photo`, as a
fraction of its longer side: the foreground then covers at most 1 / 1.3^2 = 59% of the padded image, so a photo
whose object fills the frame is still usable (prepare_photo refuses a foreground over 92%)."""


@dataclass
class SPairSide:
    """One SPair photo placed like a training render: ``photo`` is the :class:`PreparedPhoto` of the padded RGBA
    image, so original photo pixel xy = padded pixel - pad."""

    photo: Any
    """featurenerf_ns.data.photo.PreparedPhoto (of the padded image)."""
    pad: int
    foreground: str
    """``mask`` | ``bbox``."""
    rgb: np.ndarray
    """(h, w, 3) uint8 original photo."""

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Original photo pixels (N, 2) -> model pixels (N, 2)."""
        return self.photo.to_model(np.asarray(xy, dtype=np.float64) + self.pad)

    def to_photo(self, uv: np.ndarray) -> np.ndarray:
        """Model pixels (N, 2) -> original photo pixels (N, 2)."""
        return self.photo.to_photo(uv) - self.pad

    @property
    def resolution(self) -> int:
        return int(self.photo.mask.shape[0])


def prepare_side(
    image: Path,
    mask: Optional[Path],
    bbox: np.ndarray,
    imsize: Tuple[int, int],
    resolution: int,
    box: Tuple[Tuple[float, float], float],
    workdir: Path,
    tag: str,
) -> SPairSide:
    """Read an SPair photo, take its foreground (:func:`spair_foreground`), write it padded by :data:`PAD` as an RGBA
    PNG (alpha = foreground) to ``workdir/<tag>_rgba.png`` and place it with prepare_photo(..., how="alpha") at
    ``resolution`` in the training renders' typical ``box``. A photo prepare_photo cannot use raises its PhotoError."""
    from PIL import Image

    from featurenerf_ns.data.photo import PhotoError, prepare_photo

    rgb = read_image(image, imsize)
    hw = (int(rgb.shape[0]), int(rgb.shape[1]))
    fg, how = spair_foreground(read_mask(mask, hw) if mask is not None else None, bbox, hw)
    pad = int(math.ceil(PAD * max(hw)))
    rgba = np.zeros((hw[0] + 2 * pad, hw[1] + 2 * pad, 4), np.uint8)
    rgba[pad : pad + hw[0], pad : pad + hw[1], :3] = rgb
    rgba[pad : pad + hw[0], pad : pad + hw[1], 3] = fg.astype(np.uint8) * 255
    path = Path(workdir) / f"{tag}_rgba.png"
    Image.fromarray(rgba).save(path)
    try:
        photo = prepare_photo(path, resolution, box, "alpha")
    except PhotoError as e:  # name the SPair photo, not the padded temporary file
        raise PhotoError(str(e).replace(str(path), str(image))) from None
    return SPairSide(photo=photo, pad=pad, foreground=how, rgb=rgb)


def query_pixels(uv: np.ndarray, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source keypoints in model pixels uv (K, 2) -> (centres (K, 2) float32 of the model pixels they fall in, clamped
    into the R x R frame, outside (K,) bool: the keypoint lies outside the frame, i.e. the prepared crop). Features
    are read at pixel centres, the same grid the target's candidates lie on."""
    uv = np.asarray(uv, dtype=np.float64)
    outside = ~((uv >= 0) & (uv < resolution)).all(1)
    ij = np.clip(np.floor(uv), 0, resolution - 1)
    return (ij + 0.5).astype(np.float32), outside


def match_keypoints(query, candidates, candidate_xy) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine nearest neighbours: query (K, D) source-keypoint features, candidates (P, D) features at the target's
    P foreground pixels with centres candidate_xy (P, 2) (model pixels) -> (matched centres (K, 2) float64,
    cosine similarity (K,)). Ties resolve to the lowest candidate index
    (:func:`featurenerf_ns.eval.metrics.nn_match`)."""
    import torch

    from featurenerf_ns.eval.metrics import nn_match

    idx, sim = nn_match(torch.as_tensor(query), torch.as_tensor(candidates))
    xy = torch.as_tensor(candidate_xy)[idx.cpu()]
    return xy.double().numpy(), sim.float().cpu().numpy()
