"""torchvision ResNet-34 weights for the image encoder (the official pixelNeRF/FeatureNeRF backbone): random init
(no offline ImageNet weights exist), torch.hub, or a local state dict."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from rich.console import Console

from featurenerf_ns.weights.cache import WeightsError, sha256_file
from featurenerf_ns.weights.checkpoints import key_mismatch, read_checkpoint, strip_to, unwrap_state_dict

if TYPE_CHECKING:
    from torchvision.models import ResNet

CONSOLE = Console()
RESNET34_URL = "https://download.pytorch.org/models/resnet34-b627a593.pth"
RESNET_WARNING = (
    "ResNet-34 ImageNet weights not available offline; starting from random init "
    "(pass encoder weights=<resnet34-b627a593.pth> or hub)"
)


def load_resnet34(source: Optional[str] = None) -> Tuple[ResNet, str, Optional[str]]:
    """torchvision ResNet-34 and a weights label: None -> random init with a loud warning (no offline ImageNet weights),
    ``random``, ``hub`` (torchvision IMAGENET1K_V1 via torch.hub, online), or a local torchvision-layout state dict
    (``fc.*`` optional; prefixes such as ``module.`` or pixelNeRF's ``encoder.model.`` are removed)."""
    import torchvision

    net = torchvision.models.resnet34(weights=None)
    if source is None:
        CONSOLE.print(f"[bold red]WARNING:[/bold red] [bold yellow]{RESNET_WARNING}[/bold yellow]", soft_wrap=True)
        return net, "random init: no offline ImageNet weights", None
    if source == "random":
        return net, "random init", None
    if source in ("hub", "torch.hub"):
        try:
            sd = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as e:
            raise WeightsError(
                f"cannot download {RESNET34_URL} ({type(e).__name__}: offline?); pass encoder "
                "weights=<local resnet34-b627a593.pth> or weights=random"
            ) from None
        net.load_state_dict(sd, strict=True)
        return net, "ImageNet, torchvision IMAGENET1K_V1 (torch.hub)", None
    path = Path(source).expanduser()
    fix = "pass a torchvision ResNet-34 state dict (e.g. resnet34-b627a593.pth), hub or random"
    sd = strip_to(unwrap_state_dict(read_checkpoint(path, "ResNet-34", fix), str(path)), "conv1.weight")
    if sd is None:
        raise WeightsError(f"{path}: not a ResNet-34 state dict (no conv1.weight); {fix}")
    own = {k: v.shape for k, v in net.state_dict().items()}
    problem = key_mismatch(own, sd, optional=[k for k in own if k.startswith("fc.")])
    if problem:
        raise WeightsError(f"{path}: not a torchvision ResNet-34 state dict: {problem}; {fix}")
    net.load_state_dict(sd, strict=False)
    return net, f"weights {path.name}", sha256_file(path)
