"""Teacher registry and interface (random weights: no downloads), the metrics and the teacher-only evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurenerf_ns.eval.metrics import nn_match, part_iou, pck
from featurenerf_ns.model_components.map_sampling import sample_map
from featurenerf_ns.teachers import TEACHERS, TeacherError, make_teacher_config
from featurenerf_ns.teachers.dinov2 import CONFIGS, DinoV2ViT


@pytest.fixture(scope="module")
def dinov2_random():
    return make_teacher_config("dinov2-vits14", weights="random", input_size=112, layer=9, facet="key").setup()


def test_registry_lists_the_three_teachers():
    assert {"dinov2-vits14", "dino-vits8", "diffusion"} <= set(TEACHERS)
    with pytest.raises(TeacherError, match="unknown teacher"):
        make_teacher_config("clip")
    with pytest.raises(TeacherError, match="has no option 'up_block'"):
        make_teacher_config("dinov2-vits14", up_block=2)


def test_dinov2_random_map_shape_stride_and_masking(dinov2_random):
    rgb = torch.rand(3, 3, 128, 128)
    alpha = torch.zeros(3, 1, 128, 128)
    alpha[:, :, 32:96, 32:96] = 1
    fm = dinov2_random.extract(rgb, alpha)
    assert fm.features.shape == (3, 384, 8, 8) and dinov2_random.map_size() == (8, 8)
    assert fm.stride == (16.0, 16.0)
    assert torch.isfinite(fm.features).all()
    # cells entirely outside the alpha box are zero, cells inside are not
    assert fm.features[:, :, 0, 0].abs().max() == 0 and fm.features[:, :, 3, 3].abs().min() >= 0
    assert fm.features[:, :, 3:5, 3:5].abs().sum() > 0
    unmasked = dinov2_random.extract(rgb).features
    assert torch.allclose(unmasked[:, :, 3:5, 3:5], fm.features[:, :, 3:5, 3:5], atol=1e-5)


def test_batching_does_not_change_features():
    rgb = torch.rand(5, 3, 64, 64)
    a = (
        make_teacher_config("dinov2-vits14", weights="random", input_size=56, batch_size=2, precision="float32")
        .setup()
        .extract(rgb)
        .features
    )
    b = (
        make_teacher_config("dinov2-vits14", weights="random", input_size=56, batch_size=8, precision="float32")
        .setup()
        .extract(rgb)
        .features
    )
    assert torch.allclose(a, b, atol=1e-5)


def test_bfloat16_teacher_matches_float32_and_is_recorded():
    """bfloat16 autocast changes the features by about the bf16 rounding, and the identity (what a cache compares)
    records the resolved precision, so a float32 cache is never reused for bfloat16 features or the reverse."""
    torch.manual_seed(0)
    rgb = torch.rand(3, 3, 64, 64)
    t32 = make_teacher_config("dinov2-vits14", weights="random", input_size=56, precision="float32").setup()
    t16 = make_teacher_config("dinov2-vits14", weights="random", input_size=56, precision="bfloat16").setup()
    a, b = t32.extract(rgb).features, t16.extract(rgb).features
    assert b.dtype == torch.float32 and a.shape == b.shape
    cos = torch.nn.functional.cosine_similarity(a.flatten(2), b.flatten(2), dim=1)
    assert cos.min() > 0.99 and not torch.equal(a, b)
    assert t32.identity()["precision"] == "float32" and t16.identity()["precision"] == "bfloat16"
    auto = make_teacher_config("dinov2-vits14", weights="random", input_size=56).setup()
    assert auto.config.precision == "auto" and auto.identity()["precision"] in ("float32", "bfloat16")
    with pytest.raises(TeacherError, match="precision 'fp8' unknown"):
        make_teacher_config("dinov2-vits14", weights="random", precision="fp8").setup()


def test_dino_vits8_official_settings_with_random_weights():
    t = make_teacher_config("dino-vits8", weights="random", input_size=64).setup()
    fm = t.extract(torch.rand(2, 3, 128, 128))
    assert fm.features.shape == (2, 384, 8, 8) and fm.stride == (16.0, 16.0)
    ident = t.identity()
    assert ident["layer"] == 9 and ident["facet"] == "key" and ident["arch"] == "dino_vits8"
    assert not hasattr(t.net.blocks[0], "ls1") or isinstance(t.net.blocks[0].ls1, torch.nn.Identity)


def test_dino_without_weights_is_a_one_line_error():
    with pytest.raises(TeacherError) as e:
        make_teacher_config("dino-vits8").setup()
    assert "\n" not in str(e.value) and "weights=" in str(e.value)


def test_local_checkpoint_with_prefixes_loads_identically(tmp_path):
    torch.manual_seed(1)
    net = DinoV2ViT(CONFIGS["dino_vits8"])
    path = tmp_path / "dino_ckpt.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, path)
    t = make_teacher_config("dino-vits8", weights=str(path), input_size=64, precision="float32").setup()
    x = torch.rand(1, 3, 64, 64)
    ref = net.eval().extract(t.preprocess(x), layer=9, facet="key").permute(0, 3, 1, 2)
    assert torch.allclose(t.extract(x).features, ref, atol=1e-5)
    assert t.identity()["weights_sha256"] and "dino_ckpt.pth" in t.label


@pytest.mark.parametrize("bad", ["missing.pth", "text"])
def test_bad_weights_paths(tmp_path, bad):
    p = tmp_path / bad
    if bad == "text":
        p.write_text("not a checkpoint")
    with pytest.raises(TeacherError) as e:
        make_teacher_config("dino-vits8", weights=str(p)).setup()
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_bad_options_and_inputs(dinov2_random):
    with pytest.raises(TeacherError, match="multiple of the patch size"):
        make_teacher_config("dinov2-vits14", weights="random", input_size=100).setup()
    with pytest.raises(TeacherError, match="facet"):
        make_teacher_config("dinov2-vits14", weights="random", facet="attn").setup()
    with pytest.raises(TeacherError, match="out of range"):
        make_teacher_config("dinov2-vits14", weights="random", layer=12).setup()
    with pytest.raises(TeacherError, match=r"\(B, 3, H, W\)"):
        dinov2_random.extract(torch.rand(3, 64, 64))
    bad = torch.rand(1, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(TeacherError, match="NaN"):
        dinov2_random.extract(bad)


def test_sample_map_hits_cell_values_at_pixel_centres():
    fmap = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    # image 8x8, map 4x4: the centre of cell (i, j) is pixel (2j + 1, 2i + 1)
    uv = torch.tensor([[[1.0, 1.0], [7.0, 3.0], [3.0, 5.0]]])
    out = sample_map(fmap, uv, (8, 8))
    expect = torch.stack([fmap[0, :, 0, 0], fmap[0, :, 1, 3], fmap[0, :, 2, 1]])
    assert torch.allclose(out[0], expect)


def test_nn_match_pck_and_iou_oracles():
    torch.manual_seed(0)
    cand = torch.randn(1000, 16)
    perm = torch.randperm(1000)[:50]
    idx, sim = nn_match(cand[perm] * 3.0, cand, chunk=128)  # scale does not matter for cosine
    assert torch.equal(idx, perm) and torch.allclose(sim, torch.ones(50), atol=1e-5)
    assert pck([0.0, 2.0, 6.0, 20.0], (2.5, 10)) == {"pck@2.5": 50.0, "pck@10": 75.0}
    gt = np.array([0, 1, 1, 2, 2, 2])
    assert part_iou(gt, gt) == 100.0
    assert part_iou(np.array([0, 1, 2, 2, 2, 2]), gt) == pytest.approx((1 + 0.5 + 0.75) / 3 * 100)
    with pytest.raises(ValueError):
        nn_match(torch.zeros(3, 4), torch.zeros(0, 4))


def test_sample_map_equals_grid_sample_values_and_gradients():
    """The CPU path (a sparse bilinear-weight matrix) against torch's grid_sample (align_corners=False, border
    padding), including points outside the image and exactly on the border, and the gradient w.r.t. the maps."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 6, 7, generator=g, requires_grad=True)
    uv = torch.rand(3, 40, 2, generator=g) * torch.tensor([16.0, 14.0]) - 1.0  # some outside [0, W] x [0, H]
    uv[:, :4] = torch.tensor([[0.0, 0.0], [14.0, 12.0], [7.0, 12.0], [14.0, 0.0]])
    grid = torch.stack([uv[..., 0] * (2 / 14) - 1, uv[..., 1] * (2 / 12) - 1], -1).unsqueeze(1)
    ref = F.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0].transpose(
        1, 2
    )
    out = sample_map(feats, uv, (12, 14))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    (ga,) = torch.autograd.grad((out * w).sum(), feats)
    (gb,) = torch.autograd.grad((ref * w).sum(), feats)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)


def test_sample_map_gradient_is_the_transposed_bag_in_float32_and_bfloat16():
    """The maps' gradient (a second embedding_bag over the taps sorted by cell): float32 equals torch's own
    embedding_bag backward; bfloat16 maps (the field under autocast) stay within 2x the bfloat16 rounding of the
    exact (float64) gradient however many taps a cell receives; cells no point reads get exactly 0; a uv that needs
    its own gradient still gets one."""
    import torch.nn.functional as F

    from featurenerf_ns.model_components.map_sampling import _bilinear_taps

    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 48, 6, 5, generator=g)
    uv = torch.rand(2, 3000, 2, generator=g) * torch.tensor([5.0, 6.0])  # image 6 x 10: the right half is never read
    w_out = torch.randn(2, 3000, 48, generator=g)

    def grad_of(maps):
        maps = maps.detach().requires_grad_(True)
        (out,) = torch.autograd.grad((sample_map(maps, uv, (6, 10)).double() * w_out).sum(), maps)
        return out.double()

    rows, cols, wts = _bilinear_taps(uv, (6, 5), (6, 10))
    cells = ((torch.arange(2) * 30)[:, None, None] + rows * 5 + cols).view(-1, 4)
    table = feats.permute(0, 2, 3, 1).reshape(60, 48).double().requires_grad_(True)
    ref_out = F.embedding_bag(cells, table, per_sample_weights=wts.view(-1, 4).double(), mode="sum")
    (exact,) = torch.autograd.grad((ref_out.view(2, 3000, 48) * w_out).sum(), table)
    exact = exact.view(2, 6, 5, 48).permute(0, 3, 1, 2)

    torch.testing.assert_close(grad_of(feats), exact, atol=1e-4, rtol=1e-5)
    assert torch.all(grad_of(feats)[..., 3:] == 0)  # columns 3, 4 of the map cover pixels 6..10: no point there
    g16 = grad_of(feats.bfloat16())
    rounding = (exact.bfloat16().double() - exact).abs().mean()
    assert (g16 - exact).abs().mean() < 2.0 * rounding
    assert torch.all(g16[..., 3:] == 0)

    uv_req = uv[:, :50].clone().requires_grad_(True)
    out = sample_map(feats.requires_grad_(True), uv_req, (6, 10))
    du, df = torch.autograd.grad(out.sum() + (out**2).sum(), [uv_req, feats])
    assert du.abs().sum() > 0 and df.abs().sum() > 0


def test_sample_map_without_autograd_reads_channels_last_maps_in_their_dtype():
    """Renders and queries (no autograd) interpolate in the maps' dtype: bfloat16 maps give the float32 result to
    bfloat16 rounding; channels-last maps (the field's z maps) give exactly the contiguous maps' result."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 24, 5, 6, generator=g)
    uv = torch.rand(2, 50, 2, generator=g) * torch.tensor([12.0, 10.0])
    ref = sample_map(feats, uv, (10, 12))
    with torch.no_grad():
        cl = sample_map(feats.contiguous(memory_format=torch.channels_last), uv, (10, 12))
        half = sample_map(feats.bfloat16(), uv, (10, 12))
    torch.testing.assert_close(cl, ref, atol=0, rtol=0)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, atol=0.05, rtol=0.02)


def test_keep_freed_memory_is_applied_once_and_can_be_turned_off(monkeypatch):
    from featurenerf_ns.utils import cpu_malloc

    cpu_malloc.keep_freed_memory.cache_clear()
    monkeypatch.setenv("FEATURENERF_KEEP_FREED_MEMORY", "0")
    assert cpu_malloc.keep_freed_memory() is False
    cpu_malloc.keep_freed_memory.cache_clear()
    monkeypatch.delenv("FEATURENERF_KEEP_FREED_MEMORY")
    import sys

    assert cpu_malloc.keep_freed_memory() is sys.platform.startswith("linux")  # glibc here: every setting accepted


def test_teacher_spec_reaches_every_option_of_every_registered_teacher():
    """ns-train sets teachers through TeacherSpec (--pipeline.datamanager.teacher.*): no option may be unreachable."""
    from dataclasses import fields

    from featurenerf_ns.teachers import TEACHER_OPTIONS, TEACHERS, TeacherSpec

    for name, make in TEACHERS.items():
        options = {f.name for f in fields(make())} - {"_target", "name"}
        assert options <= set(TEACHER_OPTIONS), (name, sorted(options - set(TEACHER_OPTIONS)))
    cfg = TeacherSpec(
        name="diffusion",
        weights="random-tiny",
        up_layer=1,
        prompt_template="a photo of a {category}",
        ensemble=2,
        seed=3,
    ).config()
    assert (cfg.up_layer, cfg.prompt_template, cfg.ensemble, cfg.seed) == (1, "a photo of a {category}", 2, 3)
    with pytest.raises(TeacherError, match="has no option 'up_layer'"):
        TeacherSpec(name="dinov2-vits14", up_layer=1).config()
    # the block-output choice (the config's up_layer=None), which "unset" cannot express
    assert TeacherSpec(name="diffusion", weights="random-tiny").config().up_layer == 0
    assert TeacherSpec(name="diffusion", weights="random-tiny", up_layer="output").config().up_layer is None
    with pytest.raises(TeacherError, match="has no option 'up_layer'"):
        TeacherSpec(name="dinov2-vits14", up_layer="output").config()
    import tyro  # the ns-train flag parses to the same value

    parsed = tyro.cli(TeacherSpec, args=["--name", "diffusion", "--up-layer", "output"])
    assert parsed.up_layer == "output" and tyro.cli(TeacherSpec, args=["--up-layer", "2"]).up_layer == 2
