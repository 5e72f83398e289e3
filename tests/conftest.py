"""Shared fixtures: small procedural datasets generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

from featurenerf_ns.data.procedural.generate import GeneratorSettings, generate_category  # noqa: E402

SMALL = dict(num_instances=6, seed=3, resolution=128, train_views=6, eval_views=8, num_points=1024)


def make_dataset(root: Path, category: str = "chair", **overrides) -> GeneratorSettings:
    settings = GeneratorSettings(category=category, **{**SMALL, **overrides})
    generate_category(root, settings, workers=1)
    return settings


@pytest.fixture(scope="session")
def chair_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapenet")
    make_dataset(root, "chair")
    return root


@pytest.fixture(scope="session")
def tiny_run(chair_root, tmp_path_factory):
    """One trained featurenerf-tiny run (random-weight teacher, 3 instances, 32 px) shared by the end-to-end and
    viewer tests: (run directory, ns-train output)."""
    from _runs import TINY_RUN_STEPS, train_run

    return train_run(
        chair_root,
        tmp_path_factory.mktemp("tiny_run"),
        "a",
        TINY_RUN_STEPS,
        extra=["--pipeline.correspondence.callback-every", "2", "--pipeline.correspondence.callback-pairs", "1"],
    )
