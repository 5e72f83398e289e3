"""Image segments for mask-guided feature smoothing: one interface, three sources, one on-disk cache.

    labels = source(image)      image (H, W, 3) uint8  ->  labels (H, W) int32, -1 = no segment

* ``superpixel`` (offline default): scikit-image's Felzenszwalb graph segmentation. Picked by agreement with the
  ground-truth instance masks of the embedded scene (11 train frames, per object the best IoU of any segment,
  averaged): Felzenszwalb scale 400 / sigma 0.5 0.499 (55 segments per frame), scale 200 0.487, scale 800 0.458;
  SLIC 50 segments 0.430, 100 segments 0.390; quickshift 0.433 (4x slower).
* ``sam``: Segment Anything (the ``segment-anything`` package) from a local checkpoint: its automatic mask
  generator (which already applies non-maximum suppression to overlapping masks), masks under ``min_area`` pixels
  dropped, the rest painted largest first so that smaller masks keep their pixels (non-overlapping labels).
  No SAM weights can be downloaded here: give ``--pipeline.datamanager.masks.sam-checkpoint``.
* ``gt``: the generated scene's ground-truth instance masks (objects 1..K, platform and background 0): an
  *oracle* (uses ground truth), reported as such.

The data manager runs the source once over the train frames (the smoothing paper segments the *rendered* patch at
every step; on 2 CPU cores a segmenter per step is out of budget, and by the feature stage the radiance field
reproduces the train frames). Labels are cached as ``<cache_dir>/masks_<key>.npz`` (key: source settings and the
frames' names and sizes; written atomically).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Literal, Optional, Sequence

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_bytes

MaskKind = Literal["none", "superpixel", "sam", "gt"]


@dataclass
class MaskSourceConfig:
    kind: MaskKind = "none"
    """Where image segments come from (mask-guided smoothing): none, superpixel, sam (local weights), gt (oracle)."""
    superpixel_scale: float = 400.0
    superpixel_sigma: float = 0.5
    superpixel_min_size: int = 20
    sam_checkpoint: Optional[Path] = None
    """Local SAM checkpoint (e.g. sam_vit_b_01ec64.pth) for kind=sam."""
    sam_model_type: str = "vit_b"
    sam_points_per_side: int = 16
    sam_pred_iou_thresh: float = 0.88
    sam_stability_thresh: float = 0.95
    """SAM's own mask filters (its defaults)."""
    min_area: int = 30
    """SAM masks with fewer pixels are dropped (official: 500 px on 64 x 64 patches of larger frames)."""
    cache_dir: Optional[Path] = None
    """Default: <data root>/mask_cache."""

    def key(self) -> str:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k != "cache_dir"}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


Segmenter = Callable[[np.ndarray], np.ndarray]


def superpixel_segmenter(cfg: MaskSourceConfig) -> Segmenter:
    from skimage.segmentation import felzenszwalb

    def run(image: np.ndarray) -> np.ndarray:
        return felzenszwalb(
            image, scale=cfg.superpixel_scale, sigma=cfg.superpixel_sigma, min_size=cfg.superpixel_min_size
        ).astype(np.int32)

    return run


def paint_masks(masks: Sequence[dict], shape, min_area: int) -> np.ndarray:
    """SAM's mask records (``segmentation`` (H, W) bool, ``area``) -> non-overlapping labels (H, W), -1 = none;
    larger masks painted first, so smaller ones keep their pixels; masks under ``min_area`` dropped."""
    labels = np.full(shape, -1, dtype=np.int32)
    kept = sorted((m for m in masks if int(m["area"]) >= min_area), key=lambda m: -int(m["area"]))
    for i, m in enumerate(kept):
        labels[np.asarray(m["segmentation"], dtype=bool)] = i
    return labels


def sam_segmenter(cfg: MaskSourceConfig, sam_model=None) -> Segmenter:
    """SAM's automatic mask generator; ``sam_model`` (a built ``segment_anything.modeling.Sam``) overrides the
    checkpoint (tests build a tiny one from the package's modules)."""
    try:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    except ImportError as e:
        raise FeatureNeRFDataError(
            "mask source 'sam' needs the segment-anything package: pip install -e '.[sam]'"
        ) from e
    if sam_model is None:
        ckpt = cfg.sam_checkpoint
        if ckpt is None or not Path(ckpt).is_file():
            raise FeatureNeRFDataError(
                f"mask source 'sam': checkpoint {ckpt} not found; pass --pipeline.datamanager.masks.sam-checkpoint "
                "<local sam_vit_*.pth> (no download here), or use --pipeline.datamanager.masks.kind superpixel"
            )
        if cfg.sam_model_type not in sam_model_registry:
            raise FeatureNeRFDataError(
                f"mask source 'sam': unknown model type {cfg.sam_model_type!r}; one of {sorted(sam_model_registry)}"
            )
        sam_model = sam_model_registry[cfg.sam_model_type](checkpoint=str(ckpt))
    generator = SamAutomaticMaskGenerator(
        sam_model.eval(),
        points_per_side=cfg.sam_points_per_side,
        pred_iou_thresh=cfg.sam_pred_iou_thresh,
        stability_score_thresh=cfg.sam_stability_thresh,
    )

    def run(image: np.ndarray) -> np.ndarray:
        return paint_masks(generator.generate(image), image.shape[:2], cfg.min_area)

    return run


def gt_segmenter_labels(data_root: Path, frame_names: Sequence[str]) -> np.ndarray:
    """(N, H, W) ground-truth instance ids of a generated scene's frames ``frame_XXXXX`` (oracle)."""
    from featurenerf_ns.data.procedural.scene import SCENE_FILE
    from featurenerf_ns.data.procedural.scene_data import SceneData

    if not (Path(data_root) / SCENE_FILE).is_file():
        raise FeatureNeRFDataError(
            f"{data_root}: mask source 'gt' needs a generated scene ({SCENE_FILE}); use kind superpixel or sam"
        )
    instance = SceneData.load(Path(data_root)).frames()["instance"]
    out = []
    for name in frame_names:
        stem = Path(name).stem
        if not stem.startswith("frame_"):
            raise FeatureNeRFDataError(f"{data_root}: mask source 'gt': {name} is not a scene frame (frame_XXXXX)")
        out.append(instance[int(stem[6:])].astype(np.int32))
    return np.stack(out)


def frame_labels(
    cfg: MaskSourceConfig,
    data_root: Path,
    names: Sequence[str],
    images: Callable[[int], np.ndarray],
    progress: Optional[Callable[[int, int], None]] = None,
    sam_model=None,
) -> np.ndarray:
    """(N, H, W) int32 labels of the frames ``names`` (``images(i)`` -> (H, W, 3) uint8), from the cache if it
    holds them."""
    if cfg.kind == "none":
        raise ValueError("frame_labels: mask source kind is 'none'")
    if cfg.kind == "gt":
        return gt_segmenter_labels(data_root, names)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir is not None else Path(data_root) / "mask_cache"
    fp = hashlib.sha1(json.dumps([Path(n).name for n in names]).encode()).hexdigest()[:8]
    path = cache_dir / f"masks_{cfg.kind}_{cfg.key()}_{fp}.npz"
    if path.is_file():
        with np.load(path) as z:
            labels = z["labels"]
        if labels.shape[0] != len(names):
            raise FeatureNeRFDataError(f"{path}: holds {labels.shape[0]} frames, the data {len(names)}; delete it")
        return labels
    run = superpixel_segmenter(cfg) if cfg.kind == "superpixel" else sam_segmenter(cfg, sam_model)
    out: List[np.ndarray] = []
    for i in range(len(names)):
        img = images(i)
        if img.ndim != 3 or img.shape[-1] < 3:
            raise FeatureNeRFDataError(f"{names[i]}: expected an RGB image, got shape {img.shape}")
        out.append(run(np.ascontiguousarray(img[..., :3])))
        if progress is not None:
            progress(i + 1, len(names))
    labels = np.stack(out).astype(np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, labels=labels, names=np.asarray([Path(n).name for n in names]))
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return labels
