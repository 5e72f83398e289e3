"""Checks that stored annotations agree with the stored cameras and with each other, read back from disk through the
dataparser (shared by the procedural benchmark's tests and the rendered-mesh tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence, Tuple

import numpy as np
import torch

from featurenerf_ns.data.dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.data.instances import CategoryData


def outputs(data_dir: Path, split: str):
    return FeatureNeRFDataParserConfig(data=data_dir).setup().get_dataparser_outputs(split)


def project(cameras, idx, pts):
    """Pinhole projection with a nerfstudio camera (OpenGL c2w): pixel (x, y) and optical-axis depth."""
    c2w = cameras.camera_to_worlds[idx].double().numpy()
    pc = (pts - c2w[:3, 3]) @ c2w[:3, :3]
    depth = -pc[:, 2]
    fx, fy = float(cameras.fx[idx]), float(cameras.fy[idx])
    cx, cy = float(cameras.cx[idx]), float(cameras.cy[idx])
    return np.stack([fx * pc[:, 0] / depth + cx, -fy * pc[:, 1] / depth + cy], -1), depth


def instances(data_dir: Path, splits: Sequence[str]) -> Iterator[Tuple[CategoryData, object, str, np.ndarray]]:
    """(category data, dataparser outputs of the split, instance id, its camera indices) of every instance."""
    data = CategoryData(data_dir)
    for split in splits:
        out = outputs(data_dir, split)
        inst_index = out.metadata["instance_index"].numpy()
        for k, inst in enumerate(out.metadata["instance_ids"]):
            yield data, out, inst, np.flatnonzero(inst_index == k)


def check_keypoints_project(data_dir: Path, splits: Sequence[str]) -> int:
    """Every present 3D keypoint projects (nerfstudio camera) onto its stored 2D keypoint within 0.5 px; absent ones
    are NaN and never visible. Returns the number of projections checked."""
    checked = 0
    for data, out, inst, cams in instances(data_dir, splits):
        kp3 = data.shape_annotations(inst)["keypoints"].astype(np.float64)
        views = data.view_annotations(inst)
        present = np.isfinite(kp3).all(1)
        for v, cam_idx in enumerate(cams):
            uv, _ = project(out.cameras, cam_idx, kp3[present])
            err = np.linalg.norm(uv - views["kp2d"][v][present], axis=1)
            assert err.max(initial=0.0) < 0.5, f"{inst} view {v}: reprojection error {err.max():.3f} px"
            checked += len(err)
        assert np.isnan(views["kp2d"][:, ~present]).all()
        assert not views["kp_visible"][:, ~present].any()
    return checked


def check_rays_hit_keypoints(data_dir: Path, splits: Sequence[str]) -> int:
    """nerfstudio's own ray generation at the stored 2D keypoint passes through the 3D keypoint, and the rendered
    depth / part label there match the keypoint (its surface depth, its part in category.json) for > 85% of the
    visible keypoints. Returns the number of visible keypoints."""
    data = CategoryData(data_dir)
    parts_of_kp = {k["name"]: k["part"] for k in data.manifest["keypoints"]}
    kp_part_ids = np.array([data.part_names.index(parts_of_kp[n]) + 1 for n in data.keypoint_names])
    label_hits, depth_hits, n_visible = 0, 0, 0
    for _, out, inst, cams in instances(data_dir, splits):
        kp3 = data.shape_annotations(inst)["keypoints"].astype(np.float64)
        views = data.view_annotations(inst)
        for v, cam_idx in enumerate(cams):
            vis = views["kp_visible"][v]
            if not vis.any():
                continue
            uv = views["kp2d"][v][vis]
            coords = torch.tensor(uv[:, ::-1].copy(), dtype=torch.float32)  # nerfstudio coords are (y, x)
            rays = out.cameras.generate_rays(camera_indices=int(cam_idx), coords=coords)
            o, d = rays.origins.double().numpy(), rays.directions.double().numpy()
            p = kp3[vis]
            t = ((p - o) * d).sum(1)
            dist = np.linalg.norm(o + t[:, None] * d - p, axis=1)
            assert dist.max() < 2e-4, f"{inst} view {v}: ray misses keypoint by {dist.max():.2e}"
            pix = np.floor(uv).astype(int)
            _, depth = project(out.cameras, cam_idx, p)
            stored = views["depth"][v][pix[:, 1], pix[:, 0]].astype(np.float64)
            labels = views["parts"][v][pix[:, 1], pix[:, 0]]
            label_hits += int((labels == kp_part_ids[vis]).sum())
            depth_hits += int((np.abs(stored - depth) < 0.02).sum())
            n_visible += int(vis.sum())
    # Keypoints sit on the surface: the depth at their pixel matches, up to the pixel-centre offset on slanted surfaces.
    assert depth_hits / max(n_visible, 1) > 0.85, f"depth at visible keypoints matches only {depth_hits}/{n_visible}"
    assert label_hits / max(n_visible, 1) > 0.85, f"part label at visible keypoints matches {label_hits}/{n_visible}"
    return n_visible


def check_part_maps(data_dir: Path, splits: Sequence[str], views_per_instance: int = 4) -> Tuple[int, float]:
    """Unproject every foreground pixel with the stored depth; the nearest labelled surface point has the pixel's part
    label for > 95% of the pixels (disagreement only along part boundaries), far above shuffled point labels.
    Returns (foreground pixels checked, agreement)."""
    agree, total, chance = 0, 0, []
    rng = np.random.default_rng(0)
    for data, out, inst, cams in instances(data_dir, splits):
        shape = data.shape_annotations(inst)
        views = data.view_annotations(inst)
        pts = torch.from_numpy(shape["points"].astype(np.float64))
        labels = shape["point_labels"]
        for v, cam_idx in enumerate(cams[:views_per_instance]):
            rays = out.cameras.generate_rays(camera_indices=int(cam_idx))
            depth = views["depth"][v].astype(np.float64)
            fg = depth > 0
            c2w = out.cameras.camera_to_worlds[cam_idx].double()
            o = rays.origins.double().numpy()[fg]
            d = rays.directions.double().numpy()[fg]
            along_axis = -(d @ c2w[:3, 2].numpy())  # cos of the angle to the optical axis
            xyz = o + d * (depth[fg] / along_axis)[:, None]
            nn = torch.cdist(torch.from_numpy(xyz), pts).argmin(1).numpy()
            pix_labels = views["parts"][v][fg]
            agree += int((labels[nn] == pix_labels).sum())
            total += int(fg.sum())
            chance.append(float((rng.permutation(labels)[nn] == pix_labels).mean()))
    ratio = agree / max(total, 1)
    assert ratio > 0.95, f"part maps agree with point labels on only {ratio:.2%} of pixels"
    assert ratio > np.mean(chance) + 0.3  # shuffled point labels do much worse: the check is informative
    return total, ratio
