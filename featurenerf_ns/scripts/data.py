"""``featurenerf-data``: generate the embedded procedural benchmark and look at it.

featurenerf-data procedural --category chair --num-instances 60 --out data/shapenet
featurenerf-data procedural --category all --num-instances 20 --out data/shapenet
featurenerf-data contact-sheet --data data/shapenet --out docs/contact_sheet.png
featurenerf-data scene --out data/scene     # the multi-object scene of n3f (nerfstudio transforms.json)
featurenerf-data meshes --input my_meshes/ --category mug --out data/meshes   # your own OBJ / GLB / PLY meshes
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from rich.progress import Progress

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.meshes import mesh_settings, render_meshes
from featurenerf_ns.data.procedural.categories import CATEGORY_NAMES
from featurenerf_ns.data.procedural.contact_sheet import make_contact_sheet
from featurenerf_ns.data.procedural.generate import (
    GeneratorSettings,
    ViewSettings,
    check_settings,
    generate_category,
)
from featurenerf_ns.data.procedural.scene import SceneSettings, generate_scene, render_count, scene_complete
from featurenerf_ns.utils.cli import make_console, progress_bar, rate_progress, run_subcommands

CONSOLE = make_console()


def _rate_updater(progress: Progress, name: str, total: int) -> Tuple[Callable[[int, int], None], Dict[str, int]]:
    """(``progress(n_done, n_total)`` callback of one category's task, dict whose ``done`` is the count already
    complete when the run started (resumed instances are not counted in the rate))."""
    task = progress.add_task(name, total=total, rate="")
    t0 = time.perf_counter()
    first: Dict[str, int] = {}

    def update(done: int, total: int) -> None:
        first.setdefault("done", done)
        new = done - first["done"]
        dt = time.perf_counter() - t0
        rate = f"{new / dt:.2f} inst/s" if new and dt > 0 else ""
        progress.update(task, completed=done, rate=rate)

    return update, first


@dataclass(frozen=True)
class Procedural(ViewSettings):
    """Generate procedural part-annotated instances in the official FeatureNeRF layout (deterministic, resumable)."""

    category: str = "chair"
    """chair, car, airplane, table, bottle, motorbike, or 'all'."""
    num_instances: int = 60
    """Instances per category (split 70/10/20 train/val/test by the seed)."""
    out: Path = Path("data/shapenet")
    """Data root; the category lands in <out>/img/<category>, <out>/camera/<category>, ..."""
    workers: int = max(1, min(2, os.cpu_count() or 1))
    """Worker processes."""
    overwrite: bool = False
    """Delete existing data of the category first (needed when settings change)."""

    def main(self) -> None:

        cats = CATEGORY_NAMES if self.category == "all" else [self.category]
        for cat in cats:
            if cat not in CATEGORY_NAMES:
                raise FeatureNeRFDataError(
                    f"--category {cat!r}: unknown category; choose one of {', '.join(CATEGORY_NAMES)} or all"
                )
        total_views = 0
        start = time.perf_counter()
        with rate_progress(CONSOLE) as progress:
            for cat in cats:
                settings = GeneratorSettings(category=cat, num_instances=self.num_instances, **self.view_settings())
                problem = check_settings(settings)
                if problem:
                    raise FeatureNeRFDataError(problem)
                update, first = _rate_updater(progress, cat, self.num_instances)
                split = generate_category(
                    self.out, settings, workers=self.workers, overwrite=self.overwrite, progress=update
                )
                made = self.num_instances - first.get("done", 0)
                views = sum(len(split[s]) * (self.train_views if s == "train" else self.eval_views) for s in split)
                total_views += round(views * made / self.num_instances)  # views rendered by this run
        elapsed = time.perf_counter() - start
        CONSOLE.print(
            f"[green]done[/green]: {len(cats)} categor{'y' if len(cats) == 1 else 'ies'} "
            f"x {self.num_instances} instances "
            f"at {self.resolution}x{self.resolution} in {self.out} — rendered {total_views} views in {elapsed:.1f} s "
            f"({total_views / max(elapsed, 1e-9):.0f} views/s, {self.workers} worker(s))",
            soft_wrap=True,
        )


@dataclass(frozen=True)
class Meshes(ViewSettings):
    """Render your own meshes (OBJ / GLB / glTF / PLY / STL / OFF, one instance each) into the FeatureNeRF layout with
    the benchmark's cameras and annotations: parts from OBJ groups, glTF meshes or <stem>.labels.txt/.npy,
    keypoints from <stem>.keypoints.json (formats: featurenerf_ns/data/meshes.py). Resumable."""

    input: Path
    """Directory of mesh files (not searched recursively)."""
    category: str
    """Category name; the data lands in <out>/img/<category>, <out>/camera/<category>, ..."""
    out: Path = Path("data/meshes")
    rotate: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Degrees about x, then y, then z (R = Rz Ry Rx) into the canonical frame (+z up, front towards -y); e.g.
    90 0 0 for a y-up mesh."""
    parts: Tuple[str, ...] = ()
    """Part names in label order (label id = index + 1; names of integer ids in label files); default: the sorted
    union of the meshes' part names."""
    workers: int = max(1, min(2, os.cpu_count() or 1))
    overwrite: bool = False
    """Delete existing data of the category first (needed when meshes or settings change)."""

    def main(self) -> None:
        start = time.perf_counter()
        settings = mesh_settings(
            self.input, self.category, self.parts, rotate=tuple(self.rotate), **self.view_settings()
        )
        problem = check_settings(settings)
        if problem:
            raise FeatureNeRFDataError(problem)
        n = len(settings.sources)
        with rate_progress(CONSOLE) as progress:
            update, first = _rate_updater(progress, self.category, n)
            split = render_meshes(self.out, settings, self.workers, self.overwrite, update)
        elapsed = time.perf_counter() - start
        CONSOLE.print(
            f"[green]done[/green]: {n - first.get('done', 0)} of {n} meshes rendered in {elapsed:.1f} s "
            f"(train/val/test {len(split['train'])}/{len(split['val'])}/{len(split['test'])}, parts "
            f"{', '.join(settings.parts)}; {len(settings.keypoints)} keypoints); use it as --data "
            f"{self.out / self.category}",
            soft_wrap=True,
        )


@dataclass
class ContactSheet:
    """Write a PNG with a few instances per category: RGB and part labels + keypoints."""

    data: Path = Path("data/shapenet")
    out: Path = Path("docs/contact_sheet.png")
    categories: Optional[Tuple[str, ...]] = None
    """Default: every generated category in --data."""
    instances: int = 4

    def main(self) -> None:

        path = make_contact_sheet(self.data, self.out, self.categories, self.instances)
        CONSOLE.print(f"[green]wrote[/green] {path}")


@dataclass
class Scene:
    """Generate the multi-object scene of the per-scene systems (N3F): nerfstudio transforms.json, RGB frames,
    depth / instance / amodal masks, surface samples and ground-truth edit renders (deterministic)."""

    out: Path = Path("data/scene")
    settings: SceneSettings = SceneSettings()
    """What the scene is made of (objects, seed, resolution, views, held-out spacing, ...)."""
    overwrite: bool = False
    """Replace a scene of other settings at --out."""

    def main(self) -> None:
        if scene_complete(self.out, self.settings) and not self.overwrite:
            CONSOLE.print(f"[green]up to date[/green]: {self.out} (fingerprint {self.settings.fingerprint()})")
            return
        start = time.perf_counter()
        with progress_bar(True, "rendering the scene", render_count(self.settings)) as advance:

            def update(d: int, total: int) -> None:
                advance()

            generate_scene(self.out, self.settings, overwrite=self.overwrite, progress=update)
        CONSOLE.print(
            f"[green]done[/green]: {len(self.settings.objects)} objects, {self.settings.num_views} views at "
            f"{self.settings.resolution}x{self.settings.resolution} in {self.out} "
            f"({time.perf_counter() - start:.1f} s); "
            f"train with `ns-train n3f-tiny --data {self.out}`",
            soft_wrap=True,
        )


def entrypoint() -> None:
    run_subcommands(
        {"procedural": Procedural, "meshes": Meshes, "contact-sheet": ContactSheet, "scene": Scene},
        __doc__,
        (FeatureNeRFDataError,),
    )


if __name__ == "__main__":
    entrypoint()
