"""Reading checkpoints and loading them strictly, with one-line errors: the one implementation the encoders, the
teachers and the converters share (torch.load failures, wrapped state dicts, prefixes, missing/unexpected keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import torch

from featurenerf_ns.weights.cache import WeightsError

WRAPPER_KEYS = ("teacher", "state_dict", "model", "model_state", "net")
"""Keys under which training checkpoints keep the state dict (DINO's ``teacher``, Lightning's ``state_dict``, ...)."""


def read_checkpoint(path: Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, or a one-line WeightsError naming the file and the fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{what} weights file not found: {path}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of a corrupted or non-checkpoint file
        raise WeightsError(
            f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}): corrupted, or not "
            f"{what} weights; {fix}"
        ) from None


def unwrap_state_dict(obj: Any, where: str) -> Dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped, see ``WRAPPER_KEYS``) checkpoint; WeightsError when it holds other things."""
    for k in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def strip_to(sd: Dict[str, torch.Tensor], anchor: str) -> Optional[Dict[str, torch.Tensor]]:
    """``sd`` with the prefix in front of ``anchor`` (e.g. ``module.``, ``encoder.model.``) removed from all keys that
    carry it; None when no key ends with ``anchor``."""
    hits = [k[: -len(anchor)] for k in sd if k.endswith(anchor) and (k == anchor or k[-len(anchor) - 1] == ".")]
    if not hits:
        return None
    p = min(hits, key=len)
    return {k[len(p) :]: v for k, v in sd.items() if k.startswith(p)}


def key_mismatch(
    own: Mapping[str, torch.Size],
    sd: Mapping[str, torch.Tensor],
    optional: Iterable[str] = (),
    names: Optional[Mapping[str, str]] = None,
) -> str:
    """'' when ``sd`` has exactly the tensors ``own`` ({our key: shape}) needs (``optional`` ones may be absent),
    else 'missing n (a, b, c, ...); unexpected n (...); shape mismatch n (key (got) vs (want))'. ``names`` maps our
    keys to the keys expected in ``sd`` (another implementation's layout); identity by default."""
    names = names or {k: k for k in own}
    optional = set(optional)
    missing = [names[k] for k in own if names[k] not in sd and k not in optional]
    unexpected = [k for k in sd if k not in set(names.values())]
    bad = [
        f"{names[k]} {tuple(sd[names[k]].shape)} vs {tuple(s)}"
        for k, s in own.items()
        if names[k] in sd and sd[names[k]].shape != s
    ]
    return summarize(missing, unexpected, bad)


def summarize(missing: Sequence[str], unexpected: Sequence[str], bad: Sequence[str]) -> str:
    return "; ".join(
        f"{n} {len(ks)} ({', '.join(ks[:3])}{', ...' if len(ks) > 3 else ''})"
        for n, ks in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad))
        if ks
    )


def load_checked(
    model: torch.nn.Module, sd: Dict[str, torch.Tensor], message: str, optional: Iterable[str] = ()
) -> None:
    """``model.load_state_dict(sd)`` after :func:`key_mismatch`; WeightsError ``'<message>: <mismatch>'`` on any."""
    optional = set(optional)
    problem = key_mismatch({k: v.shape for k, v in model.state_dict().items()}, sd, optional)
    if problem:
        raise WeightsError(f"{message}: {problem}")
    model.load_state_dict(sd, strict=not optional)
