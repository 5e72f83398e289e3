"""``featurenerf-protocol``: draw the evaluation pairs of one or more categories and write them as versioned files.

featurenerf-protocol --data data/shapenet/chair                    # -> configs/protocols/chair_test_v2.json
featurenerf-protocol --data data/shapenet --all-categories         # every annotated category of the root
featurenerf-protocol --data data/shapenet/chair --num-pairs 200 --seed 1 --out my_chair.json
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro
from rich.console import Console

from featurenerf_ns.data.instances import CategoryData
from featurenerf_ns.data.layout import FeatureNeRFDataError
from featurenerf_ns.eval.protocols import PROTOCOL_DIR, default_protocol_path, make_protocol

CONSOLE = Console(soft_wrap=True)


@dataclass
class ProtocolCommand:
    """Draw cross-instance, novel-view and (v2) cross-view pairs (deterministic from the seed) that share keypoints
    and parts."""

    data: Path = Path("data/shapenet/chair")
    """A category (<root>/<category>) or, with --all-categories, a data root."""
    split: Literal["val", "test", "train"] = "test"
    num_pairs: int = 1000
    """Pairs of each kind (cross-instance, novel-view, cross-view)."""
    seed: int = 0
    version: Literal[1, 2] = 2
    """Protocol version: 1 = cross-instance (same view) + novel-view only; 2 adds cross-view pairs."""
    min_view_angle: float = 60.0
    """v2 cross-view pairs: least angle in degrees between the two cameras' optical axes."""
    out: Optional[Path] = None
    """Output file (one category) or directory (--all-categories); default configs/protocols/."""
    all_categories: bool = False

    def main(self) -> None:

        if self.all_categories:
            root = Path(self.data)
            names = sorted(p.name for p in (root / "img").iterdir() if p.is_dir()) if (root / "img").is_dir() else []
            if not names:
                raise FeatureNeRFDataError(
                    f"{root / 'img'}: no categories found; pass a data root such as data/shapenet"
                )
            cats = [CategoryData(root, n) for n in names]
            outs = [default_protocol_path(c.category, self.split, self.out or PROTOCOL_DIR, self.version) for c in cats]
        else:
            cats = [CategoryData(self.data)]
            outs = [self.out or default_protocol_path(cats[0].category, self.split, version=self.version)]
        for cat, out in zip(cats, outs):
            if not cat.has_annotations:
                CONSOLE.print(f"[yellow]{cat.category}: no annotations ({cat.layout.category_file}); skipped[/yellow]")
                continue
            proto = make_protocol(
                cat, self.split, self.num_pairs, self.seed, version=self.version, min_view_angle=self.min_view_angle
            )
            proto.save(out)
            counts = [len(proto.cross_instance), len(proto.novel_view)] + (
                [len(proto.cross_view)] if self.version >= 2 else []
            )
            short = (
                "" if all(n == self.num_pairs for n in counts) else " [yellow](fewer valid pairs than asked)[/yellow]"
            )
            xv = f" + {len(proto.cross_view)} cross-view (>= {self.min_view_angle:g} deg)" if self.version >= 2 else ""
            CONSOLE.print(
                f"{out}: {cat.category} {self.split} v{self.version}, {len(proto.cross_instance)} cross-instance + "
                f"{len(proto.novel_view)} novel-view{xv} pairs, seed {self.seed}, data {proto.data_fingerprint}{short}"
            )


def entrypoint() -> None:

    cmd = tyro.cli(ProtocolCommand, description=__doc__)
    try:
        cmd.main()
    except FeatureNeRFDataError as e:
        CONSOLE.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
