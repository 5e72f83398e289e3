"""Diffusion teacher (Stable Diffusion U-Net decoder features) on a tiny random SD-shaped model: shapes, strides,
determinism, conditioning, masking, registry, one-line errors and a save_pretrained round trip. No network."""

from __future__ import annotations

import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the hub from these tests

import pytest
import torch

from featurenerf_ns.teachers import FeatureMap, TeacherError, make_teacher_config
from featurenerf_ns.teachers.diffusion import DiffusionTeacher, DiffusionTeacherConfig, read_geometry
from featurenerf_ns.teachers.diffusion_tiny import HashWordTokenizer, save_components, tiny_components

S = 64


def tiny(**overrides) -> DiffusionTeacher:
    cfg = make_teacher_config("diffusion", weights="random-tiny", input_size=S)
    for k, v in overrides.items():  # setattr so that None (up_layer=None) is applied too
        setattr(cfg, k, v)
    return cfg.setup()


@pytest.fixture(scope="module")
def teacher() -> DiffusionTeacher:
    return tiny()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, S, S, generator=g)
    alpha = torch.ones(2, 1, S, S)
    alpha[:, :, :, : S // 2] = 0.0  # left half background
    return rgb, alpha


def test_registry_and_defaults(teacher):
    cfg = make_teacher_config("diffusion")
    assert isinstance(cfg, DiffusionTeacherConfig)
    assert (cfg.input_size, cfg.imagenet_norm, cfg.up_block, cfg.up_layer, cfg.timestep) == (512, False, 3, 0, 100)
    assert cfg.prompt_template == "a {category}" and cfg.ensemble == 1 and cfg.weights is None
    assert isinstance(teacher, DiffusionTeacher)
    assert teacher.weights_sha256 == "random-tiny-seed0"
    assert teacher.label.startswith("Stable Diffusion U-Net up_block 3")
    # tiny U-Net mirrors SD1.x: up_blocks[3].resnets[0] input = decoder 16 + skip 8 channels, at 1/4 (VAE /4, latent /1)
    assert teacher.dim == 24 and teacher.stride_in_input == 4 and teacher.map_size() == (16, 16)
    ident = teacher.identity()
    for k, v in dict(
        up_block=3,
        up_layer=0,
        timestep=100,
        prompt_template="a {category}",
        ensemble=1,
        dim=24,
        map_size=[16, 16],
        weights="random-tiny",
        tokenizer="hash-words",
    ).items():
        assert ident[k] == v, k


def test_extract_shapes_and_stride(teacher, images):
    rgb, alpha = images
    fm = teacher.extract(rgb, alpha, category="chair")
    assert isinstance(fm, FeatureMap)
    h, w = teacher.map_size()
    assert fm.features.shape == (2, teacher.dim, h, w) and fm.features.dtype == torch.float32
    assert torch.isfinite(fm.features).all()
    assert fm.stride == (S / h, S / w) == (teacher.stride_in_input, teacher.stride_in_input)
    # original images larger than the input size: the map still tiles them exactly
    big = torch.nn.functional.interpolate(rgb, size=(96, 96), mode="bilinear", align_corners=False)
    fm2 = teacher.extract(big, category="chair")
    assert fm2.features.shape == (2, teacher.dim, h, w) and fm2.stride == (96 / h, 96 / w)


@pytest.mark.parametrize(
    "up_block,up_layer,dim,n",
    [(0, None, 32, 4), (1, None, 32, 8), (2, None, 16, 16), (3, None, 8, 16), (2, 2, 24, 8), (1, 2, 48, 4)],
)
def test_read_points(images, up_block, up_layer, dim, n):
    t = tiny(up_block=up_block, up_layer=up_layer)
    f = t.extract(images[0], category="chair").features
    assert (t.dim, t.map_size()) == (dim, (n, n))
    assert f.shape == (2, dim, n, n) and torch.isfinite(f).all()


def test_sd15_geometry_matches_paper():
    """On the SD1.5 U-Net config (meta device, no weights): the default read point is the paper's 960 channels."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # defaults = SD1.x: (320, 640, 1280, 1280)
    assert tuple(unet.config.block_out_channels) == (320, 640, 1280, 1280)
    assert read_geometry(unet, 8, 3, 0)[:2] == (960, 8)  # 512 px -> 64 x 64 x 960; 1024 px -> 128 x 128 x 960
    assert read_geometry(unet, 8, 2, 2)[:2] == (960, 16)
    assert read_geometry(unet, 8, 1, None)[:2] == (1280, 16)
    assert read_geometry(unet, 8, 0, None)[:2] == (1280, 32)
    assert read_geometry(unet, 8, 2, None)[:2] == (640, 8)
    assert read_geometry(unet, 8, 3, None)[:2] == (320, 8)


def test_deterministic_and_timestep(teacher, images):
    rgb, _ = images
    a = teacher.extract(rgb, category="chair").features
    b = tiny().extract(rgb, category="chair").features  # a fresh instance, same seed
    assert torch.equal(a, b)
    assert not torch.allclose(a, tiny(timestep=500).extract(rgb, category="chair").features)
    assert not torch.allclose(a, tiny(seed=1).extract(rgb, category="chair").features)


def test_batching_does_not_change_features(teacher, images):
    rgb, _ = images  # float32: bfloat16 matmuls block differently with the batch size
    a = tiny(precision="float32").extract(rgb, category="chair").features
    b = tiny(batch_size=1, precision="float32").extract(rgb, category="chair").features
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_category_prompt(teacher, images):
    rgb, _ = images
    assert teacher.prompt("chair") == "a chair" and teacher.prompt(None) == "an object"
    chair = teacher.extract(rgb, category="chair").features
    plane = teacher.extract(rgb, category="airplane").features
    none = teacher.extract(rgb).features
    assert not torch.allclose(chair, plane) and not torch.allclose(chair, none)
    assert torch.equal(none, teacher.extract(rgb, category="").features)


def test_ensemble_averages(images):
    rgb, _ = images
    one = tiny().extract(rgb, category="chair").features
    two = tiny(ensemble=2).extract(rgb, category="chair").features
    assert two.shape == one.shape and torch.isfinite(two).all() and not torch.allclose(one, two)


def test_background_masking(teacher, images):
    rgb, alpha = images
    masked = teacher.extract(rgb, alpha, category="chair").features
    raw = tiny(mask_background=False).extract(rgb, alpha, category="chair").features
    half = teacher.map_size()[1] // 2
    assert (masked[..., :half] == 0).all()  # cells fully in the alpha = 0 half
    assert raw[..., :half].abs().sum() > 0
    torch.testing.assert_close(masked[..., half:], raw[..., half:])


def test_hash_word_tokenizer(tmp_path):
    tok = HashWordTokenizer(vocab_size=1000, model_max_length=8)
    ids = tok(["a chair", "A  CHAIR!"])
    assert ids.shape == (2, 8) and torch.equal(ids[0], ids[1])
    assert ids[0, 0] == tok.bos_token_id and ids[0, 3] == tok.eos_token_id and (ids[0, 3:] == tok.pad_token_id).all()
    assert not torch.equal(tok("a chair"), tok("a table"))
    assert tok("word " * 20).shape == (1, 8)
    tok.save_pretrained(tmp_path / "tok")
    back = HashWordTokenizer.from_pretrained(tmp_path / "tok")
    assert (back.vocab_size, back.model_max_length) == (1000, 8)


def test_saved_pipeline_round_trip(tmp_path, teacher, images):
    from diffusers import DDPMScheduler

    rgb, alpha = images
    ref = teacher.extract(rgb, alpha, category="chair").features
    d = save_components(tiny_components(0), tmp_path / "sd")
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        assert (d / sub).is_dir(), sub
    loaded = make_teacher_config("diffusion", weights=str(d), input_size=S).setup()
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.weights_sha256)
    assert loaded.identity()["tokenizer"] == "hash-words" and loaded.identity()["scheduler"] == "sd-v1-default"
    assert torch.equal(loaded.extract(rgb, alpha, category="chair").features, ref)

    # a scheduler/ with SD v1's betas is read from the pipeline and gives the same noise level
    DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    ).save_pretrained(d / "scheduler")
    # no tokenizer/: the tiny text encoder falls back to the hashed word tokenizer
    for f in (d / "tokenizer").iterdir():
        f.unlink()
    (d / "tokenizer").rmdir()
    again = make_teacher_config("diffusion", weights=str(d), input_size=S).setup()
    assert again.identity()["scheduler"] == "pipeline" and again.weights_sha256 == loaded.weights_sha256
    torch.testing.assert_close(again.extract(rgb, alpha, category="chair").features, ref, rtol=1e-6, atol=1e-6)


def _one_line_error(match: str, **overrides) -> str:
    cfg = make_teacher_config("diffusion", input_size=S)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    with pytest.raises(TeacherError, match=match) as e:
        cfg.setup()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("teacher diffusion:")
    return msg


def test_errors_are_one_line(tmp_path):
    missing = tmp_path / "no" / "such_sd"
    msg = _one_line_error("not found", weights=str(missing))
    assert str(missing) in msg and "random-tiny" in msg
    msg = _one_line_error("no diffusion weights are obtainable offline", weights=None)
    assert "weights=" in msg
    msg = _one_line_error("offline", weights="someone/not-a-cached-model")
    assert "someone/not-a-cached-model" in msg
    (tmp_path / "partial" / "unet").mkdir(parents=True)
    assert "text_encoder" in _one_line_error("not found", weights=str(tmp_path / "partial"))
    _one_line_error("up_block 7 out of range", weights="random-tiny", up_block=7)
    _one_line_error("up_layer 5 out of range", weights="random-tiny", up_layer=5)
    _one_line_error("timestep 1000", weights="random-tiny", timestep=1000)
    _one_line_error("not a multiple of 32", weights="random-tiny", input_size=48)
    _one_line_error("ensemble", weights="random-tiny", ensemble=0)
