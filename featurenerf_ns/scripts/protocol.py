"""``featurenerf-protocol``: draw the evaluation pairs of one or more categories and write them as versioned files.

    featurenerf-protocol --data data/shapenet/chair                    # -> configs/protocols/chair_test_v1.json
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

CONSOLE = Console(soft_wrap=True)


@dataclass
class ProtocolCommand:
    """Draw cross-instance and novel-view pairs (deterministic from the seed) that share keypoints and parts."""

    data: Path = Path("data/shapenet/chair")
    """A category (<root>/<category>) or, with --all-categories, a data root."""
    split: Literal["val", "test", "train"] = "test"
    num_pairs: int = 1000
    """Pairs of each kind (cross-instance, novel-view)."""
    seed: int = 0
    out: Optional[Path] = None
    """Output file (one category) or directory (--all-categories); default configs/protocols/."""
    all_categories: bool = False

    def main(self) -> None:
        from featurenerf_ns.instances import CategoryData
        from featurenerf_ns.protocols import PROTOCOL_DIR, default_protocol_path, make_protocol

        if self.all_categories:
            root = Path(self.data)
            names = sorted(p.name for p in (root / "img").iterdir() if p.is_dir()) if (root / "img").is_dir() else []
            if not names:
                from featurenerf_ns.data_layout import FeatureNeRFDataError

                raise FeatureNeRFDataError(f"{root / 'img'}: no categories found; pass a data root such as data/shapenet")
            cats = [CategoryData(root, n) for n in names]
            outs = [default_protocol_path(c.category, self.split, self.out or PROTOCOL_DIR) for c in cats]
        else:
            cats = [CategoryData(self.data)]
            outs = [self.out or default_protocol_path(cats[0].category, self.split)]
        for cat, out in zip(cats, outs):
            if not cat.has_annotations:
                CONSOLE.print(f"[yellow]{cat.category}: no annotations ({cat.layout.category_file}); skipped[/yellow]")
                continue
            proto = make_protocol(cat, self.split, self.num_pairs, self.seed)
            proto.save(out)
            short = "" if len(proto.cross_instance) == len(proto.novel_view) == self.num_pairs else " [yellow](fewer valid pairs than asked)[/yellow]"
            CONSOLE.print(f"{out}: {cat.category} {self.split}, {len(proto.cross_instance)} cross-instance + "
                          f"{len(proto.novel_view)} novel-view pairs, seed {self.seed}, data {proto.data_fingerprint}{short}")


def entrypoint() -> None:
    from featurenerf_ns.data_layout import FeatureNeRFDataError

    cmd = tyro.cli(ProtocolCommand, description=__doc__)
    try:
        cmd.main()
    except FeatureNeRFDataError as e:
        CONSOLE.print(f"[red]error:[/red] {e}")
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
