"""The viewer's outputs from a render's model outputs: stable PCA-3 colourings, query similarity and a part-label
overlay. Pure functions of tensors (the panel owns the GUI state and the caches)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from featurenerf_ns.teachers.pca import PcaColors
from featurenerf_ns.utils.palette import part_colors


def fit_pca_colors(renders: Sequence[Dict[str, torch.Tensor]], names: List[str]) -> Dict[str, PcaColors]:
    """One PCA-3 colouring per feature ``name``, fitted on the foreground pixels (accumulation > 0.5; all pixels
    where a render has none) of all ``renders`` together, each an (H, W, *) output dict."""
    feats: Dict[str, list] = {n: [] for n in names}
    for out in renders:
        fg = out["accumulation"][..., 0] > 0.5
        if not fg.any():
            fg = torch.ones_like(fg)
        for n in feats:
            feats[n].append(out[n][fg])
    return {n: PcaColors.fit(torch.cat(v)) for n, v in feats.items()}


def compose_outputs(
    out: Dict[str, torch.Tensor],
    pca: Dict[str, PcaColors],
    name: str,
    query: Optional[Dict[str, torch.Tensor]],
    floor: float,
    parts: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> Dict[str, torch.Tensor]:
    """(H, W, *) model outputs -> rgb, depth, accumulation, ``feature_pca`` / ``nerf_feature_pca`` (the fixed
    colourings, times accumulation), ``similarity`` (cosine of feature ``name`` to ``query[name]``, both centred on
    that PCA's mean, mapped from [floor, 1] to [0, 1]; zeros without a query) and ``parts`` (the colour dimmed, plus
    the label colour of each foreground pixel's nearest source point, ``parts`` = (features (P, D), labels (P,)))."""
    acc = out["accumulation"].clamp(0, 1)
    res = {"rgb": out["rgb"], "depth": out["depth"], "accumulation": acc}
    if "feature" in pca:
        res["feature_pca"] = pca["feature"](out["feature"]) * acc
    res["nerf_feature_pca"] = pca["nerf_feature"](out["nerf_feature"]) * acc
    # cosine similarity of features centred on the PCA mean (raw features share a large common component:
    # raw cosines on the object are all > 0.9)
    center = torch.from_numpy(pca[name].pca.mean).to(out[name])
    f = F.normalize(out[name].float() - center, dim=-1)
    if query is not None and name in query:
        sim = f @ F.normalize(query[name].to(f) - center, dim=0)
        res["similarity"] = ((sim[..., None] - floor) / max(1e-3, 1.0 - floor)).clamp(0, 1) * acc
    else:
        res["similarity"] = torch.zeros_like(acc)
    res["parts"] = parts_overlay(out["rgb"], acc, f, center, parts)
    return res


def parts_overlay(
    rgb: torch.Tensor,
    acc: torch.Tensor,
    f: torch.Tensor,
    center: torch.Tensor,
    parts: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Nearest source point (cosine of centred features; ``f`` is already centred and normalised) per pixel."""
    shown = rgb * 0.35
    if parts is None:
        return shown
    feats, labels = parts
    feats = F.normalize(feats.to(f) - center, dim=-1)
    flat = f.reshape(-1, f.shape[-1])
    idx = torch.cat([(flat[i : i + 8192] @ feats.T.to(flat)).argmax(-1) for i in range(0, len(flat), 8192)])
    lab = labels.to(idx.device)[idx].reshape(f.shape[:-1])
    colors = torch.as_tensor(part_colors(lab.cpu().numpy()), dtype=rgb.dtype, device=rgb.device)
    return torch.where(acc > 0.5, shown + 0.65 * colors, shown)
