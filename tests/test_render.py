"""featurenerf-render (orbit and viewer camera paths, a chosen conditioning) and nerfstudio's ns-render path: a model
rendered without any conditioning shows the pipeline's default (the first evaluated instance from the eval source
view) instead of failing; a training forward without one still fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nerfstudio.models.base_model import Model
from PIL import Image

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.utils.images import to_uint8


@pytest.fixture(scope="module")
def pipeline(tiny_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipe, _, _ = eval_setup(tiny_run[0] / "config.yml", test_mode="test")
    pipe.eval()
    return pipe


@pytest.fixture
def render_cli(pipeline, monkeypatch):
    import featurenerf_ns.scripts.render as rd

    monkeypatch.setattr(rd, "load_featurenerf", lambda config: (pipeline, 4))
    return rd


def _read(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_orbit_frames_are_the_models_renders_of_the_chosen_conditioning(pipeline, render_cli, tiny_run, tmp_path):
    from featurenerf_ns.cameras import pinhole_camera
    from featurenerf_ns.viewer.conditionings import ConditioningCache
    from featurenerf_ns.viewer.trajectory import orbit_poses

    dm, model = pipeline.datamanager, pipeline.model
    inst = dm.cat.ids("train")[1]
    out = tmp_path / "orbit"
    render_cli.Orbit(load_config=tiny_run[0] / "config.yml", instance=inst, source_views=(2,), frames=3, out=out).main()
    info = json.loads((out / "render.json").read_text())
    assert info["instance"] == inst and info["source_views"] == [2] and info["frames"] == 3
    for name in ("rgb", "depth", "feature_pca", "nerf_feature_pca"):
        assert sorted(p.name for p in (out / "frames" / name).iterdir()) == ["00000.png", "00001.png", "00002.png"]
    with Image.open(out / "render.gif") as im:
        assert im.n_frames == 3 and im.width > 5 * im.height // 2  # source view + 4 outputs side by side
    # frame 1 is the model's render of the second orbit camera, conditioned on the instance's view 2
    rec = dm.cat.instance(inst)
    R = dm.instance(inst).hw[0]
    c2w = orbit_poses(rec.poses, 3, 30.0)[1]
    cond = ConditioningCache(dm, model).get(inst, (2,), None)
    with torch.no_grad(), model.conditioned(cond.sources, cond.maps), model.precision_override("float32"):
        want = Model.get_outputs_for_camera(model, pinhole_camera(c2w, rec.focal * R / rec.width, (R, R)))["rgb"]
    np.testing.assert_array_equal(_read(out / "frames" / "rgb" / "00001.png"), to_uint8(want.numpy()))
    # the orbit keeps the distance of the instance's own cameras
    dist = np.linalg.norm(c2w[:3, 3].numpy())
    assert dist == pytest.approx(float(np.median(np.linalg.norm(rec.poses[:, :3, 3], axis=1))), rel=1e-5)


def test_camera_path_from_the_viewer_and_one_line_errors(pipeline, render_cli, tiny_run, tmp_path):
    from featurenerf_ns.data.procedural.render import look_at, spherical_position

    cams = [
        {"camera_to_world": look_at(spherical_position(a, 0.5, 2.0)).flatten().tolist(), "fov": 45.0, "aspect": 1.3}
        for a in (0.0, 1.0)
    ]
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"render_height": 24, "render_width": 32, "seconds": 2.0, "camera_path": cams}))
    cfg = tiny_run[0] / "config.yml"
    out = tmp_path / "cp"
    render_cli.CameraPath(load_config=cfg, camera_path_filename=path, outputs=("rgb", "accumulation"), out=out).main()
    assert _read(out / "frames" / "rgb" / "00001.png").shape == (24, 32, 3)
    assert json.loads((out / "render.json").read_text())["size"] == [24, 32]

    with pytest.raises(FeatureNeRFDataError, match="camera path not found"):
        render_cli.CameraPath(load_config=cfg, camera_path_filename=tmp_path / "nope.json", out=out).main()
    (tmp_path / "bad.json").write_text('{"camera_path": []}')
    with pytest.raises(FeatureNeRFDataError, match="not a nerfstudio camera path"):
        render_cli.CameraPath(load_config=cfg, camera_path_filename=tmp_path / "bad.json", out=out).main()
    with pytest.raises(FeatureNeRFDataError, match="--instance 'nope': no such instance"):
        render_cli.Orbit(load_config=cfg, instance="nope", out=out).main()
    with pytest.raises(FeatureNeRFDataError, match="--outputs normals: choose from rgb"):
        render_cli.Orbit(load_config=cfg, outputs=("normals",), out=out).main()
    with pytest.raises(FeatureNeRFDataError, match="--frames 0"):
        render_cli.Orbit(load_config=cfg, frames=0, out=out).main()


def test_a_render_without_conditioning_shows_the_pipelines_default(pipeline):
    """What nerfstudio's ns-render does: get_outputs_for_camera on the bare model."""
    from featurenerf_ns.cameras import pinhole_camera
    from featurenerf_ns.eval.providers import view_camera

    dm, model = pipeline.datamanager, pipeline.model
    inst = dm.eval_ids[0]
    c2w, focal = view_camera(dm.cat, inst, 3, 16)
    camera = pinhole_camera(c2w, focal, (16, 16))
    sources, what = pipeline.default_conditioning()
    assert inst in what and sources.images.shape[:2] == (1, 1)
    with torch.no_grad(), model.conditioned(sources):
        want = Model.get_outputs_for_camera(model, camera)["rgb"]
    saved = model._sources
    model._sources = None
    try:
        with torch.no_grad():
            got = Model.get_outputs_for_camera(model, camera)["rgb"]
        torch.testing.assert_close(got, want)
        # a training forward without a conditioning is a bug of the caller: still an error
        model._sources = None
        model.train()
        with pytest.raises(RuntimeError, match="no source views set"):
            model.get_sources()
    finally:
        model.eval()
        model._sources = saved
