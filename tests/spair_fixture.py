"""A tiny dataset in the exact SPair-71k layout, written from the procedural chair renders (pasted on plain JPEG
backgrounds) for the featurenerf-spair tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image, ImageDraw

CANVAS = (220, 190)
"""(w, h) of every fixture photo."""


def _photo(rgba: np.ndarray, scale: float, at, background) -> tuple:
    """The render rescaled and pasted at ``at`` on a plain canvas: (RGB uint8, mask bool)."""
    im = Image.fromarray(rgba)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
    canvas = Image.new("RGB", CANVAS, background)
    canvas.paste(im, at, im)
    mask = np.zeros(CANVAS[::-1], bool)
    a = np.asarray(im)[..., 3] > 127
    mask[at[1] : at[1] + a.shape[0], at[0] : at[0] + a.shape[1]] = a[: CANVAS[1] - at[1], : CANVAS[0] - at[0]]
    return np.asarray(canvas), mask


def _bbox(mask: np.ndarray) -> List[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _inner_points(mask: np.ndarray, k: int) -> List[List[float]]:
    """k pixel centres well inside the mask (3-px erosion), evenly spaced in row-major order."""
    from scipy.ndimage import binary_erosion

    ys, xs = np.nonzero(binary_erosion(mask, iterations=3))
    idx = np.linspace(0, len(xs) - 1, k + 2)[1:-1].round().astype(int)
    return [[float(xs[i]) + 0.5, float(ys[i]) + 0.5] for i in idx]


def write_spair_fixture(root: Path, cat) -> Path:
    """Writes ``root/SPair-71k`` with three chair pairs and one aeroplane pair (filtered out for a chair model):

    * ``000001``: chair photo A -> chair photo B, masks for both, 4 inner keypoints + one in the corner (0 + 3.5 px),
      outside the prepared crop of either photo; viewpoint_variation 0.
    * ``000002``: A -> A (identical photos), 4 keypoints; viewpoint_variation 1.
    * ``000003``: C (no Segmentation mask: the box is its foreground) -> B, 4 keypoints; viewpoint_variation 2.
    * ``000004``: an aeroplane pair (drawn ellipses).

    Returns the SPair-71k folder."""
    spair = Path(root) / "SPair-71k"
    ids = cat.ids("test") + cat.ids("val") + cat.ids("train")
    shots = {
        "2008_000101": (ids[0], 0, 1.2, (30, 20), (238, 236, 228), True),
        "2008_000202": (ids[1], 0, 1.0, (70, 35), (222, 232, 240), True),
        "2009_000303": (ids[2], 0, 1.1, (50, 30), (236, 228, 236), False),
    }
    photos: Dict[str, tuple] = {}
    for stem, (inst, view, scale, at, bg, with_mask) in shots.items():
        rgba = np.asarray(Image.open(cat.instance(inst).image_paths[view]).convert("RGBA"))
        rgb, mask = _photo(rgba, scale, at, bg)
        (spair / "JPEGImages" / "chair").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(spair / "JPEGImages" / "chair" / f"{stem}.jpg", quality=92)
        if with_mask:
            (spair / "Segmentation" / "chair").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 9).save(spair / "Segmentation" / "chair" / f"{stem}.png")
        photos[stem] = (rgb, mask)
    for stem in ("2010_000404", "2010_000505"):
        im = Image.new("RGB", CANVAS, (200, 220, 250))
        ImageDraw.Draw(im).ellipse((40, 70, 180, 120), fill=(90, 90, 100))
        (spair / "JPEGImages" / "aeroplane").mkdir(parents=True, exist_ok=True)
        im.save(spair / "JPEGImages" / "aeroplane" / f"{stem}.jpg", quality=92)
    w, h = CANVAS

    def pair(num: int, src: str, trg: str, cat_name: str, src_kps, trg_kps, src_box, trg_box, vv: int) -> str:
        name = f"{num:06d}-{src}-{trg}:{cat_name}"
        ann = {
            "pair_id": num,
            "src_imname": f"{src}.jpg",
            "trg_imname": f"{trg}.jpg",
            "src_imsize": [w, h, 3],
            "trg_imsize": [w, h, 3],
            "src_bndbox": src_box,
            "trg_bndbox": trg_box,
            "category": cat_name,
            "src_pose": 0,
            "trg_pose": 0,
            "src_kps": src_kps,
            "trg_kps": trg_kps,
            "kps_ids": [str(i) for i in range(len(src_kps))],
            "viewpoint_variation": vv,
            "scale_variation": 0,
            "truncation": 0,
            "occlusion": 0,
        }
        d = spair / "PairAnnotation" / "test"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.json").write_text(json.dumps(ann))
        return name

    (ma, mb, mc) = (photos[s][1] for s in shots)
    ka, kb, kc = _inner_points(ma, 4), _inner_points(mb, 4), _inner_points(mc, 4)
    names = [
        pair(2, "2008_000101", "2008_000101", "chair", ka, ka, _bbox(ma), _bbox(ma), 1),
        pair(1, "2008_000101", "2008_000202", "chair", ka + [[3.5, 3.5]], kb + [[3.5, 3.5]], _bbox(ma), _bbox(mb), 0),
        pair(3, "2009_000303", "2008_000202", "chair", kc, kb, _bbox(mc), _bbox(mb), 2),
        pair(4, "2010_000404", "2010_000505", "aeroplane", [[60.0, 95.0]], [[150.0, 95.0]], [40, 70, 180, 120],
             [40, 70, 180, 120], 0),
    ]  # fmt: skip
    (spair / "Layout" / "large").mkdir(parents=True, exist_ok=True)
    (spair / "Layout" / "large" / "test.txt").write_text("\n".join(names) + "\n")
    return spair
