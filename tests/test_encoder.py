"""Image encoder: shapes and channels of each backbone, freezing, pixel-aligned feature lookup, weights sources and
their one-line errors, the EfficientNet-Lite0 key mapping (no network) and, when cached, the converted weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featurenerf_ns.encoders.efficientnet import EfficientNetLite0, lite0_key_table, map_lite0_state_dict, tf_same_pad
from featurenerf_ns.encoders.image_encoder import EncoderConfig, EncoderError, ImageEncoder, index_features
from featurenerf_ns.weights.cache import WeightsError, cache_dir, sha256_file
from featurenerf_ns.weights.efficientnet import EFFNET_WEIGHTS_NAME
from featurenerf_ns.weights.resnet import RESNET_WARNING

OUT_DIM = {"resnet34": 512, "efficientnet-lite0": 208, "dinov2": 384}


@pytest.fixture(scope="module")
def encoders():
    return {b: EncoderConfig(backbone=b, weights="random").setup().eval() for b in OUT_DIM}


def randomized_lite0(seed: int = 0) -> EfficientNetLite0:
    """Every tensor random (BN statistics too), so a swapped key would change the output."""
    g = torch.Generator().manual_seed(seed)
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                r = torch.rand(v.shape, generator=g)
                v.copy_(r * 0.5 + 0.5 if k.endswith(("running_var", "bn.weight")) else (r - 0.5) * 0.4)
    return net


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("backbone", list(OUT_DIM))
@pytest.mark.parametrize("size", [64, 128])
def test_output_shape_and_out_dim(encoders, backbone, size):
    enc = encoders[backbone]
    assert enc.out_dim == OUT_DIM[backbone] and enc.stride == 2
    with torch.no_grad():
        out = enc(torch.rand(2, 3, size, size))
    assert out.shape == (2, OUT_DIM[backbone], size // 2, size // 2)
    assert torch.isfinite(out).all()
    assert "random init" in enc.describe() and str(OUT_DIM[backbone]) in enc.describe()


@pytest.mark.parametrize("backbone", list(OUT_DIM))
def test_non_square_odd_size(encoders, backbone):
    with torch.no_grad():
        out = encoders[backbone](torch.rand(1, 3, 65, 48))
    assert out.shape == (1, OUT_DIM[backbone], 33, 24)


@pytest.mark.parametrize(
    "backbone,n,dim",
    [
        ("resnet34", 1, 64),
        ("resnet34", 3, 256),
        ("resnet34", 5, 1024),
        ("efficientnet-lite0", 1, 32),
        ("efficientnet-lite0", 2, 56),
        ("efficientnet-lite0", 5, 528),
    ],
)
def test_num_layers_channels(backbone, n, dim):
    enc = EncoderConfig(backbone=backbone, weights="random", num_layers=n).setup().eval()
    with torch.no_grad():
        out = enc(torch.rand(1, 3, 64, 64))
    assert enc.out_dim == dim and out.shape == (1, dim, 32, 32)


def test_resnet_levels_match_manual_pixelnerf_stack():
    enc = EncoderConfig(weights="random").setup().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        y = enc.stem(x * 2 - 1)
        assert torch.equal(out[:, :64], y)
        y = enc.levels[0](enc.pool(y))  # layer1 at H/4, upsampled with align_corners=True
        up = torch.nn.functional.interpolate(y, size=(32, 32), mode="bilinear", align_corners=True)
    assert torch.allclose(out[:, 64:128], up)


def test_only_used_parameters_are_kept():
    enc = EncoderConfig(backbone="efficientnet-lite0", weights="random").setup()
    assert len(enc.stages) == 5  # stages 0..4; 5, 6, head and classifier are dropped
    out = enc(torch.rand(1, 3, 32, 32)).sum()
    out.backward()
    assert all(p.grad is not None for p in enc.parameters())


# ------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("backbone", ["resnet34", "efficientnet-lite0"])
def test_freeze(backbone):
    enc = EncoderConfig(backbone=backbone, weights="random", freeze=True).setup()
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert "frozen" in enc.describe()
    trainable = EncoderConfig(backbone=backbone, weights="random").setup()
    assert all(p.requires_grad for p in trainable.parameters())


def test_dinov2_always_frozen(encoders):
    assert not any(p.requires_grad for p in encoders["dinov2"].parameters())


def test_seeded_random_init_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = EncoderConfig(backbone="efficientnet-lite0", weights="random", seed=5).setup()
    assert torch.equal(torch.rand(1), before)
    b = EncoderConfig(backbone="efficientnet-lite0", weights="random", seed=5).setup()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_image_scale():
    x = torch.rand(1, 3, 8, 8)
    a = EncoderConfig(backbone="efficientnet-lite0", weights="random").setup()
    b = EncoderConfig(backbone="efficientnet-lite0", weights="random", image_scale="imagenet").setup()
    assert torch.allclose(a.normalize(x), x * 2 - 1)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    assert torch.allclose(b.normalize(x), (x - mean) / std)


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"backbone": "vgg"}, "backbone"),
        ({"image_scale": "raw"}, "image_scale"),
        ({"num_layers": 6, "weights": "random"}, "num_layers"),
    ],
)
def test_bad_options(opts, match):
    with pytest.raises(EncoderError, match=match):
        ImageEncoder(EncoderConfig(**opts))


# ------------------------------------------------------------------------------------------------ index_features
def test_index_features_pixel_centres_oracle():
    B, C, H, W = 2, 5, 6, 9
    fmap = torch.randn(B, C, H, W)
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    uv = torch.stack([jj.flatten() + 0.5, ii.flatten() + 0.5], -1).float().expand(B, -1, -1)
    out = index_features(fmap, uv, (H, W))
    assert out.shape == (B, H * W, C)
    assert torch.allclose(out, fmap.flatten(2).transpose(1, 2), atol=1e-6)


def test_index_features_interpolation_and_border():
    # half-resolution map (stride 2) whose value is the cell's column index: cell k is centred at u = 2k + 1
    H, W, h, w = 8, 12, 4, 6
    fmap = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    u = torch.tensor([1.0, 2.0, 2.5, 6.2, 11.0, 0.0, -3.0, 12.0, 20.0])
    uv = torch.stack([u, torch.full_like(u, 3.3)], -1)[None]
    out = index_features(fmap, uv, (H, W))[0, :, 0]
    expected = torch.clamp(u * w / W - 0.5, 0, w - 1)  # linear inside, border value outside
    assert torch.allclose(out, expected, atol=1e-5)


def test_index_features_rejects_bad_shapes():
    with pytest.raises(ValueError, match="uv"):
        index_features(torch.zeros(1, 2, 3, 3), torch.zeros(2, 4, 2), (6, 6))


# ------------------------------------------------------------------------------------------------ weights sources
def test_resnet_default_warns_loudly(capsys):
    enc = EncoderConfig(backbone="resnet34").setup()
    assert RESNET_WARNING in " ".join(capsys.readouterr().out.split())
    assert "no offline ImageNet weights" in enc.describe()


def test_resnet_local_state_dict_roundtrip(tmp_path):
    import torchvision

    torch.manual_seed(7)
    ref = torchvision.models.resnet34(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong load would show
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet34-test.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, path)
    enc = EncoderConfig(weights=str(path), seed=99).setup().eval()
    assert "resnet34-test.pth" in enc.describe() and enc.weights_sha256 == sha256_file(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        y = ref.relu(ref.bn1(ref.conv1(x * 2 - 1)))
        levels = [y]
        y = ref.maxpool(y)
        for layer in (ref.layer1, ref.layer2, ref.layer3):
            y = layer(y)
            levels.append(torch.nn.functional.interpolate(y, size=(32, 32), mode="bilinear", align_corners=True))
    assert torch.equal(out, torch.cat(levels, 1))


def test_resnet_wrong_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(WeightsError, match=r"other\.pth: not a torchvision ResNet-34 state dict: missing") as e:
        EncoderConfig(weights=str(path)).setup()
    assert "\n" not in str(e.value)


def test_missing_efficientnet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURENERF_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError) as e:
        EncoderConfig(backbone="efficientnet-lite0").setup()
    msg = str(e.value)
    assert "\n" not in msg and "featurenerf-weights efficientnet-lite0" in msg and EFFNET_WEIGHTS_NAME in msg


@pytest.mark.parametrize("backbone", list(OUT_DIM))
def test_bad_weights_file(tmp_path, backbone):
    bad = tmp_path / "weights.pth"
    bad.write_text("this is not a checkpoint\n")
    with pytest.raises(WeightsError) as e:
        EncoderConfig(backbone=backbone, weights=str(bad)).setup()
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


@pytest.mark.parametrize("backbone", ["resnet34", "efficientnet-lite0"])
def test_nonexistent_weights_path(tmp_path, backbone):
    with pytest.raises(WeightsError, match="not found") as e:
        EncoderConfig(backbone=backbone, weights=str(tmp_path / "nope.pth")).setup()
    assert str(tmp_path / "nope.pth") in str(e.value)


def test_efficientnet_sidecar_hash_mismatch(tmp_path):
    path = tmp_path / "lite0.pth"
    torch.save(EfficientNetLite0().state_dict(), path)
    (tmp_path / "lite0.pth.json").write_text(json.dumps({"sha256": "0" * 64, "source": "test"}))
    with pytest.raises(WeightsError, match="sha256 does not match"):
        EncoderConfig(backbone="efficientnet-lite0", weights=str(path)).setup()


# ------------------------------------------------------------------------------------------------ EfficientNet-Lite0
def test_tf_same_padding():
    assert tf_same_pad(224, 3, 2) == (0, 1) and tf_same_pad(224, 5, 2) == (1, 2)
    assert tf_same_pad(7, 3, 2) == (1, 1) and tf_same_pad(8, 3, 1) == (1, 1)
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        feats = net.forward_features(torch.rand(1, 3, 65, 48))
    assert [f.shape[-2:] for f in feats[::2]] == [(33, 24), (17, 12), (5, 3), (3, 2)]  # ceil(H / stride) as TF
    assert net(torch.rand(1, 3, 65, 48)).shape == (1, 1000)


@pytest.mark.parametrize("layout", ["reference", "timm", "ours"])
def test_lite0_key_mapping(layout, tmp_path):
    net = randomized_lite0()
    table = lite0_key_table(layout)
    assert len(table) == 296 and len(set(table.values())) == 296
    renamed = {"module." + table[k]: v.clone() for k, v in net.state_dict().items()}
    sd, found = map_lite0_state_dict(renamed)
    assert found == layout and list(sd) == list(net.state_dict())
    assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())
    # the mapped file loads through the encoder and reproduces the stem and stage outputs
    path = tmp_path / "lite0.pth"
    torch.save({"state_dict": renamed}, path)
    enc = EncoderConfig(backbone="efficientnet-lite0", weights=str(path), num_layers=5).setup().eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = net.forward_features(x * 2 - 1)
        out = enc(x)
    assert torch.equal(out[:, :32], feats[0])
    assert torch.allclose(
        out[:, -320:], torch.nn.functional.interpolate(feats[7], size=(32, 32), mode="bilinear", align_corners=True)
    )
    assert f"({layout} layout)" in enc.describe()


def test_reference_layout_names():
    t = lite0_key_table("reference")
    assert t["stem.conv.weight"] == "_conv_stem.weight" and t["stem.bn.running_var"] == "_bn0.running_var"
    assert t["stages.0.0.dw.conv.weight"] == "_blocks.0._depthwise_conv.weight"
    assert t["stages.1.0.expand.bn.bias"] == "_blocks.1._bn0.bias"
    assert t["stages.5.3.project.conv.weight"] == "_blocks.14._project_conv.weight"
    assert t["stages.6.0.dw.bn.weight"] == "_blocks.15._bn1.weight"
    assert t["head.bn.weight"] == "_bn1.weight" and t["classifier.bias"] == "_fc.bias"


def test_lite0_mapping_errors():
    table = lite0_key_table("reference")
    sd = {table[k]: v for k, v in EfficientNetLite0().state_dict().items()}
    sd.pop("_blocks.3._bn1.running_mean")
    sd["_blocks.3._project_conv.weight"] = torch.zeros(41, 144, 1, 1)
    with pytest.raises(WeightsError, match="missing 1 .*shape mismatch 1") as e:
        map_lite0_state_dict(sd, "x.pth")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="no stem convolution"):
        map_lite0_state_dict({"conv1.weight": torch.zeros(1)}, "y.pth")


def test_timm_tf_efficientnet_lite0_agrees():
    timm = pytest.importorskip("timm")
    net = randomized_lite0(1)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    table = lite0_key_table("timm")
    ref.load_state_dict({table[k]: v for k, v in net.state_dict().items()}, strict=True)
    x = torch.randn(1, 3, 67, 90)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-4)


def _cached_lite0():
    path = cache_dir() / EFFNET_WEIGHTS_NAME
    if not path.is_file():
        pytest.skip(
            f"no converted EfficientNet-Lite0 weights in {path.parent} (run `featurenerf-weights efficientnet-lite0`)"
        )
    return path


def test_cached_lite0_weights_classify_reference_photo():
    import torchvision

    from featurenerf_ns.weights.efficientnet import LITE0_PLAUSIBLE, _center_crop_tf, load_lite0
    from featurenerf_ns.weights.verify import reference_image

    path = _cached_lite0()
    net, label, digest = load_lite0(None)
    assert digest == sha256_file(path) and "ImageNet" in label
    rgb, _ = reference_image()
    crop = _center_crop_tf(rgb)
    x = torch.from_numpy(((crop - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()).float()
    with torch.no_grad():
        p = net(x).softmax(-1)[0]
    categories = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.meta["categories"]
    top5 = [categories[i] for i in p.topk(5).indices]
    assert top5[0] in LITE0_PLAUSIBLE and "military uniform" in top5, top5
    assert float(p.max()) > 0.1
    # and the weights are not a random init
    rand = EfficientNetLite0().state_dict()
    assert not torch.allclose(net.state_dict()["stem.conv.weight"], rand["stem.conv.weight"])


def test_cached_lite0_encoder():
    _cached_lite0()
    enc = EncoderConfig(backbone="efficientnet-lite0").setup().eval()
    assert "ImageNet" in enc.describe()
    with torch.no_grad():
        out = enc(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 208, 32, 32) and torch.isfinite(out).all()
    meta = json.loads((cache_dir() / (EFFNET_WEIGHTS_NAME + ".json")).read_text())
    assert meta["verification"]["max_abs_diff"] < 1e-3 and meta["tensors"] == 296
    assert np.isfinite(meta["verification"]["top5"][0][1])
