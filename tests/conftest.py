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
