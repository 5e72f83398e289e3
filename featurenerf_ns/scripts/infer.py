"""``featurenerf-infer``: a trained FeatureNeRF model applied to your own photo of one object: the keypoints and parts
of an annotated reference instance transferred onto it, zero-shot.

    featurenerf-infer --load-config outputs/chair/featurenerf-tiny/<stamp>/config.yml --image photo.jpg \\
        [--reference <annotated instance>] [--view 0] --out outputs/infer

Steps: the photo's foreground (its alpha channel, else OpenCV GrabCut from a background border), crop and rescale
so the object sits where the training renders put it, on black (:mod:`featurenerf_ns.data.photo`; ``input.png`` is
exactly what the encoder sees); the photo is taken to be seen from ``--view`` of the reference's fixed camera set
(0: the canonical view the model was conditioned on most); then nearest-feature transfer from the reference's view
``--reference-view`` (:mod:`featurenerf_ns.exporters.photo_transfer`).

Writes under ``--out``: ``overlay.png`` (reference | model input | photo with parts and keypoints), ``parts.png``
(RGBA part colours at the photo's size), ``part_labels.png`` (8-bit label per photo pixel, 0 = background),
``input.png`` and ``result.json`` (keypoints in photo pixels with their cosine similarity, part pixel counts, the
placement, settings). An image it cannot use (unreadable, no foreground, object too small, foreground filling the
frame) stops with a one-line error naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_bytes, atomic_write_json
from featurenerf_ns.data.photo import Foreground, PhotoError, prepare_photo, typical_box
from featurenerf_ns.eval.correspondence import view_gt
from featurenerf_ns.eval.providers import view_camera
from featurenerf_ns.exporters.photo_transfer import transfer_figure, transfer_to_photo
from featurenerf_ns.scripts.export import load_featurenerf
from featurenerf_ns.utils.cli import make_console, run_command
from featurenerf_ns.utils.images import png_bytes
from featurenerf_ns.utils.palette import part_colors_uint8
from featurenerf_ns.viewer.inputs import ViewerInputError

CONSOLE = make_console()
BOX_INSTANCES = 8
"""Instances seen from the reference's camera ``--view`` whose masks give the typical object box (median)."""


@dataclass
class Infer:
    """Transfer an annotated reference's keypoints and parts onto your own photo of one object."""

    load_config: Path
    image: Path
    """The photo: PNG/JPEG of one object (RGBA: its alpha is the mask; otherwise a plain background)."""
    reference: Optional[str] = None
    """Annotated instance whose keypoints and parts are transferred (default: the first val instance, else test).
    Val and test instances share the fixed camera set (50 views; 0 is azimuth 0, elevation 10 degrees); a training
    instance has its own random cameras."""
    view: int = 0
    """Camera the photo is taken to be seen from: a view index of the reference's cameras (0: canonical)."""
    reference_view: Optional[int] = None
    """The reference's view the annotations are read from (default: ``--view``)."""
    feature: str = "auto"
    """nerf_feature (internal) | feature (distilled) | auto: the distilled head when the model has one (better on
    the cross-view 2D part task in our study, docs/results.md)."""
    foreground: Foreground = "auto"
    """auto (alpha when the file has a usable one, else grabcut) | alpha | grabcut."""
    out: Path = Path("outputs/infer")

    def main(self) -> None:
        from featurenerf_ns.viewer.conditionings import ConditioningCache

        pipeline, step = load_featurenerf(self.load_config)
        dm, model = pipeline.datamanager, pipeline.model
        cat = dm.cat
        feature = model.resolve_feature(self.feature, "infer")
        if not cat.has_annotations:
            raise FeatureNeRFDataError(f"infer: {cat.root} has no annotations to transfer; use an annotated dataset")
        fixed = cat.ids("val") + cat.ids("test")  # the instances rendered from the fixed camera set
        ref = self.reference or (fixed or cat.ids("train"))[0]
        try:
            nv = len(cat.instance(ref).poses)
            ann = cat.view_annotations(ref)
        except (KeyError, FeatureNeRFDataError):
            raise FeatureNeRFDataError(
                f"infer: --reference {ref!r} is not an annotated instance of {cat.root}; e.g. "
                f"{', '.join(cat.ids('train')[:3])}"
            ) from None
        view, rview = self.view % nv, (self.view if self.reference_view is None else self.reference_view) % nv
        R = dm.instance(ref).hw[0]
        same_cameras = [ref] + (fixed if ref in fixed else [])  # training instances each have their own cameras
        boxes = [cat.view_annotations(i)["parts"][view] > 0 for i in list(dict.fromkeys(same_cameras))[:BOX_INSTANCES]]
        photo = prepare_photo(self.image, R, typical_box(boxes, R), self.foreground)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.out / "input.png", png_bytes((photo.image * 255).round().astype(np.uint8)))
        conds = ConditioningCache(dm, model)
        try:  # the encoder sees input.png itself, posed as the reference's view ``view``
            pc = conds.get(ref, (view,), self.out / "input.png")
        except ViewerInputError as e:
            raise FeatureNeRFDataError(str(e)) from None
        rc = conds.get(ref, (rview,), None)
        gt = view_gt(ann, rview, R)
        with model.precision_override("float32"):
            result = transfer_to_photo(
                model, photo, pc.sources, pc.maps, view_camera(cat, ref, view, R),
                rc.sources, rc.maps, view_camera(cat, ref, rview, R), gt, feature, cat.keypoint_names,
            )  # fmt: skip
        lab = result.photo_labels
        rgba = np.concatenate([part_colors_uint8(lab), (lab > 0).astype(np.uint8)[..., None] * 255], -1)
        atomic_write_bytes(self.out / "parts.png", png_bytes(rgba))
        atomic_write_bytes(self.out / "part_labels.png", png_bytes(lab.astype(np.uint8)))
        ref_rgb = rc.sources.images[0, 0].permute(1, 2, 0).float().cpu().numpy()
        labels, counts = np.unique(lab[lab > 0], return_counts=True)
        pn = cat.part_names
        summary = {
            "config": str(self.load_config),
            "step": step,
            "image": str(self.image),
            "photo_size": [int(lab.shape[1]), int(lab.shape[0])],
            "foreground": photo.foreground,
            "foreground_fraction": float(photo.photo_mask.mean()),
            "placement": {
                "model_px_per_photo_px": photo.scale,
                "photo_centre": list(photo.photo_centre),
                "model_centre": list(photo.model_centre),
                "resolution": R,
            },
            "reference": ref,
            "view": view,
            "reference_view": rview,
            "feature": feature,
            "keypoints": result.keypoints,
            "part_pixels": {(pn[k - 1] if k <= len(pn) else str(int(k))): int(c) for k, c in zip(labels, counts)},
            "files": ["overlay.png", "parts.png", "part_labels.png", "input.png", "result.json"],
        }
        transfer_figure(
            self.out / "overlay.png", photo, result, ref_rgb, gt, pn,
            f"{self.image.name}: {cat.category} reference {ref} view {rview}, {feature}, step {step}",
        )  # fmt: skip
        atomic_write_json(self.out / "result.json", summary)
        CONSOLE.print(
            f"[green]infer:[/green] {len(result.keypoints)} keypoints, parts "
            f"{', '.join(f'{k} {v}' for k, v in summary['part_pixels'].items())} px -> {self.out}/"
        )


def entrypoint() -> None:
    run_command(Infer, (FeatureNeRFDataError, PhotoError))
