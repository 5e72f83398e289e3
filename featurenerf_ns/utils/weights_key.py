"""A cache key for "these parameters may have changed": their storage and version counters plus a count of
optimiser steps taken in this process.

Caches derived from weights (the packed bf16 copies of :mod:`featurenerf_ns.model_components.packed_linear`, the
field's projected maps, the viewer's encodings) must be rebuilt after a training update. A parameter's ``_version``
alone does not say so: torch's fused Adam (the presets' optimiser on CPU) updates parameters in place without
bumping it (torch 2.14, tested in tests/test_model.py), so every optimiser step also advances a step count
through a global post-step hook (``torch.optim.optimizer.register_optimizer_step_post_hook``).
"""

from __future__ import annotations

from typing import Iterable

from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

_steps = [0]


def _count_step(optimizer, args, kwargs) -> None:
    _steps[0] += 1


register_optimizer_step_post_hook(_count_step)


def weights_key(params: Iterable[Tensor]) -> tuple:
    """(optimiser steps, then (data_ptr, _version) of each parameter): equal only while none of them can have
    changed."""
    return (_steps[0],) + tuple((p.data_ptr(), p._version) for p in params)
