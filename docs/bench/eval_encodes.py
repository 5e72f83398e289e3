"""The correspondence evaluation of a trained run at the main job's size (50 pairs of each kind): seconds, how many
times the image encoder ran, and the metrics (JSON, to compare two commits). Run from the folder the run's config.yml
paths are relative to: ``python docs/bench/eval_encodes.py <run>/config.yml out.json``.

Session 26 (2026-12-07, chair no-distill, 6,000 steps): 450 encodes before, 250 with the provider's memo of the last
four conditionings; all 35 metrics identical; 29.9 / 36.4 s vs 33.2 / 36.7 s (the machine's noise exceeds the gain).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from nerfstudio.utils.eval_utils import eval_setup


def main() -> None:
    _, pipeline, _, _ = eval_setup(Path(sys.argv[1]), test_mode="test")
    calls = []
    pipeline.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    seconds = []
    for _ in range(2):
        calls.clear()
        t = time.perf_counter()
        metrics, _ = pipeline.correspondence_metrics(50, progress=False)
        seconds.append(time.perf_counter() - t)
        print(f"{seconds[-1]:.1f} s, {len(calls)} encodes", flush=True)
    Path(sys.argv[2]).write_text(json.dumps({"seconds": seconds, "encodes": len(calls), "metrics": metrics}))


if __name__ == "__main__":
    main()
