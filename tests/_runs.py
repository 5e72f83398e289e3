"""Helpers of the end-to-end tests: nerfstudio's own CLIs (ns-train, ns-eval) as subprocesses on the small fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
TINY_RUN_STEPS = 4
"""The shared tiny run (conftest ``tiny_run``): 4 steps, learning-curve callback at steps 0 and 2."""
SMALL_MODEL_ARGS = (
    "--pipeline.datamanager.eval-num-instances", "1",
    "--pipeline.datamanager.eval-target-views", "5",
    "--pipeline.model.num-coarse-samples", "8",
    "--pipeline.model.num-importance-samples", "4",
    "--pipeline.model.num-depth-samples", "4",
    "--pipeline.correspondence.split", "train",
)  # fmt: skip
"""ns-train arguments of every end-to-end test: few samples, correspondence on the train split."""
SMALL_DATA_ARGS = ("featurenerf-data", "--max-instances", "3")
"""The dataparser subcommand and its options (3 instances); last on an ns-train command line."""
RANDOM_TEACHER_ARGS = (
    "--pipeline.datamanager.teacher.weights",
    "random",
    "--pipeline.datamanager.teacher.input-size",
    "56",
)
"""A random-weight teacher at 56 px: the teacher cache without the converted DINOv2 weights."""


def _env():
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    return env


def train_run(
    data: Path, out: Path, stamp: str, iters: int, method: str = "featurenerf-tiny", extra=(), data_args=SMALL_DATA_ARGS
):
    cmd = [
        str(BIN / "ns-train"),
        method,
        "--data",
        str(data / "chair"),
        "--max-num-iterations",
        str(iters),
        "--output-dir",
        str(out),
        "--experiment-name",
        "e2e",
        "--timestamp",
        stamp,
        "--vis",
        "tensorboard",
        "--steps-per-eval-batch",
        "2",
        "--steps-per-eval-image",
        "3",
        "--steps-per-save",
        "2",
        "--pipeline.datamanager.image-size",
        "32",
        *SMALL_MODEL_ARGS,
        "--pipeline.correspondence.num-pairs",
        "2",
        *extra,
    ]
    if method != "featurenerf-nodistill-tiny":
        cmd += list(RANDOM_TEACHER_ARGS)
    cmd += list(data_args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out / "e2e" / method / stamp, r.stdout + r.stderr


def eval_run(run: Path, out: Path) -> dict:
    r = subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(run / "config.yml"), "--output-path", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text())["results"]
