"""Procedural data generation of one category (60 instances, 2 workers) into a temporary folder: seconds, and how
many of its files are byte-identical to a reference data root generated earlier (by older code). Run from the
repository root: ``python docs/bench/data_generation_ab.py chair data/shapenet``; for an A/B, run it on two commits
in turn.

Session 26 (2026-12-07): one BLAS thread per worker 22.1-22.7 s vs 27.1 s before (3,242 / 3,242 files identical);
then the renderer changes (ray directions once per camera, only sub-pixel rays shaded, hits indexed once) 18.0-20.0 s
vs 22.3-22.5 s, interleaved; chair and airplane identical to the reference data.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from featurenerf_ns.data.procedural.generate import GeneratorSettings, generate_category


def main() -> None:
    cat, ref = sys.argv[1], Path(sys.argv[2])
    out = Path(tempfile.mkdtemp())
    try:
        t = time.perf_counter()
        generate_category(out, GeneratorSettings(category=cat, num_instances=60), workers=2)
        dt = time.perf_counter() - t
        files = [p for p in out.rglob("*") if p.is_file() and cat in p.relative_to(out).parts]
        same = sum((ref / p.relative_to(out)).is_file() and (ref / p.relative_to(out)).read_bytes() == p.read_bytes()
                   for p in files)  # fmt: skip
        print(f"{cat}: {dt:.1f} s; {same} / {len(files)} files identical to {ref}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
