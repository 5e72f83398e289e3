"""``featurenerf-teacher``: cache teacher features, evaluate a teacher on its own, look at its features.

featurenerf-teacher cache --data data/shapenet/chair                      # train split, DINOv2 default
featurenerf-teacher cache --data data/shapenet/chair --max-instances 10 --teacher.layer 8 --teacher.facet key
featurenerf-teacher cache --data data/shapenet/chair --teacher.pca-dim 64         # N3F-style PCA-64 cache
featurenerf-teacher cache --data data/shapenet/chair --teacher.precision float32  # reference numerics (default auto)
featurenerf-teacher eval-pck --data data/shapenet/chair                   # DINOv2 vs the same net, random weights
featurenerf-teacher pca-images --data data/shapenet/chair --out outputs/teacher_pca
featurenerf-teacher info --data data/shapenet/chair
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from rich.table import Table

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_json
from featurenerf_ns.eval.correspondence import evaluate
from featurenerf_ns.eval.protocols import make_protocol
from featurenerf_ns.eval.providers import TeacherProvider
from featurenerf_ns.teachers import TeacherError, TeacherSpec
from featurenerf_ns.teachers.cache import build_cache, cell_alpha, load_views
from featurenerf_ns.teachers.pca import PcaColors
from featurenerf_ns.utils.cli import make_console, run_subcommands

CONSOLE = make_console(soft_wrap=True)


@dataclass
class _TeacherOnData:
    """The options every teacher command shares: which data, which teacher."""

    data: Path = Path("data/shapenet/chair")
    category: Optional[str] = None
    teacher: TeacherSpec = field(default_factory=TeacherSpec)

    def category_data(self):

        return CategoryData(self.data, self.category)


@dataclass
class _TeacherOnSplit(_TeacherOnData):
    split: str = "train"
    """train | val | test | all."""
    max_instances: Optional[int] = None
    """Only the first N instances of the split."""

    def instances(self):
        """(category data, the instance ids selected by split and max_instances)."""
        cat = self.category_data()
        ids = [i for s in ("train", "val", "test") for i in cat.ids(s)] if self.split == "all" else cat.ids(self.split)
        return cat, (ids[: self.max_instances] if self.max_instances else ids)


@dataclass
class Cache(_TeacherOnSplit):
    """Extract and cache teacher features of every view of a split (resumes; rebuilds when settings change)."""

    def main(self) -> None:

        cat, ids = self.instances()
        t = self.teacher.setup()
        CONSOLE.print(
            f"teacher: {t.label} -> {t.dim} x {t.map_size()[0]} x {t.map_size()[1]} ({t.resolved_precision()}); "
            f"{len(ids)} {cat.category} instances ({self.split})"
        )
        r = build_cache(cat, t, ids, self.teacher.cache_dir, pca_dim=self.teacher.pca_dim)
        size = sum((r.cache_dir / f"{i}.npy").stat().st_size for i in ids)
        rate = f"{r.images_per_second:.1f} images/s" if r.built else "nothing to do (cache up to date)"
        CONSOLE.print(
            f"cache {r.cache_dir}: {len(r.built)} instances extracted, {len(r.reused)} reused; {r.images} images in "
            f"{r.seconds:.1f} s = {rate}; {size / 2**20:.1f} MiB ({size / max(len(ids), 1) / 2**20:.2f} MiB/instance)"
        )


@dataclass
class EvalPck(_TeacherOnSplit):
    """Teacher-only 2D cross-instance keypoint transfer (the paper's "DINO baseline"), trained vs random weights."""

    max_instances: Optional[int] = 10
    num_pairs: int = 200
    seed: int = 0
    random_baseline: bool = True
    """Also evaluate the same network with random weights."""
    out: Optional[Path] = None
    """Write the results as JSON here."""

    def main(self) -> None:

        cat, ids = self.instances()
        proto = make_protocol(cat, self.split if self.split != "all" else "train", self.num_pairs, self.seed, ids=ids)
        pairs = proto.cross_instance
        if len(pairs) < self.num_pairs:
            CONSOLE.print(
                f"[yellow]only {len(pairs)} pairs with shared visible keypoints among {len(ids)} instances[/yellow]"
            )
        runs = [("trained", None)] + ([("random", "random")] if self.random_baseline else [])
        results = {}
        for tag, w in runs:
            teacher = self.teacher.setup(weights=w)
            t0 = time.perf_counter()
            m, _ = evaluate(TeacherProvider(cat, teacher), cat, proto, ("kp2d_cross",), resolution=128)
            r: Dict[str, Any] = {k.rsplit("/", 1)[-1]: v for k, v in m.items()}
            r.update(
                num_pairs=len(pairs),
                num_keypoints=int(r["num_keypoints"]),
                seconds=round(time.perf_counter() - t0, 1),
                label=teacher.label,
            )
            results[tag] = r
        table = Table(
            title=f"teacher-only 2D keypoint transfer, {cat.category}, {len(pairs)} cross-instance pairs "
            f"({results['trained']['num_keypoints']} keypoints), PCK at px/128"
        )
        table.add_column("teacher")
        keys = [k for k in results["trained"] if k.startswith("pck@")]
        for k in keys:
            table.add_column(k, justify="right")
        for tag, r in results.items():
            table.add_row(r["label"], *[f"{r[k]:.1f}" for k in keys])
        CONSOLE.print(table)
        if self.out:
            atomic_write_json(self.out, results)
            CONSOLE.print(f"wrote {self.out}")


def pca_rgb(maps: torch.Tensor, alpha: torch.Tensor) -> np.ndarray:
    """(B, D, h, w) maps -> (B, h, w, 3) uint8: joint PCA-3 over the foreground cells of all maps, background black."""

    a = cell_alpha(alpha, maps.shape[-2:])[:, 0]
    feats = maps.permute(0, 2, 3, 1)
    rgb = PcaColors.fit(feats[a > 0.5])(feats) * (a[..., None] > 0.5)
    return (rgb.numpy() * 255).round().astype(np.uint8)


@dataclass
class PcaImages(_TeacherOnData):
    """PNG grid: input views and the PCA (3 components, fitted jointly over the shown views) of teacher features."""

    instances: Tuple[str, ...] = ()
    """Default: the first three train instances."""
    views: Tuple[int, ...] = (0, 12, 25)
    random_baseline: bool = True
    out: Path = Path("outputs/teacher_pca")

    def main(self) -> None:
        from PIL import Image

        cat = self.category_data()
        ids = list(self.instances) or cat.ids("train")[:3]
        rgbs, alphas = [], []
        for inst in ids:
            rgb, alpha = load_views(cat.instance(inst), self.views)
            rgbs.append(rgb)
            alphas.append(alpha)
        rgb, alpha = torch.cat(rgbs), torch.cat(alphas)
        H, W = rgb.shape[-2:]
        rows = [(rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)]
        labels = ["input"]
        for w in [None] + (["random"] if self.random_baseline else []):
            t = self.teacher.setup(weights=w)
            maps = t.extract(rgb, alpha, category=cat.category).features
            pc = pca_rgb(maps, alpha)
            rows.append(np.stack([np.asarray(Image.fromarray(p).resize((W, H), Image.Resampling.NEAREST)) for p in pc]))
            labels.append(t.label)
        self.out.mkdir(parents=True, exist_ok=True)
        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
        name = f"{cat.category}_{self.teacher.name}.png"
        Image.fromarray(grid).save(self.out / name)
        CONSOLE.print(
            f"wrote {self.out / name}: rows = {' | '.join(labels)}; "
            f"columns = {len(ids)} instances x views {list(self.views)}"
        )


@dataclass
class Info:
    """List the teacher caches of a data root: teacher, settings, instances, size."""

    data: Path = Path("data/shapenet")

    def main(self) -> None:
        root = self.data if (self.data / "teacher_cache").is_dir() else self.data.parent
        mfs = sorted((root / "teacher_cache").glob("*/*/manifest.json"))
        if not mfs:
            CONSOLE.print(
                f"no teacher caches under {root / 'teacher_cache'}; build one with `featurenerf-teacher cache`"
            )
        for mf in mfs:
            m = json.loads(mf.read_text())
            size = sum(f.stat().st_size for f in mf.parent.glob("*.npy"))
            idn = m["identity"]
            state = "complete" if m.get("complete") else "[yellow]incomplete[/yellow]"
            CONSOLE.print(
                f"{mf.parent}: {m['label']}, {idn.get('pca_dim') or idn['dim']} x {idn['map_size']}, "
                f"{len(m.get('instances', []))} instances, {size / 2**20:.1f} MiB, {state}, "
                f"{m.get('images_per_second')} images/s, {idn.get('precision', 'float32')}"
            )


def entrypoint() -> None:

    run_subcommands(
        {"cache": Cache, "eval-pck": EvalPck, "pca-images": PcaImages, "info": Info},
        __doc__,
        (FeatureNeRFDataError, TeacherError),
    )


if __name__ == "__main__":
    entrypoint()
