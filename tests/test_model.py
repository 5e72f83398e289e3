"""The FeatureNeRF field, model and data manager on CPU: shapes, camera convention, rendering, one training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurenerf_ns.cameras import camera_rays, project, world_to_source
from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.data.dataparser import FeatureNeRFDataParserConfig
from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.encoders.image_encoder import EncoderConfig
from featurenerf_ns.fields.featurenerf_field import FeatureNeRFField, FieldConfig, SourceViews
from featurenerf_ns.model_components.map_sampling import bilinear_gather, sample_map
from featurenerf_ns.models.featurenerf import FeatureNeRFModelConfig
from featurenerf_ns.teachers import TeacherSpec

SMALL_FIELD = FieldConfig(hidden_dim=32, num_blocks=3, num_conditioned_blocks=2, combine_layer=2)


def _sources(B=2, N=2, H=16, W=16):
    torch.manual_seed(0)
    c2w = torch.eye(4).repeat(B, N, 1, 1)
    c2w[..., 2, 3] = 1.3  # camera on +z looking at the origin
    return SourceViews(torch.rand(B, N, 3, H, W), c2w, torch.full((B, N), 20.0), torch.full((B, N, 2), 8.0))


def test_field_head_shapes_and_view_pooling():
    field = FeatureNeRFField(SMALL_FIELD, image_feature_dim=7, feature_dim=11, predict_coords=True)
    src = _sources()
    maps = torch.randn(4, 7, 8, 8)
    out = field(
        torch.randn(2, 10, 3) * 0.2, torch.nn.functional.normalize(torch.randn(2, 10, 3), dim=-1), maps, src, (16, 16)
    )
    assert out["density"].shape == (2, 10, 1) and (out["density"] >= 0).all()
    assert out["rgb"].shape == (2, 10, 3) and ((out["rgb"] > 0) & (out["rgb"] < 1)).all()
    assert out["feature"].shape == (2, 10, 11) and out["coords"].shape == (2, 10, 3)
    assert out["nerf_feature"].shape == (2, 10, 32)
    # two identical source views pool to the same result as one
    one = SourceViews(src.images[:, :1], src.c2w[:, :1], src.focal[:, :1], src.center[:, :1])
    pts, dirs = torch.randn(2, 5, 3) * 0.2, torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    m1 = torch.randn(2, 7, 8, 8)
    dup = SourceViews(
        one.images.repeat(1, 2, 1, 1, 1), one.c2w.repeat(1, 2, 1, 1), one.focal.repeat(1, 2), one.center.repeat(1, 2, 1)
    )
    a = field(pts, dirs, m1, one, (16, 16))
    b = field(pts, dirs, m1.repeat_interleave(2, 0), dup, (16, 16))
    assert torch.allclose(a["feature"], b["feature"], atol=1e-5)
    no_coord = FeatureNeRFField(SMALL_FIELD, 7, 0, predict_coords=False)(pts, dirs, m1, one, (16, 16))
    assert no_coord["feature"].shape == (2, 5, 0) and no_coord["coords"].shape == (2, 5, 0)


def test_projection_matches_dataparser_cameras_on_the_object_surface(chair_root):
    """Back-project a foreground pixel with its rendered depth through nerfstudio's camera rays (dataparser
    convention), then project the 3D point with the field's code: it must land on the same pixel centre, and
    sampling the image there returns that pixel's colour."""
    from featurenerf_ns.data.dataparser import FeatureNeRFDataParser

    dp = FeatureNeRFDataParser(FeatureNeRFDataParserConfig(data=chair_root / "chair", max_instances=1))
    outs = dp.get_dataparser_outputs("train")
    cat = CategoryData(chair_root, "chair")
    inst = outs.metadata["instance_ids"][0]
    ann = cat.view_annotations(inst)
    view = 2
    ys, xs = np.nonzero(ann["depth"][view] > 0)
    pick = np.linspace(0, len(ys) - 1, 25).astype(int)
    u, v = xs[pick], ys[pick]
    cams = outs.cameras
    coords = torch.from_numpy(np.stack([v, u], 1)).float() + 0.5  # (row, col) pixel centres
    rays = cams.generate_rays(camera_indices=torch.full((len(u), 1), view), coords=coords)
    c2w = cams.camera_to_worlds[view]
    # optical-axis depth -> distance along the unit ray
    cos = -(rays.directions @ c2w[:3, 2])
    pts = rays.origins + rays.directions * (torch.from_numpy(ann["depth"][view][v, u]).float() / cos)[:, None]
    full = torch.eye(4)
    full[:3] = c2w
    uv = project(
        world_to_source(pts[None], full[None, None]),
        cams.fx[view].view(1, 1),
        torch.tensor([[[cams.cx[view, 0], cams.cy[view, 0]]]]),
    )[0, 0]
    assert torch.allclose(uv, torch.from_numpy(np.stack([u, v], 1)).float() + 0.5, atol=1e-2)
    # our own ray generator agrees with nerfstudio's
    o, d = camera_rays(
        full[None].repeat(len(u), 1, 1),
        float(cams.fx[view]),
        (int(cams.height[view]), int(cams.width[view])),
        torch.from_numpy(u).float(),
        torch.from_numpy(v).float(),
    )
    assert torch.allclose(d, rays.directions, atol=1e-5) and torch.allclose(o, rays.origins, atol=1e-6)
    from featurenerf_ns.data.instances import load_rgba

    img = torch.from_numpy(load_rgba(cat.instance(inst).image_paths[view])).permute(2, 0, 1)[None]
    sampled = sample_map(img, uv[None], img.shape[-2:])[0]
    assert torch.allclose(sampled, img[0, :, v, u].T, atol=1e-4)


def test_bilinear_gather_equals_grid_sample():
    torch.manual_seed(0)
    maps = torch.randn(3, 5, 4, 6)
    view = torch.tensor([0, 2, 1, 1, 0])
    uv = torch.rand(5, 2) * torch.tensor([12.0, 8.0])
    ref = torch.stack([sample_map(maps[v][None], uv[i][None, None], (8, 12))[0, 0] for i, v in enumerate(view)])
    assert torch.allclose(bilinear_gather(maps, view, uv, (8, 12)), ref, atol=1e-5)


def test_bilinear_gather_reads_a_read_only_memory_map_like_a_tensor(tmp_path):
    """The teacher cache is a read-only float16 memory map: gathered through a zero-copy view, equal to the tensor."""
    torch.manual_seed(1)
    maps = torch.randn(4, 7, 5, 6).half()
    np.save(tmp_path / "m.npy", maps.numpy())
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    view = torch.tensor([3, 0, 2, 2, 1, 3])
    uv = torch.rand(6, 2) * torch.tensor([12.0, 10.0])
    out = bilinear_gather(mm, view, uv, (10, 12))
    assert out.dtype == torch.float32 and out.shape == (6, 7)
    assert torch.equal(out, bilinear_gather(maps, view, uv, (10, 12)))


def test_packed_linear_equals_linear_and_follows_weight_updates():
    """The bf16 inference path (oneDNN packed weights, fused bias + ReLU) gives F.linear's bf16 result; an in-place
    weight update (an optimiser step) invalidates the packed copy; with autograd or in float32 it is F.linear."""
    from featurenerf_ns.model_components.packed_linear import fast_path_applies, linear_act

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    x = torch.randn(3, 70, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = linear_act(lin, x, relu=True)
        ref = torch.relu(torch.nn.functional.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()))
        assert fast.shape == (3, 70, 48) and fast.dtype == torch.bfloat16
        assert torch.allclose(fast.float(), ref.float(), atol=2e-2, rtol=1e-2)
        lin.weight.mul_(-1.0)  # in place, as an optimiser does
        again = linear_act(lin, x)
        ref2 = torch.nn.functional.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16())
        assert torch.allclose(again.float(), ref2.float(), atol=2e-2, rtol=1e-2)
    assert not fast_path_applies(x)  # autograd on: the plain layer, so training gets gradients
    y = linear_act(lin, x, relu=True)
    assert y.requires_grad and torch.equal(y, torch.relu(lin(x)))


def test_packed_linear_follows_a_fused_adam_step():
    """Fused Adam updates parameters without bumping their version counters (checked here, so a torch that starts
    bumping them is noticed): the packed bf16 copy must still be rebuilt after the step, or renders during training
    (learning-curve callbacks, the viewer) use stale weights."""
    from featurenerf_ns.model_components.packed_linear import fast_path_applies, linear_act

    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(50, 32)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, fused=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if not fast_path_applies(x):
            pytest.skip("no oneDNN bf16 packed linear on this CPU / torch")
        before = linear_act(lin, x)
    version = lin.weight._version
    lin(x).square().sum().backward()
    opt.step()
    assert lin.weight._version == version  # the premise: fused Adam does not bump _version
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        after = linear_act(lin, x)
        ref = torch.nn.functional.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16())
    assert not torch.allclose(after.float(), before.float(), atol=1e-2)
    assert torch.allclose(after.float(), ref.float(), atol=2e-2, rtol=1e-2)


@pytest.fixture(scope="module")
def pipeline_parts(chair_root, tmp_path_factory):
    """A tiny data manager (random-weight teacher, cache in a temp dir) and model."""
    from featurenerf_ns.data.datamanager import FeatureNeRFDataManager

    cache = tmp_path_factory.mktemp("tcache")
    dm_cfg = FeatureNeRFDataManagerConfig(
        dataparser=FeatureNeRFDataParserConfig(data=chair_root / "chair", max_instances=3),
        objects_per_batch=2,
        rays_per_object=16,
        image_size=32,
        eval_num_instances=1,
        eval_target_views=(3,),
        teacher=TeacherSpec(weights="random", input_size=56, layer=2, cache_dir=cache),
    )
    dm = FeatureNeRFDataManager(dm_cfg)
    model_cfg = FeatureNeRFModelConfig(
        encoder=EncoderConfig(backbone="resnet34", weights="random", num_layers=2),
        field=SMALL_FIELD,
        num_coarse_samples=8,
        num_importance_samples=4,
        num_depth_samples=4,
        precision="float32",
    )  # the exact-algebra checks below; bf16 has its own test
    model = model_cfg.setup(
        scene_box=dm.train_dataset.scene_box,
        num_train_data=len(dm.train_dataset),
        metadata=dm.train_dataset.metadata,
        device="cpu",
        teacher_feature_dim=dm.teacher_feature_dim,
    )
    return dm, model


def test_datamanager_batches(pipeline_parts):
    dm, model = pipeline_parts
    bundle, batch = dm.next_train(0)
    assert bundle.origins.shape == (32, 3) and batch["image"].shape == (32, 3)
    assert batch["teacher_feature"].shape == (32, dm.teacher_cache.dim) == (32, 384)
    assert torch.equal(bundle.camera_indices[:, 0], torch.arange(2).repeat_interleave(16))
    assert batch["source"].images.shape == (2, 1, 3, 32, 32)
    with pytest.raises(RuntimeError, match="no source views"):  # the data manager does not condition the model
        model.get_sources()
    b2, batch2 = dm.next_train(0)
    assert torch.equal(b2.origins, bundle.origins) and torch.equal(batch2["teacher_feature"], batch["teacher_feature"])
    assert not torch.equal(dm.next_train(1)[0].origins, bundle.origins)
    cam, eb = dm.eval_image(dm.eval_ids[0], 3)
    assert eb["image"].shape == (32, 32, 3) and int(cam.width) == 32


def test_rank_sharding_is_disjoint(chair_root, tmp_path):
    from featurenerf_ns.data.datamanager import FeatureNeRFDataManager

    shards = []
    for rank in range(2):
        cfg = FeatureNeRFDataManagerConfig(dataparser=FeatureNeRFDataParserConfig(data=chair_root / "chair"))
        shards.append(set(FeatureNeRFDataManager(cfg, world_size=2, local_rank=rank, distill=False).rank_ids))
    assert shards[0].isdisjoint(shards[1]) and len(shards[0] | shards[1]) == len(
        CategoryData(chair_root, "chair").ids("train")
    )


def test_rendered_feature_is_the_weighted_sum_of_sample_features(pipeline_parts):
    dm, model = pipeline_parts
    bundle, batch = dm.next_train(3)
    model.eval()
    seen = []
    real = model._field

    def spy(ray_samples, B, src, maps, **kw):
        out = real(ray_samples, B, src, maps, **kw)
        seen.append((ray_samples, B, src, maps, out))
        return out

    model._field = spy
    try:
        with torch.no_grad(), model.conditioned(batch["source"]):
            out = model(bundle)
    finally:
        model._field = real
        model.train()
    (s_c, B, src, maps, f_c), (s_n, _, _, _, f_n) = seen[0], seen[-1]  # coarse pass; the fine pass's new points
    assert len(seen) == 2 and "feature" not in f_n  # coarse outputs reused; the head is applied once per ray
    with torch.no_grad():  # every sample's own distilled feature
        f_c = real(s_c, B, src, maps, per_sample_features=True)
        f_n = real(s_n, B, src, maps, per_sample_features=True)
    t_c = ((s_c.frustums.starts + s_c.frustums.ends) / 2)[..., 0]
    t_n = s_n.frustums.starts[..., 0]
    assert torch.equal(s_n.frustums.starts, s_n.frustums.ends)  # points, evaluated once each
    t, order = torch.sort(torch.cat([t_c, t_n], 1), 1)
    f = {k: torch.cat([f_c[k], f_n[k]], 1).gather(1, order[..., None].expand(-1, -1, f_c[k].shape[-1])) for k in f_c}
    mids = (t[:, 1:] + t[:, :-1]) / 2  # bins: the Voronoi cells of the merged points on [near, far]
    starts = torch.cat([s_c.frustums.starts[:, :1, 0], mids], 1)
    ends = torch.cat([mids, s_c.frustums.ends[:, -1:, 0]], 1)
    delta = ends - starts
    alpha = 1 - torch.exp(-f["density"][..., 0] * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], 1), 1)
    w = (alpha * trans)[..., None]
    assert torch.allclose(out["feature"], (w * f["feature"]).sum(1), atol=1e-4)
    assert torch.allclose(out["nerf_feature"], (w * f["nerf_feature"]).sum(1), atol=1e-4)
    assert torch.equal(f["nerf_feature_relu"], torch.relu(f["nerf_feature"]))  # the heads' input, per sample
    assert torch.allclose(out["nerf_feature_relu"], (w * f["nerf_feature_relu"]).sum(1), atol=1e-4)
    assert torch.allclose(out["rgb"], (w * f["rgb"]).sum(1), atol=1e-4)  # black background
    assert out["feature"].shape == (32, 384) and out["depth"].shape == (32, 1)


@pytest.mark.parametrize("coord_loss", ["per_sample", "ray_mean"])
def test_one_training_step_decreases_the_losses(pipeline_parts, coord_loss):
    """On a fixed batch (same rays, same random samples): one gradient step on the total loss lowers the total; one
    step on each loss term alone lowers that term (so every loss reaches the parameters it should). At
    initialisation the coordinate loss (~1) dominates and its step can raise the RGB loss a little, so the total
    step is not required to lower every term."""
    import copy

    dm, model0 = pipeline_parts
    bundle, batch = dm.next_train(5)

    def losses(model):
        torch.manual_seed(123)  # same stratified/importance samples in both evaluations
        with model.conditioned(batch["source"]):
            return model.get_loss_dict(model(bundle), batch)

    terms = ["rgb_loss_coarse", "rgb_loss_fine", "distill_loss", "coord_loss"]
    for target in [None] + terms:
        model = copy.deepcopy(model0)
        model.config.coord_loss = coord_loss
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        before = losses(model)
        assert set(before) == set(terms)
        loss = sum(before.values()) if target is None else before[target]
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            after = losses(model)
        if target is None:
            assert sum(after.values()) < sum(before.values())
        else:
            assert after[target] < before[target], (target, float(before[target]), float(after[target]))


@pytest.mark.parametrize("fine_reuses_coarse", [True, False])
def test_training_forward_without_the_coordinate_head(pipeline_parts, fine_reuses_coarse):
    """The -nocoord ablation (predict_coords off): a training forward on both fine-pass paths gives the RGB and
    distillation losses, no coordinate loss or residual, and gradients reach the field."""
    import copy

    dm, model0 = pipeline_parts
    bundle, batch = dm.next_train(6)
    cfg = copy.deepcopy(model0.config)
    cfg.predict_coords, cfg.coord_weight, cfg.fine_reuses_coarse = False, 0.0, fine_reuses_coarse
    model = cfg.setup(
        scene_box=dm.train_dataset.scene_box,
        num_train_data=len(dm.train_dataset),
        metadata=dm.train_dataset.metadata,
        device="cpu",
        teacher_feature_dim=dm.teacher_feature_dim,
    )
    model.train()
    with model.conditioned(batch["source"]):
        out = model(bundle)
        loss = model.get_loss_dict(out, batch)
    assert set(loss) == {"rgb_loss_coarse", "rgb_loss_fine", "distill_loss"}
    assert "coords" not in out and "coord_residual" not in out
    sum(loss.values()).backward()
    assert all(torch.isfinite(v).all() for v in loss.values())
    assert model.field.head.weight.grad is not None and model.field.head.weight.grad.abs().sum() > 0


def test_training_forward_skips_unread_outputs_with_the_same_losses(pipeline_parts):
    """A training forward with autograd neither casts nor composites what no loss reads (the internal feature, the
    composited coordinates); the losses equal those of the same forward under no_grad, which renders everything."""
    dm, model = pipeline_parts
    bundle, batch = dm.next_train(7)
    model.train()
    runs = {}
    for grad in (True, False):
        torch.manual_seed(321)  # same random samples in both forwards
        with torch.set_grad_enabled(grad), model.conditioned(batch["source"]):
            out = model(bundle)
            runs[grad] = (out, model.get_loss_dict(out, batch))
    (out_g, loss_g), (out_n, loss_n) = runs[True], runs[False]
    assert "nerf_feature" not in out_g and "coords" not in out_g
    assert {"nerf_feature", "nerf_feature_relu", "coords"} <= set(out_n)
    assert set(loss_g) == set(loss_n)
    for k in loss_g:
        torch.testing.assert_close(loss_g[k].detach(), loss_n[k], rtol=0, atol=0)


def test_camera_render_of_one_object(pipeline_parts):
    dm, model = pipeline_parts
    cam, batch = dm.eval_image(dm.eval_ids[0], 3)
    with torch.no_grad(), model.evaluating(), model.conditioned(batch["source"]):
        out = model.get_outputs_for_camera(cam)
    assert (
        out["rgb"].shape == (32, 32, 3)
        and out["feature"].shape == (32, 32, 384)
        and out["nerf_feature"].shape == (32, 32, 32)
    )
    metrics, images = model.get_image_metrics_and_images(out, batch)
    assert {"psnr", "ssim"} <= set(metrics) and images["img"].shape == (32, 64, 3)


def test_conditioning_on_feature_maps_equals_per_point_linear_layers():
    """The field applies its per-block image-feature linears to the feature map before sampling (cheaper); with
    bilinear weights summing to 1 this equals sampling first and applying the linears per point."""
    field = FeatureNeRFField(SMALL_FIELD, image_feature_dim=7, feature_dim=3)
    src = _sources(B=1, N=1)
    maps = torch.randn(1, 7, 8, 8)
    pts = torch.randn(1, 6, 3) * 0.2
    uv = project(world_to_source(pts, src.c2w), src.focal, src.center)
    z = sample_map(maps, uv[:, 0], (16, 16))
    per_point = [lin(z) for lin in field.lin_z]
    w = torch.cat([lin.weight for lin in field.lin_z])[:, :, None, None]
    b = torch.cat([lin.bias for lin in field.lin_z])
    on_map = sample_map(torch.nn.functional.conv2d(maps, w, b), uv[:, 0], (16, 16)).split(32, dim=-1)
    for a, c in zip(per_point, on_map):
        assert torch.allclose(a, c, atol=1e-5)


def test_two_field_passes_share_one_map_projection_with_the_same_gradients():
    """Coarse and fine passes with the same maps reuse one projection (also under autograd); the gradients equal
    those of two separate projections (maps cloned: a cache miss); a no-grad projection is never reused with grad,
    and an optimiser's in-place weight update invalidates it."""
    import copy

    torch.manual_seed(0)
    src = _sources(B=1, N=1)
    p1, p2 = torch.randn(1, 6, 3) * 0.2, torch.randn(1, 5, 3) * 0.2
    d1, d2 = torch.nn.functional.normalize(p1, dim=-1), torch.nn.functional.normalize(p2, dim=-1)
    shared = FeatureNeRFField(SMALL_FIELD, image_feature_dim=7, feature_dim=3)
    separate = copy.deepcopy(shared)
    grads = []
    for field, share in ((shared, True), (separate, False)):
        maps = torch.randn(1, 7, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        second = maps if share else maps.clone()
        loss = field(p1, d1, maps, src, (16, 16))["density"].sum() + field(p2, d2, second, src, (16, 16))["rgb"].sum()
        loss.backward()
        grads.append((maps.grad, field.lin_z[0].weight.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5) and a.abs().sum() > 0
    maps = torch.randn(1, 7, 8, 8)
    assert shared._zmaps(maps) is shared._zmaps(maps)  # one projection per maps tensor
    with torch.no_grad():
        z0 = shared._zmaps(maps)
        assert z0 is shared._zmaps(maps) and not z0.requires_grad
    assert shared._zmaps(maps).requires_grad  # grad mode is part of the key
    with torch.no_grad():
        shared.lin_z[0].weight.add_(1.0)  # in place, as an optimiser step
        assert not torch.equal(shared._zmaps(maps), z0)
    # forward + backward repeated with one maps tensor (a benchmark loop): the projection's graph is freed by the
    # first backward, so the second forward projects again, with the same gradients
    maps = torch.randn(1, 7, 8, 8).requires_grad_()
    g = []
    for _ in range(2):
        maps.grad = None
        shared(p1, d1, maps, src, (16, 16))["density"].sum().backward()
        g.append(maps.grad.clone())
    assert torch.equal(g[0], g[1]) and g[0].abs().sum() > 0


def test_precision_resolution_and_bf16_forward(pipeline_parts):
    """auto -> bf16 on bf16 CPUs (else float32); a bf16 forward keeps float32 outputs (compositing and losses in
    float32) close to the float32 forward; the thread-local override (the viewer's) wins over the config."""
    import copy

    from featurenerf_ns.utils.precision import cpu_has_fast_bf16, resolve_precision

    assert resolve_precision("auto", "cpu") == ("bfloat16" if cpu_has_fast_bf16() else "float32")
    assert resolve_precision("float32", "cpu") == "float32"
    with pytest.raises(ValueError, match="precision 'half' unknown"):
        resolve_precision("half", "cpu")
    dm, model0 = pipeline_parts
    bundle, batch = dm.next_train(7)
    outs = {}
    for p in ("float32", "bfloat16"):
        model = copy.deepcopy(model0)
        model.config.precision = p
        torch.manual_seed(1)
        with model.conditioned(batch["source"]):
            outs[p] = model(bundle)
        assert model.active_precision() == p
        loss = sum(model.get_loss_dict(outs[p], batch).values())
        loss.backward()
        assert all(v.dtype == torch.float32 for v in outs[p].values() if torch.is_tensor(v))
        assert all(q.grad is None or torch.isfinite(q.grad).all() for q in model.parameters())
        with model.precision_override("float32"):
            assert model.active_precision() == "float32"
        assert model.active_precision() == p
    for k in ("rgb", "depth", "accumulation"):
        assert (outs["float32"][k] - outs["bfloat16"][k]).abs().max() < 0.05, k


def test_foreground_ray_fraction(chair_root):
    from featurenerf_ns.data.datamanager import FeatureNeRFDataManager

    cfg = FeatureNeRFDataManagerConfig(
        dataparser=FeatureNeRFDataParserConfig(data=chair_root / "chair", max_instances=2),
        objects_per_batch=2,
        rays_per_object=64,
        image_size=32,
        bbox_sampling_steps=0,
        foreground_ray_fraction=0.5,
    )
    dm = FeatureNeRFDataManager(cfg, distill=False)
    fg_frac = []
    for step in range(4):
        bundle, batch = dm.next_train(step)
        # a ray hits the foreground iff its pixel's alpha > 127: check through the image colour's source, the alpha
        for b, inst in enumerate(batch["instance_ids"]):
            it = dm.instance(inst)
            sl = slice(b * 64, (b + 1) * 64)
            o, d = bundle.origins[sl], bundle.directions[sl]
            # recover (view, u, v) by matching the ray to the instance's cameras
            cams = it.c2w[:, :3, 3]
            view = torch.cdist(o, cams).argmin(1)
            dl = torch.einsum("rji,rj->ri", it.c2w[view, :3, :3], d)  # direction in the camera frame
            u = (dl[:, 0] / -dl[:, 2] * it.focal + 16 - 0.5).round().long()
            v = (-dl[:, 1] / -dl[:, 2] * it.focal + 16 - 0.5).round().long()
            alpha = it.rgba[view, 3, v, u]
            assert (alpha[:32] > 127).all()  # the first half: foreground pixels only
            fg_frac.append(float((alpha[32:] > 127).float().mean()))
    assert np.mean(fg_frac) < 0.5  # the rest uniform over the image: mostly background


def test_eta_follows_resume_and_time_budget():
    """nerfstudio's ETA = (writer max_iter - step) x mean step time; the pipeline points max_iter at the real end."""
    from types import SimpleNamespace

    from nerfstudio.utils import writer

    from featurenerf_ns.pipelines.callbacks import _fix_eta

    trainer = SimpleNamespace(_start_step=1000, config=SimpleNamespace(max_num_iterations=500))
    saved = dict(writer.GLOBAL_BUFFER)
    try:
        writer.GLOBAL_BUFFER["events"] = {writer.EventName.ITER_TRAIN_TIME.value: {"avg": 0.5}}
        _fix_eta(trainer, 1200, None)  # resumed at 1000 for 500 more: ends at 1500, not at 500
        assert writer.GLOBAL_BUFFER["max_iter"] == 1500
        _fix_eta(trainer, 1200, 30.0)  # 30 s of budget left at 0.5 s per step: 60 more steps
        assert writer.GLOBAL_BUFFER["max_iter"] == 1260
    finally:
        writer.GLOBAL_BUFFER.clear()
        writer.GLOBAL_BUFFER.update(saved)


def test_patch_rays_and_tv_smoothing_of_the_distilled_feature(chair_root, tmp_path):
    """patch_size 4, 32 rays per object: the first 16 rays of each object's block are one 4 x 4 patch (one view,
    adjacent pixels); the model's TV term is in the loss, scaled like the distillation MSE, and trains."""
    from featurenerf_ns.data.datamanager import FeatureNeRFDataManager
    from featurenerf_ns.model_components.feature_smoothing import FeatureSmoothingConfig

    dm_cfg = FeatureNeRFDataManagerConfig(
        dataparser=FeatureNeRFDataParserConfig(data=chair_root / "chair", max_instances=3),
        objects_per_batch=2, rays_per_object=32, image_size=32, eval_num_instances=1, eval_target_views=(3,),
        teacher=TeacherSpec(weights="random", input_size=56, layer=2, cache_dir=tmp_path / "tc"),
        patch_size=4, patch_fraction=0.5,
    )  # fmt: skip
    dm = FeatureNeRFDataManager(dm_cfg)
    assert dm.patch_rays == 16
    bundle, batch = dm.next_train(0)
    d = bundle.directions.reshape(2, 32, 3)[:, :16].reshape(2, 4, 4, 3)
    step_x = (d[:, :, 1:] - d[:, :, :-1]).norm(dim=-1)  # one pixel apart along rows: (nearly) the same angle
    assert step_x.std() < 0.2 * step_x.mean()
    model_cfg = FeatureNeRFModelConfig(
        encoder=EncoderConfig(backbone="resnet34", weights="random", num_layers=2),
        field=SMALL_FIELD, num_coarse_samples=8, num_importance_samples=4, num_depth_samples=4, precision="float32",
        smoothing=FeatureSmoothingConfig(kind="tv"),
    )  # fmt: skip
    kwargs = dict(
        scene_box=dm.train_dataset.scene_box, num_train_data=len(dm.train_dataset),
        metadata=dm.train_dataset.metadata, device="cpu", teacher_feature_dim=dm.teacher_feature_dim,
    )  # fmt: skip
    with pytest.raises(ValueError, match="patch-size"):
        model_cfg.setup(**kwargs)
    model = model_cfg.setup(patch_size=4, patch_rays=16, rays_per_object=32, **kwargs)
    model.train()
    with model.conditioned(batch["source"]):
        outputs = model(bundle)
    losses = model.get_loss_dict(outputs, batch)
    assert "feature_smooth_loss" in losses and float(losses["feature_smooth_loss"]) > 0
    losses["feature_smooth_loss"].backward()
    grads = [p.grad for p in model.field.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_preset_adam_is_fused_on_cpu_and_matches_the_default_update():
    import featurenerf_ns.method_configs as mc

    torch.manual_seed(0)
    a = torch.nn.Linear(8, 4)
    b = torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused = mc.featurenerf_tiny.config.optimizers["field"]["optimizer"].setup(a.parameters())
    plain = torch.optim.Adam(b.parameters(), lr=fused.defaults["lr"], eps=fused.defaults["eps"])
    assert fused.defaults["fused"] is True
    x, w0 = torch.randn(16, 8), a.weight.detach().clone()
    for _ in range(3):
        for m, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and (a.weight - w0).abs().min() > 1e-4  # every weight moved


def test_preset_schedule_is_constant_unless_asked_and_anneals_in_absolute_steps():
    """Default: factor exactly 1 at every step (the official constant rate); decay-start / decay-end from the
    ns-train command line anneal exponentially to lr_final; a resume from a checkpoint without scheduler state
    continues the schedule at the resumed step, not at 0."""
    from types import SimpleNamespace

    import tyro
    from nerfstudio.engine.callbacks import TrainingCallbackLocation
    from nerfstudio.engine.optimizers import Optimizers

    import featurenerf_ns.method_configs as mc
    from featurenerf_ns.pipelines.callbacks import scheduler_alignment_callback

    cfg = mc.featurenerf_tiny.config
    lin, enc = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = {"field": list(lin.parameters()), "encoder": list(enc.parameters())}
    opts = Optimizers(cfg.optimizers, groups)
    sched = opts.schedulers["field"]
    lambdas = [sched.lr_lambdas[0](s) for s in (0, 1, 5000, 10**6)]
    assert lambdas == [1.0, 1.0, 1.0, 1.0] and opts.optimizers["field"].param_groups[0]["lr"] == 5e-4

    args = ["--optimizers.field.scheduler.decay-start", "100", "--optimizers.field.scheduler.decay-end", "200"]
    parsed = tyro.cli(type(cfg), default=cfg, args=args)
    assert parsed.optimizers["field"]["scheduler"].decay_start == 100
    assert parsed.optimizers["encoder"]["scheduler"].decay_start is None  # each group has its own
    opts = Optimizers(parsed.optimizers, groups)
    f = opts.schedulers["field"].lr_lambdas[0]
    assert f(100) == 1.0 and f(200) == pytest.approx(0.1) and f(150) == pytest.approx(0.1**0.5) and f(500) == f(200)

    # resumed at step 150 from a checkpoint saved without scheduler state: the counter starts at 0 ...
    opt = opts.optimizers["field"]
    assert opts.schedulers["field"].last_epoch == 0
    cb = scheduler_alignment_callback(SimpleNamespace(optimizers=opts))
    cb.run_callback_at_location(150, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    # ... and is put at 150 before the first iteration; later iterations do not move it again
    assert opts.schedulers["field"].last_epoch == 150 and opt.param_groups[0]["lr"] == pytest.approx(5e-4 * 0.1**0.5)
    cb.run_callback_at_location(151, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    assert opts.schedulers["field"].last_epoch == 150
    with pytest.raises(ValueError, match="decay-end"):
        bad = tyro.cli(type(cfg), default=cfg, args=args[:2])
        Optimizers(bad.optimizers, groups)
