"""``featurenerf-export``: a trained FeatureNeRF model's view of one object as files: the surface point cloud (PLY:
rendered colour, PCA colours of the feature, transferred part labels) and the full 3D features (npz).

    featurenerf-export --load-config outputs/chair/featurenerf-tiny/<stamp>/config.yml --instance <id> \\
        --views 0 --reference <annotated id> --out outputs/export
    featurenerf-export --load-config ... --instance <id> --image photo.png     # your image in place of view 0

The object is conditioned on ``--views`` of ``--instance`` (or ``--image`` in place of the first, posed like it),
rendered from ``--cameras`` (views of that instance), and every surface point gets the field's features there
(:mod:`featurenerf_ns.exporters.feature_cloud`; rendered and queried in float32). With ``--reference``, each point
takes the part label of its nearest labelled point of the reference instance (zero-shot 3D part transfer); when the
exported instance has part annotations, export.json also gives the agreement of those labels with the label of the
nearest annotated point (geometry against ground truth: a check of the transfer, not a prediction). Open the PLY
with Open3D / trimesh / MeshLab. A trained N3F scene exports with ``featurenerf-scene export``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.eval.metrics import nn_match
from featurenerf_ns.eval.providers import field_point_features, view_camera
from featurenerf_ns.exporters.feature_cloud import cloud_figure, feature_cloud, transfer_parts, write_cloud
from featurenerf_ns.utils.cli import make_console, run_command

CONSOLE = make_console()
PART_POINTS = 4096
"""Labelled reference points matched against (evenly spaced among the annotation's points)."""


def load_featurenerf(config: Path):
    """The pipeline (eval mode) of a trained featurenerf* run; one-line errors otherwise."""
    from nerfstudio.utils.eval_utils import eval_setup

    from featurenerf_ns.pipelines.featurenerf_pipeline import FeatureNeRFPipeline

    if not config.is_file():
        raise FeatureNeRFDataError(f"{config}: config not found; pass the config.yml of an ns-train run")
    _, pipeline, _, step = eval_setup(config, test_mode="test")
    if not isinstance(pipeline, FeatureNeRFPipeline):
        raise FeatureNeRFDataError(
            f"{config}: not a featurenerf run (pipeline {type(pipeline).__name__}); an n3f scene exports with "
            "`featurenerf-scene export`"
        )
    pipeline.eval()
    return pipeline, step


@dataclass
class Export:
    """Export one object's surface points with the model's 3D features (PLY + npz + export.json)."""

    load_config: Path
    instance: Optional[str] = None
    """Instance to condition on and render (default: the first held-out instance the run evaluates)."""
    views: Tuple[int, ...] = (0,)
    """Its source views (the encoder's input)."""
    image: Optional[Path] = None
    """An image file used in place of the first source view (posed like that view)."""
    cameras: Tuple[int, ...] = (0, 10, 20, 30, 40)
    """Views of the instance the surface is rendered from (indices modulo its number of views)."""
    resolution: int = 0
    """Render size (0: the run's training resolution)."""
    min_accumulation: float = 0.5
    reference: Optional[str] = None
    """An annotated instance whose 3D part labels are transferred to the exported points (nearest feature)."""
    feature: str = "nerf_feature"
    """Feature used for the part transfer and the PCA colours: nerf_feature (internal) | feature (distilled)."""
    figure: bool = True
    """Also write cloud.png (the points from two sides: colour, feature PCA, parts)."""
    out: Path = Path("outputs/export")

    def main(self) -> None:
        from featurenerf_ns.viewer.conditionings import ConditioningCache, chosen_conditioning

        pipeline, step = load_featurenerf(self.load_config)
        dm, model = pipeline.datamanager, pipeline.model
        cat = dm.cat
        conds = ConditioningCache(dm, model)
        cond = chosen_conditioning(conds, self.instance, self.views, self.image, "export")
        inst, views = cond.instance, cond.views
        names = model.feature_names()
        model.resolve_feature(self.feature, "export")
        nv = len(cat.instance(inst).poses)
        res = self.resolution or dm.instance(inst).hw[0]
        cams = [view_camera(cat, inst, v % nv, res) for v in self.cameras]
        with model.precision_override("float32"):
            cloud = feature_cloud(model, cond.sources, cond.maps, cams, res, names, self.min_accumulation)
            info = {
                "config": str(self.load_config),
                "step": step,
                "instance": inst,
                "views": list(views),
                "image": str(self.image) if self.image else None,
                "cameras": [v % nv for v in self.cameras],
                "resolution": res,
                "min_accumulation": self.min_accumulation,
                "reference": self.reference,
            }
            if self.reference:
                ref = self._reference_points(cat, conds, model, views)
                cloud.part = transfer_parts(cloud.features[self.feature], ref[0], ref[1])
                info["transfer_feature"] = self.feature
                agree = agreement_with_gt(cat, inst, cloud.points, cloud.part)
                if agree is not None:
                    info["part_agreement_with_nearest_gt_point"] = agree
        summary = write_cloud(self.out, cloud, self.feature, info)
        if self.figure:
            cloud_figure(self.out / "features.npz", self.out / "cloud.png", f"{cat.category} {inst}, step {step}")
        msg = f"{summary['points']} points, features {summary['features']} -> {self.out}/"
        if "part_agreement_with_nearest_gt_point" in summary:
            agree = summary["part_agreement_with_nearest_gt_point"]
            msg += f"; transferred parts agree with the nearest annotated point on {agree:.1%}"
        CONSOLE.print(f"[green]export:[/green] {msg}")

    def _reference_points(self, cat, conds, model, views) -> Tuple[torch.Tensor, torch.Tensor]:
        """(features (P, D), labels (P,)) of the reference's labelled points under its own source ``views``."""
        assert self.reference is not None
        try:
            ann = cat.shape_annotations(self.reference)
        except (KeyError, FeatureNeRFDataError) as e:
            raise FeatureNeRFDataError(
                f"export: --reference {self.reference}: no part annotations ({e}); pick an annotated instance"
            ) from None
        pts, labels = ann["points"], ann["point_labels"].astype(np.int64)
        keep = np.linspace(0, len(pts) - 1, min(PART_POINTS, len(pts))).round().astype(np.int64)
        nv = len(cat.instance(self.reference).poses)
        cond = conds.get(self.reference, tuple(v % nv for v in views), None)
        with model.conditioned(cond.sources, cond.maps):
            feats = field_point_features(model, torch.from_numpy(pts[keep]).float(), [self.feature])[self.feature]
        return feats.cpu(), torch.from_numpy(labels[keep])


def agreement_with_gt(cat, inst: str, points: torch.Tensor, part: torch.Tensor) -> Optional[float]:
    """Fraction of ``points`` (N, 3) whose transferred label ``part`` (N,) equals the label of the nearest annotated
    surface point of ``inst`` (uses ground truth: a check of the transfer; None without annotations)."""
    try:
        ann = cat.shape_annotations(inst)
    except (KeyError, FeatureNeRFDataError):
        return None
    idx, _ = nn_match(points.float(), torch.from_numpy(ann["points"]).float(), metric="euclidean")
    gt = torch.from_numpy(ann["point_labels"].astype(np.int64))[idx]
    return float((gt == part).float().mean())


def entrypoint() -> None:
    run_command(Export, (FeatureNeRFDataError,))
