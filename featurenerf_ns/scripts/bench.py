"""``featurenerf-bench``: throughput, latency and peak memory of the hot paths, against the machine's own limit.

    featurenerf-bench                                   # CPU, all parts, writes outputs/bench.json
    featurenerf-bench --parts matmul field --device cuda
    featurenerf-bench --parts field step --presets paper --device cuda --compile --out outputs/bench_compiled.json

Each part runs in a fresh subprocess (spawn), so its peak resident memory is its own:

* ``matmul``: dense ``torch.mm`` GFLOP/s at the field's MLP shapes (samples x width @ width x width), float32 and
  bfloat16 (where fast: AMX / AVX512-BF16 CPUs, CUDA) — the machine's limits measured in the same run;
* ``field``: ray samples/s through the field, forward + backward, at the tiny and paper presets in each precision,
  and the achieved GFLOP/s (analytic FLOPs of its linear layers, backward = 2 x forward) as a fraction of the
  same precision's matmul peak;
* ``encoder``: time per image of the ResNet-34 encoder at 64² and 128² (forward, and forward + backward);
* ``step``: one training step of the tiny and the paper preset on the embedded chairs in each precision, split into
  data, encode, field, render (the rest of the forward pass), loss, backward and optimizer (needs data/shapenet and
  its teacher cache); the paper step is compared with the official code's 12.3 s on this machine;
* ``inference``: the paper preset's query (encode one 128² view + the 512-d feature at 10,000 points, vs the
  official 0.40 s); features of a pair (10k surface points each) plus transfer of 3D keypoints and part labels; one
  128² feature render (tiny preset, all pixels) in float32 and bfloat16; teacher caching images/s (DINOv2 ViT-S/14
  at 224 px);
* ``scale``: the data manager and teacher cache at 60, 600 and 3000 procedural instances (generation, cache build,
  disk, resident memory, data time per step; :mod:`featurenerf_ns.bench.scale`);
* ``smoothing`` (not in the default list; needs ``--scene``): the n3f-tiny training step with each feature smoother
  vs naive distillation, interleaved (:mod:`featurenerf_ns.bench.smoothing`).

``--compile`` times the ``field`` and ``step`` parts with the field's forward under ``torch.compile``; their figures
then end in ``_compiled`` (so a compiled run's JSON sits next to an eager one's), and ``*_first_call_s`` /
``*_first_step_s`` (the first call / step, compilation included) say what the compilation cost.

The parts live in :mod:`featurenerf_ns.bench.parts`, the targets in :mod:`featurenerf_ns.bench.targets`.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Tuple

import torch
import tyro
from rich.table import Table

from featurenerf_ns.bench.parts import COMPILED_PARTS, DEFAULT_PARTS, PARTS, PRESET_NAMES, run_part
from featurenerf_ns.bench.scale import SCALE_INSTANCES
from featurenerf_ns.bench.targets import targets
from featurenerf_ns.data.layout import atomic_write_json
from featurenerf_ns.utils.cli import make_console

CONSOLE = make_console(soft_wrap=True)


@dataclass
class BenchCommand:
    """Measure the hot paths (each part in its own process) and write JSON."""

    parts: Tuple[str, ...] = DEFAULT_PARTS
    """Default: all but ``smoothing`` (which needs --scene)."""
    device: str = "cpu"
    data: str = "data/shapenet/chair"
    """Embedded chairs with their teacher cache (for the `step` part)."""
    threads: int = 0
    """torch threads (0 = torch's default: all cores)."""
    scale_instances: Tuple[int, ...] = SCALE_INSTANCES
    """Instance counts of the `scale` part (each generated, cached and streamed in its own process)."""
    scene: str = "data/scene"
    """Generated scene with its teacher cache (for the `smoothing` part: featurenerf-data scene --out data/scene)."""
    presets: Tuple[str, ...] = PRESET_NAMES
    """Presets of the matmul, field and step parts."""
    compile: bool = False
    """Time the field and step parts with the field's forward under torch.compile (their figures end in
    ``_compiled``; the other parts run as usual)."""
    compile_backend: str = "inductor"
    """torch.compile backend of --compile (``eager``: graph capture only, no code generation)."""
    out: Path = Path("outputs/bench.json")

    def main(self) -> None:
        bad = [p for p in self.parts if p not in PARTS]
        if bad:
            raise SystemExit(f"featurenerf-bench: unknown part {bad[0]!r}; choose from {', '.join(PARTS)}")
        bad = [p for p in self.presets if p not in PRESET_NAMES]
        if bad or not self.presets:
            raise SystemExit(f"featurenerf-bench: --presets {bad[:1]}: choose one or more of {', '.join(PRESET_NAMES)}")
        results: Dict[str, dict] = {
            "machine": {
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "device": self.device,
                "torch_threads": self.threads or torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name(0) if self.device.startswith("cuda") else None,
                "compile_backend": self.compile_backend if self.compile else None,
            }
        }
        peak: Dict[str, float] = {}
        ctx = get_context("spawn")
        for part in self.parts:
            CONSOLE.print(f"[bold]{part}[/bold] ...")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
                job = ex.submit(
                    run_part,
                    part,
                    self.device,
                    self.data,
                    peak,
                    self.threads,
                    self.scale_instances,
                    self.scene,
                    self.presets,
                    self.compile_backend if self.compile and part in COMPILED_PARTS else None,
                )
                res, rss = job.result()
            res["peak_rss_mib"] = rss
            results[part] = res
            if part == "matmul":
                peak = {k: v for k, v in res.items() if k.endswith(("_gflops", "_gflops_bf16"))}
        table = Table(
            title=f"featurenerf-bench on {self.device} ({results['machine']['cpus']} CPUs, torch {torch.__version__})"
        )
        for col in ("part", "figure", "value"):
            table.add_column(col, justify="right" if col == "value" else "left")
        for part, res in results.items():
            if part == "machine":
                continue
            for k, v in res.items():
                table.add_row(part, k, f"{v:,.3f}" if isinstance(v, float) else str(v))
        CONSOLE.print(table)
        results["targets"] = targets(results)
        for name, (value, limit, met) in results["targets"].items():
            CONSOLE.print(
                f"target {name}: {value:.3g} (limit {limit}) -> "
                + ("[green]met[/green]" if met else "[red]NOT met[/red]")
            )
        atomic_write_json(self.out, results)
        CONSOLE.print(f"wrote {self.out}")


def entrypoint() -> None:
    tyro.cli(BenchCommand, description=__doc__).main()


if __name__ == "__main__":
    entrypoint()
