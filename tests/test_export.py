"""featurenerf-export: a FeatureNeRF model's surface point cloud with its 3D features (PLY + npz), read back with
Open3D and trimesh; part transfer from a reference; one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_viewer import OBJECT_RADIUS, _sphere_density


def _hazy_ball(module, args, out):
    """Like test_viewer's ball but semi-transparent (density 4: a central ray gathers 1 - e^-2 = 0.86), so pixels
    reach accumulation 0.5 with weights that sum to less than 1: the depth convention matters."""
    inside = (args[0].norm(dim=-1, keepdim=True) < OBJECT_RADIUS).to(out["density"].dtype)
    return {**out, "density": 4.0 * inside}


@pytest.fixture(scope="module")
def pipeline(tiny_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipe, _, _ = eval_setup(tiny_run[0] / "config.yml", test_mode="test")
    pipe.eval()
    hook = pipe.model.field.register_forward_hook(_sphere_density)  # a known surface: the ball's
    yield pipe
    hook.remove()


def test_cloud_points_of_a_hazy_ball_lie_inside_it(pipeline):
    from featurenerf_ns.eval.providers import view_camera
    from featurenerf_ns.exporters.feature_cloud import feature_cloud

    dm, model = pipeline.datamanager, pipeline.model
    inst = dm.eval_ids[0]
    hook = model.field.register_forward_hook(_hazy_ball)  # runs after the opaque one: replaces its density
    try:
        sources = dm.sources([dm.instance(inst)], torch.tensor([[0]]))
        cams = [view_camera(dm.cat, inst, v, 24) for v in (0, 5)]
        cloud = feature_cloud(model, sources, None, cams, 24, ("nerf_feature",))
    finally:
        hook.remove()
    r = cloud.points.norm(dim=1)
    assert len(r) > 20 and float(r.max()) < OBJECT_RADIUS + 0.03, float(r.max())  # the expected depth: in the ball


def _export(pipeline, tiny_run, out: Path, monkeypatch, **kw):
    import featurenerf_ns.scripts.export as ex

    monkeypatch.setattr(ex, "load_featurenerf", lambda config: (pipeline, 4))
    args = dict(load_config=tiny_run[0] / "config.yml", resolution=24, cameras=(0, 17), out=out)
    args.update(kw)
    ex.Export(**args).main()
    return json.loads((out / "export.json").read_text())


def test_export_cloud_reads_back_and_matches_the_field(pipeline, tiny_run, tmp_path, monkeypatch):
    import open3d as o3d
    import trimesh

    from featurenerf_ns.eval.providers import field_point_features

    dm = pipeline.datamanager
    inst, ref = dm.eval_ids[0], dm.train_ids[0]
    summary = _export(pipeline, tiny_run, tmp_path / "e", monkeypatch, instance=inst, reference=ref)
    npz = np.load(tmp_path / "e" / "features.npz")
    n = summary["points"]
    assert n == len(npz["points"]) > 100
    # the surface is the ball's: every point within a sample spacing of its sphere
    r = np.linalg.norm(npz["points"], axis=1)
    assert np.abs(r - OBJECT_RADIUS).max() < 0.06, (r.min(), r.max())
    # the PLY: same points and colours in Open3D and trimesh, labels and PCA colours as vertex properties
    pcd = o3d.io.read_point_cloud(str(tmp_path / "e" / "cloud.ply"))
    assert len(pcd.points) == n
    np.testing.assert_allclose(np.asarray(pcd.points), npz["points"], atol=1e-6)
    np.testing.assert_allclose(np.asarray(pcd.colors), np.round(npz["rgb"] * 255) / 255, atol=1e-6)
    tm = trimesh.load(tmp_path / "e" / "cloud.ply")
    assert len(tm.vertices) == n
    props = tm.metadata["_ply_raw"]["vertex"]["data"]
    np.testing.assert_array_equal(props["part"], npz["part"])
    np.testing.assert_array_equal(props["pca_r"], np.round(npz["pca"][:, 0] * 255).astype(np.uint8))
    # features are the field's at the points, under the same conditioning
    cond_sources = dm.sources([dm.instance(inst)], torch.tensor([[0]]))
    with pipeline.model.conditioned(cond_sources), pipeline.model.precision_override("float32"):
        f = field_point_features(pipeline.model, torch.from_numpy(npz["points"][:50]), ["nerf_feature", "feature"])
    np.testing.assert_allclose(npz["nerf_feature"][:50], f["nerf_feature"].numpy(), atol=1e-4)
    np.testing.assert_allclose(npz["feature"][:50], f["feature"].numpy(), atol=1e-4)
    # transferred labels: real labels of the reference, counted in export.json, checked against the nearest GT point
    ref_labels = set(np.unique(dm.cat.shape_annotations(ref)["point_labels"]).tolist())
    assert set(np.unique(npz["part"]).tolist()) <= ref_labels
    assert sum(summary["part_counts"].values()) == n
    assert 0.0 <= summary["part_agreement_with_nearest_gt_point"] <= 1.0
    assert summary["features"]["feature"] == [pipeline.model.feature_dim]


def test_export_with_an_image_and_bad_inputs(pipeline, tiny_run, tmp_path, monkeypatch):
    from PIL import Image

    from featurenerf_ns.data.layout import FeatureNeRFDataError

    dm = pipeline.datamanager
    inst = dm.eval_ids[0]
    jpg = tmp_path / "photo.jpg"  # a render saved as JPEG, no alpha
    Image.open(dm.cat.instance(inst).image_paths[3]).convert("RGB").save(jpg)
    s = _export(pipeline, tiny_run, tmp_path / "img", monkeypatch, instance=inst, image=jpg)
    assert s["image"] == str(jpg) and s["points"] > 0 and s["part_counts"] == {}
    with pytest.raises(FeatureNeRFDataError, match="not a readable image"):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not an image")
        _export(pipeline, tiny_run, tmp_path / "x", monkeypatch, instance=inst, image=bad)
    with pytest.raises(FeatureNeRFDataError, match="no such instance"):
        _export(pipeline, tiny_run, tmp_path / "x", monkeypatch, instance="nope")
    with pytest.raises(FeatureNeRFDataError, match="--feature"):
        _export(pipeline, tiny_run, tmp_path / "x", monkeypatch, instance=inst, feature="rgb")


def test_export_cli_missing_config_is_one_line(tmp_path):
    exe = Path(sys.executable).parent / "featurenerf-export"
    r = subprocess.run([str(exe), "--load-config", str(tmp_path / "none.yml")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "config not found" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
