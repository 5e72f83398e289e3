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
from featurenerf_ns.data.procedural.scene import SceneData, SceneSettings, generate_scene, heldout_frames
from featurenerf_ns.eval.scene_tasks import average_precision, best_threshold, feature_distance, retrieval_map
from featurenerf_ns.model_components.segment_edit import SegmentEdit
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


def test_n3f_tiny_trains_and_ns_eval_reports_the_scene_tasks(scene_root, tmp_path):
    """ns-train n3f-tiny on the tiny scene (random-weight teacher, 6 steps), then ns-eval: every scene metric."""
    out = tmp_path / "runs"
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
    config = next(out.rglob("config.yml"))
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
