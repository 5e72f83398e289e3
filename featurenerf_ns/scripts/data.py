"""``featurenerf-data``: generate the embedded procedural benchmark and look at it.

featurenerf-data procedural --category chair --num-instances 60 --out data/shapenet
featurenerf-data procedural --category all --num-instances 20 --out data/shapenet
featurenerf-data contact-sheet --data data/shapenet --out docs/contact_sheet.png
featurenerf-data scene --out data/scene     # the multi-object scene of n3f (nerfstudio transforms.json)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.data.procedural.categories import CATEGORY_NAMES
from featurenerf_ns.data.procedural.contact_sheet import make_contact_sheet
from featurenerf_ns.data.procedural.generate import GeneratorSettings, check_settings, generate_category
from featurenerf_ns.data.procedural.scene import SceneSettings, generate_scene, render_count, scene_complete
from featurenerf_ns.utils.cli import make_console, progress_bar, run_subcommands

CONSOLE = make_console()


@dataclass
class Procedural:
    """Generate procedural part-annotated instances in the official FeatureNeRF layout (deterministic, resumable)."""

    category: str = "chair"
    """chair, car, airplane, table, bottle, motorbike, or 'all'."""
    num_instances: int = 60
    """Instances per category (split 70/10/20 train/val/test by the seed)."""
    out: Path = Path("data/shapenet")
    """Data root; the category lands in <out>/img/<category>, <out>/camera/<category>, ..."""
    seed: int = 0
    resolution: int = 128
    """Render width = height in pixels."""
    train_views: int = 50
    """Random upper-hemisphere views per train instance."""
    eval_views: int = 50
    """Fixed views per val/test instance (the same for every instance)."""
    supersample: int = 2
    """Anti-aliasing: supersample^2 rays per pixel for RGBA (labels/depth use the pixel-centre ray)."""
    num_points: int = 2048
    """Part-labelled surface points per instance."""
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
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=CONSOLE) as progress:
            for cat in cats:
                settings = GeneratorSettings(
                    category=cat,
                    num_instances=self.num_instances,
                    seed=self.seed,
                    resolution=self.resolution,
                    train_views=self.train_views,
                    eval_views=self.eval_views,
                    supersample=self.supersample,
                    num_points=self.num_points,
                )
                problem = check_settings(settings)
                if problem:
                    raise FeatureNeRFDataError(problem)
                task = progress.add_task(cat, total=self.num_instances, rate="")
                t0 = time.perf_counter()
                first: Dict[str, int] = {}

                def update(done: int, total: int, task=task, t0=t0, first=first) -> None:
                    first.setdefault("done", done)
                    new = done - first["done"]
                    dt = time.perf_counter() - t0
                    rate = f"{new / dt:.2f} inst/s" if new and dt > 0 else ""
                    progress.update(task, completed=done, rate=rate)

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
        {"procedural": Procedural, "contact-sheet": ContactSheet, "scene": Scene}, __doc__, (FeatureNeRFDataError,)
    )


if __name__ == "__main__":
    entrypoint()
