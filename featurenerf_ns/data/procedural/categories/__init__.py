"""Category generators of the procedural benchmark.

Each module defines ``PARTS`` (level-1 part names; label id = index + 1, 0 = background),
``KEYPOINTS`` (``(name, part)`` pairs in a fixed order) and ``build(rng) -> ShapeSpec``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CATEGORY_NAMES = ["chair", "car", "airplane", "table", "bottle", "motorbike"]


def get_category(name: str) -> ModuleType:
    if name not in CATEGORY_NAMES:
        raise ValueError(f"unknown category {name!r}; choose one of {', '.join(CATEGORY_NAMES)}")
    return importlib.import_module(f"featurenerf_ns.data.procedural.categories.{name}")
