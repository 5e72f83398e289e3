"""Feature smoothing (issue 17): regulariser math on patches, mask sources (superpixels, SAM from the package's
modules, ground truth, cache), the smoothness metric, patch batches with segments, and the study command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _runs import BIN, _env

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.mask_sources import MaskSourceConfig, frame_labels, paint_masks, sam_segmenter
from featurenerf_ns.data.procedural.scene import SceneSettings, generate_scene
from featurenerf_ns.data.procedural.scene_data import SceneData
from featurenerf_ns.eval.smoothness import SmoothnessTally, pair_stats
from featurenerf_ns.model_components.feature_smoothing import (
    FeatureSmoothingConfig,
    as_patches,
    bilateral_target,
    segment_blur_target,
    smoothing_loss,
)

P = 8
TINY = SceneSettings(resolution=32, num_views=12, heldout_every=6, supersample=1, num_points=128)


def rays(fp: torch.Tensor) -> torch.Tensor:
    """(n, D, p, p) -> (R, D) in the patch sampler's order (patch, row, column)."""
    return fp.permute(0, 2, 3, 1).reshape(-1, fp.shape[1])


def halves(n: int = 2, D: int = 3) -> tuple:
    """Two constant halves (left 0, right 1) per patch: features (n, D, p, p) and segments (n, p, p)."""
    seg = (torch.arange(P)[None, :] >= P // 2).long().expand(P, P)[None].expand(n, P, P).contiguous()
    return seg[:, None].float().expand(n, D, P, P).contiguous(), seg


def test_tv_is_the_mean_channel_summed_jump_over_adjacent_pairs():
    fp, _ = halves(n=2, D=3)
    cfg = FeatureSmoothingConfig(kind="tv", tv_weight=1.0)
    # one jump of 1 per row and channel; pairs per patch: 2 p (p - 1)
    assert float(smoothing_loss(rays(fp), cfg, P)) == pytest.approx(2 * 3 * P / (2 * 2 * P * (P - 1)))
    assert float(smoothing_loss(torch.ones(2 * P * P, 3), cfg, P)) == 0.0


def test_edge_aware_tv_ignores_jumps_at_colour_edges_and_equals_tv_on_flat_colour():
    fp, seg = halves(n=2, D=3)
    cfg = FeatureSmoothingConfig(kind="tv", tv_weight=1.0, tv_guide="rgb", tv_sigma_color=0.1)
    flat = torch.full((2 * P * P, 3), 0.5)
    plain = FeatureSmoothingConfig(kind="tv", tv_weight=1.0)
    assert float(smoothing_loss(rays(fp), cfg, P, rgb=flat)) == pytest.approx(float(smoothing_loss(rays(fp), plain, P)))
    edge = rays(seg[:, None].float().expand(2, 3, P, P).contiguous())  # the colour jumps where the feature does
    assert float(smoothing_loss(rays(fp), cfg, P, rgb=edge)) < 1e-6
    with pytest.raises(ValueError, match="rendered rgb"):
        smoothing_loss(rays(fp), cfg, P)
    # colour + depth: a depth edge where the colour is flat stops the smoothing too; flat depth changes nothing
    cfg_d = FeatureSmoothingConfig(kind="tv", tv_weight=1.0, tv_guide="rgb+depth", tv_sigma_depth=0.03)
    depth_edge = 1.0 + rays(seg[:, None].float())  # depth 1 on the left half, 2 on the right
    assert float(smoothing_loss(rays(fp), cfg_d, P, rgb=flat, depth=depth_edge)) < 1e-6
    flat_depth = torch.full((2 * P * P, 1), 1.5)
    assert float(smoothing_loss(rays(fp), cfg_d, P, rgb=flat, depth=flat_depth)) == pytest.approx(
        float(smoothing_loss(rays(fp), plain, P))
    )
    with pytest.raises(ValueError, match="rendered depth"):
        smoothing_loss(rays(fp), cfg_d, P, rgb=flat)


def test_segment_blur_averages_inside_segments_and_never_across():
    fp, seg = halves()
    noisy = fp + 0.1 * torch.randn(fp.shape, generator=torch.Generator().manual_seed(0))
    target = segment_blur_target(noisy, seg, sigma=1.5)
    left, right = seg[:, None].expand_as(fp) == 0, seg[:, None].expand_as(fp) == 1
    assert target[left].max() < 0.5 < target[right].min()  # no value leaks over the boundary
    assert (target - fp).abs().mean() < (noisy - fp).abs().mean() * 0.6  # the noise is averaged down
    cfg = FeatureSmoothingConfig(kind="mask", mask_weight=1.0)
    assert float(smoothing_loss(rays(fp), cfg, P, segments=rays(seg[:, None].float()).long()[:, 0])) == 0.0
    unlabelled = torch.full_like(seg, -1)
    assert torch.equal(segment_blur_target(noisy, unlabelled, 1.5), noisy)  # no segment: left unchanged


def test_bilateral_target_keeps_a_strong_edge_and_smooths_flat_noise():
    fp, _ = halves(n=1, D=3)
    noisy = fp + 0.02 * torch.randn(fp.shape, generator=torch.Generator().manual_seed(1))
    cfg = FeatureSmoothingConfig(kind="bilateral", bilateral_sigma_color=0.3)
    target = bilateral_target(noisy, cfg)
    assert (target - fp).abs().max() < 0.2  # the 0 -> 1 edge (distance 1.7 in 3-d) survives
    assert (target - fp).abs().mean() < (noisy - fp).abs().mean()
    with pytest.raises(ValueError, match="rgb"):
        bilateral_target(noisy, FeatureSmoothingConfig(kind="bilateral", bilateral_guide="rgb"))


def test_gradients_reach_the_features_only_and_shapes_are_checked():
    f = torch.randn(2 * P * P, 4, requires_grad=True)
    for kind, guide in (("tv", "none"), ("tv", "rgb"), ("tv", "rgb+depth"), ("bilateral", "none"), ("mask", "none")):
        seg = torch.randint(0, 3, (2 * P * P,), generator=torch.Generator().manual_seed(2))
        cfg = FeatureSmoothingConfig(kind=kind, tv_guide=guide)  # type: ignore[arg-type]
        loss = smoothing_loss(f, cfg, P, segments=seg, rgb=torch.rand(2 * P * P, 3), depth=torch.rand(2 * P * P, 1) + 1)
        (g,) = torch.autograd.grad(loss, f)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, kind
    with pytest.raises(ValueError, match="whole 8 x 8 patches"):
        as_patches(torch.zeros(100, 4), P)
    with pytest.raises(ValueError, match="mask source"):
        smoothing_loss(f, FeatureSmoothingConfig(kind="mask"), P)


def test_smoothness_metric_inside_objects_and_across_edges():
    inst = torch.zeros(6, 6, dtype=torch.long)
    inst[:, 3:] = 1  # object 1 on the right half, background left
    feat = torch.zeros(6, 6, 2)
    feat[..., 0] = 1.0
    feat[:, 3:, 0], feat[:, 3:, 1] = 0.0, 1.0  # orthogonal features on the object: distance sqrt(2) at the edge
    s = pair_stats(feat, inst)
    assert s["inside_sum"] == 0.0 and s["inside_n"] == 6 * 2 + 5 * 3  # 2 horizontal pairs x 6 rows + 5 x 3 vertical
    assert s["edge_n"] == 6 and s["edge_sum"] == pytest.approx(6 * np.sqrt(2), rel=1e-5)
    t = SmoothnessTally()
    t.add(feat, inst)
    assert t.roughness == 0.0 and t.edge_contrast == pytest.approx(np.sqrt(2), rel=1e-5)
    assert t.edge_contrast_band == pytest.approx(np.sqrt(2), rel=1e-5)  # a clean step: the same
    assert t.edge_contrast_regions == pytest.approx(np.sqrt(2), rel=1e-5) and t.boundary_sharpness == pytest.approx(1)
    with pytest.raises(ValueError, match="instance mask"):
        pair_stats(feat, inst[:5])


def test_edge_contrast_of_window_means_ignores_noise_and_sees_blur():
    """Noise inflates the pixel-pair edge contrast but not the window-mean one; a blur across the boundary lowers
    the window-mean contrast."""
    g = torch.Generator().manual_seed(0)
    inst = torch.zeros(32, 32, dtype=torch.long)
    inst[:, 16:] = 1
    clean = torch.zeros(32, 32, 8)
    clean[:, :16, 0], clean[:, 16:, 1] = 1.0, 1.0  # a sqrt(2) step at the boundary
    noisy = clean + 0.3 * torch.randn(32, 32, 8, generator=g)
    blurred = clean.clone()
    ramp = torch.linspace(0, 1, 8)  # 8 columns of linear blend across the boundary
    blurred[:, 12:20, 0], blurred[:, 12:20, 1] = 1 - ramp, ramp
    tally = {}
    for name, f in (("clean", clean), ("noisy", noisy), ("blurred", blurred)):
        tally[name] = SmoothnessTally()
        tally[name].add(f, inst)
    assert tally["noisy"].roughness > 0.3 and tally["clean"].roughness == 0.0
    assert tally["noisy"].edge_contrast_band == pytest.approx(np.sqrt(2), abs=0.1)
    assert tally["blurred"].edge_contrast_band < 1.0 < tally["clean"].edge_contrast_band
    # blur lowers the sharpness (window step / region step); a uniform contraction of the step does not
    contracted = clean.clone()
    contracted[:, 16:, 0] = 0.5  # the right region moves towards the left one: a smaller step, still at the boundary
    tally["contracted"] = SmoothnessTally()
    tally["contracted"].add(contracted, inst)
    assert tally["contracted"].edge_contrast_regions < tally["clean"].edge_contrast_regions
    assert tally["contracted"].boundary_sharpness == pytest.approx(1.0, abs=1e-5)
    assert tally["blurred"].boundary_sharpness < 0.9


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory) -> Path:
    return generate_scene(tmp_path_factory.mktemp("scene") / "scene", TINY)


def test_mask_sources_superpixel_cache_gt_oracle_and_errors(scene_root, tmp_path, monkeypatch):
    scene = SceneData.load(scene_root)
    frames = scene.train[:3]
    names = [f"images/frame_{f:05d}.png" for f in frames]
    from PIL import Image

    def image(i):
        return np.asarray(Image.open(scene.image_path(frames[i])).convert("RGB"))

    gt = frame_labels(MaskSourceConfig(kind="gt"), scene_root, names, image)
    assert gt.shape == (3, 32, 32) and np.array_equal(gt, scene.frames()["instance"][frames].astype(np.int32))
    cfg = MaskSourceConfig(kind="superpixel", cache_dir=tmp_path / "masks")
    sp = frame_labels(cfg, scene_root, names, image)
    assert sp.shape == (3, 32, 32) and sp.dtype == np.int32 and sp.min() >= 0 and len(np.unique(sp[0])) > 1
    (cached,) = list((tmp_path / "masks").glob("masks_superpixel_*.npz"))
    import featurenerf_ns.data.mask_sources as ms

    monkeypatch.setattr(ms, "superpixel_segmenter", lambda c: pytest.fail("recomputed although cached"))
    assert np.array_equal(frame_labels(cfg, scene_root, names, image), sp)  # read back, not recomputed
    with pytest.raises(FeatureNeRFDataError, match="needs a generated scene"):
        frame_labels(MaskSourceConfig(kind="gt"), tmp_path, names, image)
    with pytest.raises(FeatureNeRFDataError, match="sam-checkpoint"):
        sam_segmenter(MaskSourceConfig(kind="sam", sam_checkpoint=tmp_path / "missing.pth"))
    assert cached.is_file()


def test_sam_paints_non_overlapping_masks_and_runs_a_tiny_model_built_from_the_package():
    pytest.importorskip("segment_anything")
    a = np.zeros((8, 8), bool)
    a[:, :6] = True
    b = np.zeros((8, 8), bool)
    b[2:4, 2:4] = True
    tiny = np.zeros((8, 8), bool)
    tiny[7, 7] = True
    labels = paint_masks([{"segmentation": b, "area": 4}, {"segmentation": a, "area": 48},
                          {"segmentation": tiny, "area": 1}], (8, 8), min_area=2)  # fmt: skip
    assert (labels[2:4, 2:4] == 1).all() and (labels[a & ~b] == 0).all()  # the smaller mask keeps its pixels
    assert labels[7, 7] == -1 and (labels[:, 6:7] == -1).all()  # dropped (too small) and uncovered
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    sam = Sam(
        ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=32),
        PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4),
        MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64,
                                                                        num_heads=2), iou_head_hidden_dim=32),
    )  # fmt: skip
    cfg = MaskSourceConfig(
        kind="sam", sam_points_per_side=4, sam_pred_iou_thresh=0.0, sam_stability_thresh=0.0, min_area=1
    )
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    out = sam_segmenter(cfg, sam_model=sam)(image)
    assert out.shape == (32, 32) and out.dtype == np.int32 and out.min() >= -1


def test_study_trains_evaluates_resumes_and_writes_table_and_grid(scene_root, tmp_path):
    """featurenerf-scene smooth-study, two variants x 6 steps (random teacher): eval files, table, grid; a second
    call evaluates nothing again."""
    out = tmp_path / "study"
    cmd = [
        str(BIN / "featurenerf-scene"), "smooth-study", "--scene", str(scene_root), "--out", str(out),
        "--variants", "naive", "mask-gt",
        "--train-args=--max-num-iterations 6 --steps-per-eval-batch 3 --steps-per-eval-image 4 --steps-per-save 100 "
        "--pipeline.datamanager.teacher.weights random --pipeline.datamanager.teacher.input-size 56 "
        "--pipeline.datamanager.train-num-rays-per-batch 256 --pipeline.model.feature-start-step 2",
        "--tasks.query-frames", "2", "--tasks.train-galleries", "2", "--tasks.heldout-galleries", "2",
        "--tasks.edit-frames", "1", "--tasks.min-pixels", "4",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("naive", "mask-gt"):
        ev = json.loads((out / "eval" / f"{name}.json").read_text())
        assert ev["step"] == 5 and np.isfinite(ev["step_s"]) and ev["step_s_count"] >= 1
        m = ev["results"]
        for key in ("scene/smoothness/n3f_roughness", "scene/smoothness/n3f_edge_contrast", "scene/heldout/psnr",
                    "scene/segmentation3d/iou", "scene/editing/remove_psnr"):  # fmt: skip
            assert key in m and np.isfinite(m[key]), key
        assert "--pipeline.datamanager.patch-size 8" in ev["command"]
        assert "--pipeline.datamanager.patch-fraction 0.34" in ev["command"]  # the study's mixed batch
    assert "--pipeline.datamanager.masks.kind gt" in json.loads((out / "eval" / "mask-gt.json").read_text())["command"]
    md = (out / "results.md").read_text()
    assert "| naive distillation |" in md and "(oracle)" in md and "teacher-2D" in md
    assert "3D seg IoU (raw per-sample rule)" in md and "edge contrast of window means" in md
    assert (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0 and again.stdout.count("evaluated already") == 2


def test_smoothing_needs_patches_and_a_mask_source(scene_root, tmp_path):
    base = [
        str(BIN / "ns-train"), "n3f-tiny", "--data", str(scene_root), "--output-dir", str(tmp_path),
        "--max-num-iterations", "1", "--vis", "tensorboard",
        "--pipeline.datamanager.teacher.weights", "random", "--pipeline.datamanager.teacher.input-size", "56",
    ]  # fmt: skip
    r = subprocess.run(base + ["--pipeline.model.smoothing.kind", "tv"], capture_output=True, text=True, env=_env())
    assert r.returncode != 0 and "--pipeline.datamanager.patch-size 8" in r.stderr
    r = subprocess.run(
        base + ["--pipeline.datamanager.patch-size", "8", "--pipeline.model.smoothing.kind", "mask"],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert r.returncode != 0 and "--pipeline.datamanager.masks.kind superpixel" in r.stderr


def test_patch_ray_count_and_mixed_sampler():
    from nerfstudio.data.pixel_samplers import PatchPixelSamplerConfig

    from featurenerf_ns.data.patch_sampling import MixedPatchPixelSampler, patch_ray_count

    assert patch_ray_count(1024, 8, 0.5) == 512 and patch_ray_count(1024, 8, 1.0) == 1024
    assert patch_ray_count(100, 8, 0.5) == 0 and patch_ray_count(1024, 1, 0.5) == 0
    s = MixedPatchPixelSampler(PatchPixelSamplerConfig(patch_size=P), 128, patch_size=P, num_rays_per_batch=300)
    idx = s.sample_method(300, 5, 32, 40)
    assert idx.shape == (300, 3) and s.num_rays_per_batch == 300
    assert (idx[:, 1] < 32).all() and (idx[:, 2] < 40).all() and (idx >= 0).all()
    first = idx[:128].reshape(2, P, P, 3)
    assert (first[:, :, 1:, 2] - first[:, :, :-1, 2] == 1).all()


def test_patch_batches_carry_segments_in_patch_order(scene_root):
    from featurenerf_ns.data.n3f_datamanager import N3FDataManagerConfig
    from featurenerf_ns.method_configs import n3f_tiny_preset
    from featurenerf_ns.teachers import TeacherSpec

    dm_cfg = n3f_tiny_preset("n3f-tiny").pipeline.datamanager
    assert isinstance(dm_cfg, N3FDataManagerConfig)
    dm_cfg.data = scene_root
    dm_cfg.patch_size = P
    dm_cfg.train_num_rays_per_batch = 256
    dm_cfg.teacher = TeacherSpec(name=dm_cfg.teacher.name, weights="random", input_size=56, pca_dim=8,
                                 mask_background=False)  # fmt: skip
    dm_cfg.masks = MaskSourceConfig(kind="gt")
    dm = dm_cfg.setup(device="cpu", test_mode="val")
    _, batch = dm.next_train(0)
    idx = batch["indices"]
    assert idx.shape == (256, 3) and batch["feature"].shape == (256, 8) and batch["segment"].shape == (256,)
    assert dm.train_patch_rays == 128  # patch fraction 0.5: two 8 x 8 patches first, then 128 uniform rays
    patches = idx[:128].reshape(2, P, P, 3)
    assert (patches[..., 0] == patches[:, :1, :1, 0]).all()  # one image per patch
    assert (patches[:, 1:, :, 1] - patches[:, :-1, :, 1] == 1).all()  # rows, then columns, adjacent
    assert (patches[:, :, 1:, 2] - patches[:, :, :-1, 2] == 1).all()
    inst = SceneData.load(scene_root).frames()["instance"]
    frame = [int(Path(p).stem[6:]) for p in dm.train_dataset.image_filenames]
    expect = torch.tensor([int(inst[frame[i], r, c]) for i, r, c in idx.tolist()])
    assert torch.equal(batch["segment"].cpu(), expect)

    # segment pooling: target = (1 - a) teacher + a (teacher's mean over the ray's segment in its frame)
    dm_cfg.segment_pooling = 0.5
    pooled_dm = dm_cfg.setup(device="cpu", test_mode="val")
    _, pb = pooled_dm.next_train(0)
    pidx, seg = pb["indices"], pb["segment"]
    plain = pooled_dm._features_at("train", pidx, pooled_dm._hw(pooled_dm.train_dataset, 0))
    i, k = int(pidx[0, 0]), int(seg[0])
    fmap = torch.from_numpy(pooled_dm.teacher_cache.features("train")[i].astype("float32"))[None]
    up = torch.nn.functional.interpolate(fmap, size=tuple(inst.shape[1:]), mode="bilinear", align_corners=False)[0]
    mean_k = up[:, pooled_dm.segments[i] == k].mean(1)  # the segment's mean, computed here independently
    assert torch.allclose(pooled_dm.segment_means[i, k], mean_k, atol=1e-5)
    assert torch.allclose(pb["feature"][0], 0.5 * plain[0] + 0.5 * mean_k, atol=1e-5)
    assert torch.allclose(pb["feature"], 0.5 * plain + 0.5 * pooled_dm.segment_means[pidx[:, 0], seg], atol=1e-5)
    dm_cfg.masks = MaskSourceConfig(kind="none")
    with pytest.raises(ValueError, match="segment_pooling needs segments"):
        dm_cfg.setup(device="cpu", test_mode="val")


def test_study_table_averages_seeds_and_marks_missing_values(tmp_path):
    from featurenerf_ns.eval.smooth_study import load_evaluations, study_table

    (tmp_path / "eval").mkdir()

    def write(run: str, rough: float, iou: float, step_s: float, sharp=None) -> None:
        res = {"scene/smoothness/n3f_roughness": rough, "scene/segmentation3d/iou": iou}
        if sharp is not None:
            res["scene/smoothness/n3f_boundary_sharpness"] = sharp
        (tmp_path / "eval" / f"{run}.json").write_text(json.dumps({"step_s": step_s, "results": res}))

    write("naive", 0.15, 60.0, 0.2)
    write("naive_seed1", 0.17, 80.0, 0.2, sharp=0.5)
    write("naive_seed10", 0.16, 70.0, 0.2, sharp=0.5)
    write("tv", 0.10, 70.0, 0.3)
    write("tv-rgb_seed1", 0.5, 0.0, 1.0)  # another variant's name must not be taken for a seed of "tv"
    evals = load_evaluations(tmp_path, ["naive", "tv", "bilateral"])
    assert [len(v) for v in evals.values()] == [3, 1] and list(evals) == ["naive", "tv"]
    assert [ev["results"]["scene/segmentation3d/iou"] for ev in evals["naive"]] == [60.0, 80.0, 70.0]  # seed order
    md = study_table(evals, {"naive": "naive distillation", "tv": "TV"})
    naive_row = next(line for line in md.splitlines() if line.startswith("| naive distillation | 3 |"))
    assert "0.160 ± 0.008" in naive_row and "70.0 ± 8.2" in naive_row and "0.500 ± 0.000 (2 of 3)" in naive_row
    tv_row = next(line for line in md.splitlines() if line.startswith("| TV | 1 |"))
    assert "0.300 (1.50x)" in tv_row and "0.100" in tv_row
