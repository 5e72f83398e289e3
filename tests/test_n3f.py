"""N3F: the embedded scene, the frame-set teacher cache, scene metrics, segment edits and a tiny ns-train/ns-eval."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _runs import BIN, _env

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.procedural.scene import SceneSettings, generate_scene, heldout_frames
from featurenerf_ns.data.procedural.scene_data import SceneData
from featurenerf_ns.eval.scene_tasks import average_precision, retrieval_map
from featurenerf_ns.model_components.segment_edit import SegmentEdit, best_threshold, feature_distance
from featurenerf_ns.teachers import TeacherSpec
from featurenerf_ns.teachers.cache import FrameSet, build_cache, open_cache

TINY = SceneSettings(resolution=32, num_views=12, heldout_every=6, supersample=1, num_points=128)


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    return generate_scene(tmp_path_factory.mktemp("scene") / "scene", TINY)


def test_scene_is_complete_consistent_and_deterministic(scene_root, tmp_path):
    scene = SceneData.load(scene_root)
    n = scene.num_objects
    assert n == len(TINY.objects) and scene.categories.count("chair") == 2  # two of one category
    meta = json.loads((scene_root / "transforms.json").read_text())
    train, held = set(meta["train_filenames"]), set(meta["val_filenames"])
    assert not train & held and len(train | held) == len(meta["frames"]) == TINY.num_views
    assert len(held) == len(heldout_frames(TINY)) == 2
    ann = scene.frames()
    inst, amodal = ann["instance"], ann["amodal"]
    assert inst.shape == (12, 32, 32) and amodal.shape == (12, n, 32, 32)
    assert set(np.unique(inst)) <= set(range(n + 2)) and (inst == n + 1).any()  # objects + platform
    for k in range(n):
        visible = inst == k + 1
        assert not (visible & ~amodal[:, k]).any()  # the visible region lies inside the amodal silhouette
    assert ((ann["depth"] > 0) == (inst > 0)).all()
    surf = scene.surface()
    assert np.bincount(surf["point_object"]).tolist() == [TINY.num_points] * (n + 1)
    for k in range(n):
        for f in scene.heldout:
            assert scene.edit_path("remove", k, f).is_file() and scene.edit_path("extract", k, f).is_file()
    again = generate_scene(tmp_path / "again", TINY)
    for rel in ("images/frame_00005.png", "annotations/frames.npz", "annotations/objects.npz", "transforms.json"):
        assert (again / rel).read_bytes() == (scene_root / rel).read_bytes(), rel
    with pytest.raises(FeatureNeRFDataError, match="--overwrite"):
        generate_scene(tmp_path / "again", SceneSettings(resolution=32, num_views=12, seed=1))
    assert not list(tmp_path.glob(".*staging*"))


def test_scene_settings_errors_are_one_line():
    with pytest.raises(FeatureNeRFDataError, match="unknown categories"):
        SceneSettings(objects=("chair", "sofa")).check()
    with pytest.raises(FeatureNeRFDataError, match="heldout_every"):
        SceneSettings(num_views=4, heldout_every=6).check()


def test_average_precision_and_retrieval_map():
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True]))
    assert ap == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision(torch.tensor([0.1]), torch.tensor([False])))
    rng = np.random.default_rng(0)
    instance = rng.integers(0, 4, size=(4, 16, 16)).astype(np.uint8)  # 3 objects + background
    oracle = {f: torch.nn.functional.one_hot(torch.from_numpy(instance[f]).long(), 4).float() for f in range(4)}
    m, count = retrieval_map(lambda f: oracle[f], instance, 3, [0, 1], [2, 3], min_pixels=5)
    assert m == pytest.approx(100.0) and count == 12
    noise = {f: torch.randn(16, 16, 8, generator=torch.Generator().manual_seed(f)) for f in range(4)}
    m_noise, _ = retrieval_map(lambda f: noise[f], instance, 3, [0, 1], [2, 3], min_pixels=5)
    assert m_noise < 50.0  # chance level is the positive fraction (~25%)


def test_threshold_and_segment_edit():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    q = torch.tensor([1.0, 0.0])
    d = feature_distance(feats, q)
    assert d[0] == pytest.approx(0.0, abs=1e-6) and d[3] == pytest.approx(2.0)
    tau = best_threshold(d, torch.tensor([True, True, False, False]))
    assert d[1] <= tau < d[2]
    remove, extract = SegmentEdit(q, tau, "remove"), SegmentEdit(q, tau, "extract")
    assert remove.density_scale(feats)[:, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert (remove.density_scale(feats) + extract.density_scale(feats) == 1).all()
    with pytest.raises(ValueError, match="remove or extract"):
        SegmentEdit(q, tau, "erase")  # type: ignore[arg-type]


def test_frame_set_cache_fits_pca_on_train_frames_and_records_normalisation(scene_root, tmp_path):
    scene = SceneData.load(scene_root)
    frames = FrameSet(
        scene_root,
        {"train": [scene.image_path(f) for f in scene.train], "eval": [scene.image_path(f) for f in scene.heldout]},
        pca_frames=[0, 3, 6],
    )
    teacher = TeacherSpec(weights="random", input_size=56).setup()
    cache_dir = tmp_path / "cache"
    groups = ["train", "eval"]
    r = build_cache(frames, teacher, groups, cache_dir, pca_dim=8, pca_views=3, quiet=True, l2_normalize=True)
    assert r.built == ["train", "eval"]
    cache = open_cache(frames, teacher, ["train", "eval"], cache_dir, pca_dim=8, build=False, l2_normalize=True)
    assert cache.identity["l2_normalize"] is True and cache.dim == 8
    assert cache.features("eval").shape == (2, 8, 4, 4) and cache.features("train").shape[0] == 10
    again = build_cache(frames, teacher, ["train", "eval"], cache_dir, pca_dim=8, pca_views=3, quiet=True)
    assert again.rebuilt_reason and "l2_normalize" in again.rebuilt_reason  # a changed recipe never reuses


@pytest.fixture(scope="module")
def trained_config(scene_root, tmp_path_factory) -> Path:
    """ns-train n3f-tiny on the tiny scene (random-weight teacher, 6 steps): the run's config.yml."""
    out = tmp_path_factory.mktemp("runs")
    train = [
        str(BIN / "ns-train"), "n3f-tiny", "--data", str(scene_root), "--output-dir", str(out),
        "--timestamp", "t", "--max-num-iterations", "6", "--steps-per-eval-batch", "3", "--steps-per-eval-image", "4",
        "--steps-per-save", "100", "--vis", "tensorboard",
        "--pipeline.datamanager.teacher.weights", "random", "--pipeline.datamanager.teacher.input-size", "56",
        "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.model.feature-start-step", "2",
        "--pipeline.scene-tasks.query-frames", "2", "--pipeline.scene-tasks.train-galleries", "2",
        "--pipeline.scene-tasks.heldout-galleries", "2", "--pipeline.scene-tasks.edit-frames", "1",
        "--pipeline.scene-tasks.min-pixels", "4",
    ]  # fmt: skip
    r = subprocess.run(train, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return next(out.rglob("config.yml"))


def test_n3f_tiny_trains_and_ns_eval_reports_the_scene_tasks(trained_config, tmp_path):
    """ns-eval of the trained tiny run prints every scene metric; featurenerf-scene report writes table + figure."""
    config = trained_config
    res = tmp_path / "eval.json"
    r = subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(res)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(res.read_text())["results"]
    for key in (
        "scene/retrieval/teacher2d_heldout_map",
        "scene/retrieval/n3f_heldout_map",
        "scene/retrieval/n3f_train_map",
        "scene/segmentation3d/iou",
        "scene/editing/remove_psnr",
        "scene/editing/extract_psnr",
        "scene/editing/extract_empty_psnr",
        "scene/amodal/amodal_iou",
        "feature_cosine",
        "psnr",
    ):
        assert key in m and math.isfinite(m[key]), key
    assert 0.0 <= m["scene/retrieval/n3f_heldout_map"] <= 100.0
    report = tmp_path / "report"
    r = subprocess.run(
        [str(BIN / "featurenerf-scene"), "report", "--load-config", str(config), "--out", str(report)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (report / "figure.png").stat().st_size > 1000 and "retrieval mAP" in (report / "results.md").read_text()


@pytest.fixture(scope="module")
def pipeline(trained_config):
    from nerfstudio.utils.eval_utils import eval_setup

    _, p, _, _ = eval_setup(trained_config, test_mode="test")
    p.eval()
    return p


def test_export_cli_writes_ply_npz_and_mesh_that_open3d_reads(trained_config, pipeline, tmp_path):
    """featurenerf-scene export: PLY point count / colours as in the npz, npz features = the field at the points,
    segment.ply = the segment's points; one-line errors for a bad frame and a missing selection."""
    import open3d as o3d

    out = tmp_path / "export"
    cmd = [
        str(BIN / "featurenerf-scene"), "export", "--load-config", str(trained_config), "--out", str(out),
        "--frame", "1", "--box", "0", "0", "32", "32", "--num-frames", "2", "--scale", "1.0",
        "--min-accumulation", "0.0", "--mesh-resolution", "16", "--mesh-level", "0.001", "--tau", "0.8",
        "--tau-sigma", "0.0",  # the 5-step model's density is low: every voxel may join the cleaned segment
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "export.json").read_text())
    arrays = np.load(out / "points.npz")
    assert summary["points"] == 2 * 32 * 32 == len(arrays["points"])  # every pixel of 2 frames (min accumulation 0)
    cloud = o3d.io.read_point_cloud(str(out / "points.ply"))
    assert len(cloud.points) == summary["points"]
    np.testing.assert_allclose(np.asarray(cloud.points), arrays["points"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(cloud.colors), np.round(arrays["rgb"] * 255) / 255, atol=1e-6)
    seg = o3d.io.read_point_cloud(str(out / "segment.ply"))
    assert len(seg.points) == summary["segment_points"] == int(arrays["segment"].sum())
    # default --clean: the segment is the points inside the cleaned voxels, stored in the npz to re-apply
    from featurenerf_ns.model_components.segment_edit import SegmentVolume

    vol = SegmentVolume(*(torch.from_numpy(arrays[k]) for k in ("segment_box_lo", "segment_box_hi", "segment_voxels")))
    assert summary["segment"].startswith("cleaned on a (64, 64, 64) grid") and summary["segment_points"] > 0
    assert np.array_equal(arrays["segment"], vol.contains(torch.from_numpy(arrays["points_model"])).numpy())
    feats, _ = pipeline.model.query(torch.from_numpy(arrays["points_model"][:50]))
    np.testing.assert_allclose(arrays["feature"][:50], feats.numpy(), atol=1e-5)
    from featurenerf_ns.cameras import model_to_data

    T, sc = torch.from_numpy(arrays["dataparser_transform"]), float(arrays["dataparser_scale"])
    back = model_to_data(torch.from_numpy(arrays["points_model"]), T, sc).numpy()
    np.testing.assert_allclose(back, arrays["points"], atol=1e-5)
    if isinstance(summary["mesh"], dict):
        mesh = o3d.io.read_triangle_mesh(str(out / "segment_mesh.ply"))
        assert len(mesh.vertices) == summary["mesh"]["vertices"] > 0
    else:
        assert summary["mesh"].startswith("none")
    bad = subprocess.run(cmd[:6] + ["--frame", "99", "--box", "0", "0", "4", "4"], capture_output=True, text=True,
                         env=_env(), timeout=600)  # fmt: skip
    assert bad.returncode == 2 and "out of range" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    bad = subprocess.run(cmd[:6], capture_output=True, text=True, env=_env(), timeout=600)
    assert bad.returncode == 2 and "exactly one of --box" in bad.stdout + bad.stderr


def test_viewer_panel_queries_segments_edits_and_exports(pipeline, tmp_path):
    """The N3F viewer panel without a browser: stable output keys, box and ray queries, the segment overlay and
    similarity outputs, the edit toggles reaching the density, export."""
    from featurenerf_ns.viewer.n3f_panel import N3FViewerPanel

    panel = pipeline.n3f
    assert isinstance(panel, N3FViewerPanel) and not panel.handles()  # not a viewer render thread
    cam = pipeline.datamanager.train_dataset.cameras[0:1]
    before = panel.render(cam)
    assert {"rgb", "feature_pca", "similarity", "segment"} <= set(before) and "feature" not in before
    assert float(before["similarity"].abs().sum()) == 0.0  # no query yet
    assert panel._last is not None
    surface = bool((panel._last["accumulation"] >= 0.5).any())
    assert panel.query_box((0.0, 0.0), (1.0, 1.0)) == surface  # a box over no rendered surface is refused
    if surface:
        assert panel.a3_query.value.startswith("box") and 0.05 <= float(panel.b1_tau.value) <= 1.5
        # the box's surface pixels, back-projected with the render's depth, seed the cleaned segment
        assert panel._seeds is not None and len(panel._seeds) == int((panel._last["accumulation"] >= 0.5).sum())
    panel._set_query(pipeline.model.get_outputs_for_camera(cam)["feature"][16, 16], "centre pixel")
    after = panel.render(cam)
    assert set(after) == set(before)  # the viewer's output list does not change
    assert after["similarity"].shape == (32, 32, 1) and float(after["similarity"].max()) > 0.99  # the query pixel
    panel.b1_tau.value = 2.0  # everything inside: the whole frame is tinted
    tinted = panel.render(cam)["segment"]
    assert not torch.allclose(tinted, after["rgb"])
    panel.b4_clean.value = False  # the raw per-sample segment
    panel.b3_edit.value = "extract"  # extract everything: same density as unedited
    full = panel.render(cam)
    panel.b3_edit.value = "remove"  # remove everything: nothing left
    empty = panel.render(cam)
    assert float(empty["accumulation"].max()) == 0.0
    assert torch.allclose(full["accumulation"], after["accumulation"], atol=1e-5)
    panel.b4_clean.value = True  # cleaned on a grid: computed once per (query, tau), applied by position
    edit = panel.edit()
    assert edit is not None and edit.volume is not None and panel.edit().volume is edit.volume
    panel.b3_edit.value = "none"
    out = panel.export(tmp_path / "viewer_export")
    assert out is not None and json.loads((out / "export.json").read_text())["selection"] == "centre pixel"
    npz = np.load(out / "points.npz")  # the export is the cleaned segment the edit uses
    assert np.array_equal(npz["segment_voxels"], edit.volume.occupied.numpy())
    assert np.array_equal(npz["segment"], edit.volume.contains(torch.from_numpy(npz["points_model"])).numpy())
    panel.b4_clean.value = False
    raw = panel.export(tmp_path / "viewer_export_raw")
    assert raw is not None
    npz = np.load(raw / "points.npz")  # without cleaning: the per-point feature rule, no voxels stored
    assert "segment_voxels" not in npz and np.array_equal(npz["segment"], npz["distance"] <= 2.0)
    # a click: the ray through the camera's centre pixel gives that pixel's feature (or reports the background)
    bundle = cam.generate_rays(camera_indices=0, keep_shape=True)
    hit = panel.query_ray(bundle.origins[16, 16], bundle.directions[16, 16], "ray")
    assert hit == (float(after["accumulation"][16, 16, 0]) >= 0.5)  # the same ray as the render's pixel
    if hit:
        feat = pipeline.model.get_outputs_for_camera(cam)["feature"][16, 16]
        assert torch.allclose(panel._query, feat.float(), atol=1e-4) and panel.a3_query.value == "ray"


def test_n3f_viewer_in_chromium(trained_config, tmp_path):
    """ns-viewer on the tiny n3f run, driven in Chromium: stable feature_pca, a click handled (query set, or the
    background message), every output and edit rendered and shot."""
    import os

    from featurenerf_ns.scripts.viewer_shots import ViewerShotsError, check_browser, run_n3f_check

    try:
        check_browser()
    except ViewerShotsError as e:
        if os.environ.get("FEATURENERF_REQUIRE_BROWSER"):
            raise
        pytest.skip(str(e))
    res = run_n3f_check(trained_config, tmp_path / "shots", log=tmp_path / "ns-viewer.log")
    assert res.identical and res.feature_pca_std > 0.0
    text = (tmp_path / "ns-viewer.log").read_text()
    assert res.query_set or "clicked background" in text
    names = {p.name for p in res.screenshots}
    assert {"n3f_feature_pca.png", "n3f_similarity.png", "n3f_segment.png", "n3f_remove.png"} <= names
    assert all(p.stat().st_size > 5_000 for p in res.screenshots)


def test_segment_volume_grows_through_the_object_and_drops_lookalikes():
    """Hysteresis joins a part whose features are only near the query to the selected matter; a look-alike object
    elsewhere (not connected, holding no seed) is dropped; free space never joins; contains() reads the grid."""
    from featurenerf_ns.model_components.segment_edit import SegmentCleanup, SegmentVolume, segment_volume

    lo, hi = torch.zeros(3), torch.ones(3)
    q = torch.tensor([1.0, 0.0])

    def query_fn(x):
        a = (x[:, 0] < 0.3) & (x[:, 1] < 0.5)  # object A: left block, the query's features ...
        a_part = (x[:, 0] >= 0.3) & (x[:, 0] < 0.5) & (x[:, 1] < 0.5)  # ... and a part of A further from q
        b = (x[:, 0] > 0.8) & (x[:, 1] > 0.8)  # a look-alike object B far away
        feats = torch.zeros(len(x), 2)
        feats[:, 1] = 1.0  # free space: orthogonal to q
        feats[a | b] = q
        feats[a_part] = torch.tensor([0.95, 0.3])  # distance 0.31 from q
        sigma = (a | a_part | b).float() * 10.0
        return feats, sigma

    seeds = torch.tensor([[0.1, 0.1, 0.5]])
    tight = segment_volume(query_fn, lo, hi, q, 0.2, 1.0, seeds, SegmentCleanup(20, grow=1.0, dilate=0))
    grown = segment_volume(query_fn, lo, hi, q, 0.2, 1.0, seeds, SegmentCleanup(20, grow=2.5, dilate=0))
    noseed = segment_volume(query_fn, lo, hi, q, 0.2, 1.0, None, SegmentCleanup(20, grow=1.0, dilate=0))
    probe = torch.tensor([[0.1, 0.2, 0.5], [0.4, 0.2, 0.5], [0.9, 0.9, 0.5], [0.6, 0.7, 0.5], [1.5, 0.1, 0.5]])
    assert tight.contains(probe).tolist() == [True, False, False, False, False]
    assert grown.contains(probe).tolist() == [True, True, False, False, False]
    assert noseed.contains(probe)[0] and not noseed.contains(probe)[2]  # A has more strong voxels than B
    # a seed more than a voxel away from every component (a click's surface point): the nearest component, not none
    near_b = segment_volume(
        query_fn, lo, hi, q, 0.2, 1.0, torch.tensor([[0.6, 0.62, 0.5]]), SegmentCleanup(20, grow=1.0, dilate=0)
    )
    assert near_b.contains(probe).tolist() == [False, False, True, False, False]
    full = SegmentVolume(lo, hi, torch.ones(4, 4, 4, dtype=torch.bool))
    edit = SegmentEdit(q, 0.2, "remove", full)
    assert edit.density_scale(torch.zeros(2, 2), probe[:2]).sum() == 0
    with pytest.raises(ValueError, match="sample positions"):
        edit.density_scale(torch.zeros(2, 2))


def test_edits_reach_the_proposal_densities(pipeline):
    """An edit also masks the proposal networks' densities (otherwise the removed surface keeps the samples)."""
    from featurenerf_ns.model_components.segment_edit import SegmentVolume

    model = pipeline.model
    lo, hi = model.scene_box.aabb[0].float(), model.scene_box.aabb[1].float()
    x = lo + torch.rand(3, 7, 3, generator=torch.Generator().manual_seed(0)) * (hi - lo)
    with torch.no_grad():
        q = model.feature_field(x)[0, 0]
        raw = [fn(x) for fn in model.density_fns]
        everything = SegmentVolume(lo, hi, torch.ones(2, 2, 2, dtype=torch.bool))
        for edit, expect_zero in (
            (SegmentEdit(q, 2.0, "remove"), True),
            (SegmentEdit(q, 2.0, "extract"), False),
            (SegmentEdit(q, 0.0, "remove", everything), True),
        ):
            with model.editing(edit):
                edited = [model._edited(fn)(x) for fn in model.density_fns]
            for r, e in zip(raw, edited):
                assert torch.equal(e, torch.zeros_like(r)) if expect_zero else torch.allclose(e, r)
