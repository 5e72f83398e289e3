"""A user's own photo of one object, made to look like a training render: foreground, then crop and rescale so the
object sits where the training renders put it, on black.

Foreground (``(h, w)`` bool at the photo's size):
  * ``alpha``: the photo's alpha channel > 0.5, when it has one with both transparent and opaque pixels;
  * ``grabcut``: OpenCV's GrabCut (iterated graph cuts over colour GMMs; no learned weights, so it runs offline),
    seeded with a border band of ``BORDER`` x the shorter side as sure background and, inside it, pixels coloured
    unlike the border as probable foreground (the rest probable background); the largest connected component is
    kept. It expects a plain-ish background that differs from the
    object (a product shot, a render saved as JPEG); a cluttered photo needs an alpha matte from elsewhere.

Placement: with the foreground's bounding box (centre c_p, longer side s_p) in the photo and the training renders'
typical box (centre c_t, longer side s_t, at the model resolution R) from :func:`typical_box`, model pixel (u, v)
shows photo pixel

    (x, y) = c_p + ((u, v) - c_t) / k,    k = s_t / s_p   (model pixels per photo pixel),

i.e. the photo is resampled by k (area averaging when shrinking) and shifted; everything off the mask is black
(the renders' background). :class:`PreparedPhoto` keeps k, c_p, c_t to map results back onto the photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Tuple

import numpy as np

BORDER = 0.04
"""GrabCut's sure-background band, as a fraction of the photo's shorter side (at least 2 px)."""
MIN_FOREGROUND = 0.002
"""Below this fraction of the photo's pixels there is no usable foreground."""
MAX_FOREGROUND = 0.92
"""Above this fraction the object cannot be told from the background."""
MIN_OBJECT_PX = 12
"""The object's longer side in the photo must span at least this many pixels."""

Foreground = Literal["auto", "alpha", "grabcut"]


class PhotoError(ValueError):
    """A photo that cannot be used; the message is one line naming the file and what to do."""


@dataclass
class PreparedPhoto:
    image: np.ndarray
    """(R, R, 3) float32 in [0, 1]: the object placed like a training render, on black."""
    mask: np.ndarray
    """(R, R) bool foreground at the model resolution."""
    photo_rgb: np.ndarray
    """(h, w, 3) float32 in [0, 1]: the photo as read (RGB, alpha dropped)."""
    photo_mask: np.ndarray
    """(h, w) bool foreground of the photo."""
    foreground: str
    """How the foreground was found: ``alpha`` | ``grabcut``."""
    scale: float
    """k: model pixels per photo pixel."""
    photo_centre: Tuple[float, float]
    """c_p (x, y) in photo pixels."""
    model_centre: Tuple[float, float]
    """c_t (x, y) in model pixels."""

    def to_photo(self, uv: np.ndarray) -> np.ndarray:
        """Model pixel coordinates (N, 2) (x right, y down, continuous) -> photo pixel coordinates (N, 2)."""
        return np.asarray(self.photo_centre) + (np.asarray(uv, dtype=np.float64) - self.model_centre) / self.scale

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Photo pixel coordinates (N, 2) -> model pixel coordinates (N, 2)."""
        return np.asarray(self.model_centre) + (np.asarray(xy, dtype=np.float64) - self.photo_centre) * self.scale


def read_photo(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """(rgb (h, w, 3) float32 in [0, 1], alpha (h, w) float32 or an empty array when the file has none)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise PhotoError(f"{path}: no such image file; give the path of a PNG/JPEG of one object")
    try:
        with Image.open(path) as im:
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise PhotoError(f"{path}: not a readable image ({type(e).__name__}); give a PNG or JPEG file") from None
    return arr[..., :3], (arr[..., 3] if has_alpha else np.zeros((0,), np.float32))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    lab = label(mask, connectivity=2)
    if lab.max() <= 1:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == counts.argmax()


def grabcut_foreground(rgb: np.ndarray, iterations: int = 5) -> np.ndarray:
    """(h, w) bool: GrabCut from a sure-background border band (module docstring). Inside the band, a pixel starts
    as probable background when its colour lies within the border's own spread of the border's median colour
    (its 99th-percentile distance, at least 0.06 in RGB [0, 1]), else as probable foreground: seeding everything
    inside as foreground lets the foreground GMM swallow the background around a thin object."""
    import cv2

    h, w = rgb.shape[:2]
    band = max(2, int(round(BORDER * min(h, w))))
    border = np.ones((h, w), bool)
    border[band:-band, band:-band] = False
    ref = np.median(rgb[border], axis=0)
    dist = np.linalg.norm(rgb - ref, axis=-1)
    thr = max(0.06, float(np.quantile(dist[border], 0.99)))
    seed = np.where(dist > thr, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seed[border] = cv2.GC_BGD
    if not (seed == cv2.GC_PR_FGD).any():
        return np.zeros((h, w), bool)  # nothing differs from the border: no foreground
    bgr = np.ascontiguousarray((rgb[..., ::-1] * 255).round().astype(np.uint8))
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation (k-means) draws from OpenCV's RNG: fixed for reproducibility
    cv2.grabCut(bgr, seed, (0, 0, 0, 0), bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # (rect unused)
    fg = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
    return _largest_component(fg) if fg.any() else fg


def foreground_mask(path: Path, rgb: np.ndarray, alpha: np.ndarray, how: Foreground = "auto") -> Tuple[np.ndarray, str]:
    """(mask (h, w) bool, method): see the module docstring; one-line :class:`PhotoError` when none is usable."""
    usable_alpha = alpha.size > 0 and float(alpha.min()) < 0.5 < float(alpha.max())
    if how == "alpha" and not usable_alpha:
        raise PhotoError(
            f"{path}: --foreground alpha, but the image has no alpha channel with transparent pixels; "
            "use --foreground grabcut (or auto)"
        )
    if how == "alpha" or (how == "auto" and usable_alpha):
        mask, method = alpha > 0.5, "alpha"
    else:
        mask, method = grabcut_foreground(rgb), "grabcut"
    frac = float(mask.mean())
    if frac < MIN_FOREGROUND:
        raise PhotoError(
            f"{path}: no foreground found ({method}: {frac:.2%} of the pixels); give one object that stands out "
            "from a plain background, or an RGBA image whose alpha masks it"
        )
    if frac > MAX_FOREGROUND:
        raise PhotoError(
            f"{path}: the foreground ({method}) fills {frac:.0%} of the image, so the object cannot be told from "
            "the background; leave a margin of plain background around it, or give an RGBA image"
        )
    return mask, method


def typical_box(masks: Sequence[np.ndarray], resolution: int) -> Tuple[Tuple[float, float], float]:
    """(centre (x, y), longer side) in pixels at ``resolution`` of the median bounding box of foreground masks
    (each (H, W) bool at any square size): where the training renders put the object."""
    centres, sides = [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            continue
        f = resolution / m.shape[1]
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        centres.append(((x0 + x1) / 2 * f, (y0 + y1) / 2 * f))
        sides.append(max(x1 - x0, y1 - y0) * f)
    if not sides:
        raise PhotoError("typical_box: no foreground in the reference masks; pick an instance with annotations")
    c = np.median(np.asarray(centres), axis=0)
    return (float(c[0]), float(c[1])), float(np.median(sides))


def prepare_photo(
    path: Path, resolution: int, box: Tuple[Tuple[float, float], float], how: Foreground = "auto"
) -> PreparedPhoto:
    """Read ``path``, find its foreground, place it like a training render at ``resolution`` (module docstring)."""
    import cv2

    rgb, alpha = read_photo(path)
    mask, method = foreground_mask(path, rgb, alpha, how)
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = max(x1 - x0, y1 - y0)
    if side < MIN_OBJECT_PX:
        raise PhotoError(
            f"{path}: the object is only {side} px across; give a photo where it spans at least {MIN_OBJECT_PX} px"
        )
    (cx_t, cy_t), s_t = box
    k = s_t / side
    c_p = ((x0 + x1) / 2, (y0 + y1) / 2)
    # Continuous coordinates (pixel centres at i + 0.5): model x' = k x + b with b = c_t - k c_p. OpenCV indexes
    # pixel centres at i, so its affine is x' = a x + b + (a - 1) / 2 for a source of scale a.
    b = np.array([cx_t - k * c_p[0], cy_t - k * c_p[1]])
    src = np.concatenate([rgb * mask[..., None], mask[..., None].astype(np.float32)], -1)  # premultiplied, + cover
    a = np.array([k, k])
    if k < 1:  # shrink with area averaging first (warpAffine alone would alias), then place
        small = cv2.resize(src, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        a = k / np.array([small.shape[1] / src.shape[1], small.shape[0] / src.shape[0]])  # ~1: resize rounds sizes
        src = small
    fwd = np.array([[a[0], 0, b[0] + (a[0] - 1) / 2], [0, a[1], b[1] + (a[1] - 1) / 2]], np.float64)
    placed = cv2.warpAffine(
        src,
        fwd,
        (resolution, resolution),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    image, cover = placed[..., :3], placed[..., 3]  # RGB premultiplied = composited on black, like the renders
    return PreparedPhoto(
        image=np.clip(image, 0, 1).astype(np.float32),
        mask=cover > 0.5,
        photo_rgb=rgb,
        photo_mask=mask,
        foreground=method,
        scale=float(k),
        photo_centre=(float(c_p[0]), float(c_p[1])),
        model_centre=(float(cx_t), float(cy_t)),
    )
