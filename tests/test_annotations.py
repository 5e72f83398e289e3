"""The stored annotations agree with the stored cameras and with each other (read back from disk)."""

from __future__ import annotations

import numpy as np
import torch

from featurenerf_ns.data.dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.data.instances import CategoryData


def _outputs(root, split):
    return FeatureNeRFDataParserConfig(data=root / "chair").setup().get_dataparser_outputs(split)


def _project(cameras, idx, pts):
    """Pinhole projection with a nerfstudio camera (OpenGL c2w): pixel (x, y) and optical-axis depth."""
    c2w = cameras.camera_to_worlds[idx].double().numpy()
    pc = (pts - c2w[:3, 3]) @ c2w[:3, :3]
    depth = -pc[:, 2]
    fx, fy = float(cameras.fx[idx]), float(cameras.fy[idx])
    cx, cy = float(cameras.cx[idx]), float(cameras.cy[idx])
    return np.stack([fx * pc[:, 0] / depth + cx, -fy * pc[:, 1] / depth + cy], -1), depth


def test_keypoints_project_onto_stored_2d_keypoints(chair_root):
    data = CategoryData(chair_root, "chair")
    checked = 0
    for split in ("train", "test"):
        out = _outputs(chair_root, split)
        inst_index = out.metadata["instance_index"].numpy()
        for k, inst in enumerate(out.metadata["instance_ids"]):
            kp3 = data.shape_annotations(inst)["keypoints"].astype(np.float64)
            views = data.view_annotations(inst)
            present = np.isfinite(kp3).all(1)
            for v, cam_idx in enumerate(np.flatnonzero(inst_index == k)):
                uv, _ = _project(out.cameras, cam_idx, kp3[present])
                err = np.linalg.norm(uv - views["kp2d"][v][present], axis=1)
                assert err.max() < 0.5, f"{inst} view {v}: reprojection error {err.max():.3f} px"
                checked += len(err)
            assert np.isnan(views["kp2d"][:, ~present]).all()
            assert not views["kp_visible"][:, ~present].any()
    assert checked > 100


def test_nerfstudio_rays_through_2d_keypoints_hit_3d_keypoints(chair_root):
    """nerfstudio's own ray generation at the stored 2D keypoint passes through the 3D keypoint, and the
    rendered depth / part label there match the keypoint for visible keypoints."""
    data = CategoryData(chair_root, "chair")
    out = _outputs(chair_root, "test")
    parts_of_kp = {k["name"]: k["part"] for k in data.manifest["keypoints"]}
    kp_part_ids = np.array([data.part_names.index(parts_of_kp[n]) + 1 for n in data.keypoint_names])
    inst_index = out.metadata["instance_index"].numpy()
    label_hits, depth_hits, n_visible = 0, 0, 0
    for k, inst in enumerate(out.metadata["instance_ids"]):
        kp3 = data.shape_annotations(inst)["keypoints"].astype(np.float64)
        views = data.view_annotations(inst)
        for v, cam_idx in enumerate(np.flatnonzero(inst_index == k)):
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
            _, depth = _project(out.cameras, cam_idx, p)
            stored = views["depth"][v][pix[:, 1], pix[:, 0]].astype(np.float64)
            labels = views["parts"][v][pix[:, 1], pix[:, 0]]
            label_hits += int((labels == kp_part_ids[vis]).sum())
            depth_hits += int((np.abs(stored - depth) < 0.02).sum())
            n_visible += int(vis.sum())
    assert n_visible > 50
    # Keypoints sit on the surface: the depth at their pixel matches, up to the pixel-centre offset on slanted surfaces.
    assert depth_hits / n_visible > 0.85, f"depth at visible keypoints matches only {depth_hits / n_visible:.2%}"
    assert label_hits / n_visible > 0.85, f"part label at visible keypoints matches only {label_hits / n_visible:.2%}"


def test_part_maps_agree_with_labelled_points(chair_root):
    """Unproject every foreground pixel with the stored depth; the nearest labelled surface point has the
    pixel's part label for the large majority of pixels (disagreement only along part boundaries)."""
    data = CategoryData(chair_root, "chair")
    out = _outputs(chair_root, "test")
    inst_index = out.metadata["instance_index"].numpy()
    agree, total, chance = 0, 0, []
    rng = np.random.default_rng(0)
    for k, inst in enumerate(out.metadata["instance_ids"]):
        shape = data.shape_annotations(inst)
        views = data.view_annotations(inst)
        pts = torch.from_numpy(shape["points"].astype(np.float64))
        labels = shape["point_labels"]
        for v, cam_idx in enumerate(np.flatnonzero(inst_index == k)[:4]):
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
    ratio = agree / total
    assert total > 1000
    assert ratio > 0.95, f"part maps agree with point labels on only {ratio:.2%} of pixels"
    assert ratio > np.mean(chance) + 0.3  # shuffled point labels do much worse: the check is informative
