"""nerfstudio 1.1.5 on torch >= 2.6: make its checkpoint loading work without environment variables.

torch.load now defaults to ``weights_only=True``; nerfstudio's checkpoints (saved by its own trainer) contain
numpy scalars and dtypes (e.g. in grad-scaler / scheduler state), so ``ns-eval`` and ``ns-train --load-dir``
fail with "Unsupported global: numpy.core.multiarray.scalar". Registering exactly those numpy types as safe
globals keeps the safe loader (no arbitrary pickles) and lets nerfstudio's own ``torch.load`` calls succeed.
Imported by the pipeline module, which nerfstudio imports for every featurenerf method.
"""

from __future__ import annotations

import numpy as np
import torch


def _numpy_globals() -> list:
    out = []
    try:
        from numpy.core.multiarray import scalar  # type: ignore[attr-defined]  # numpy < 2 (nerfstudio pins it)

        out.append(scalar)
    except ImportError:  # pragma: no cover
        pass
    out.append(np.dtype)
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        t = getattr(getattr(np, "dtypes", None), name, None)
        if t is not None:
            out.append(t)
    return out


def register_safe_globals() -> None:
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(_numpy_globals())


register_safe_globals()


def fill_missing_fields(config) -> None:
    """Give a dataclass config loaded from an older run's config.yml (nerfstudio's yaml loader restores the saved
    attributes only) the defaults of fields added since, recursively; saved values are kept."""
    import dataclasses

    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return
    for f in dataclasses.fields(config):
        if not hasattr(config, f.name):
            if f.default is not dataclasses.MISSING:
                setattr(config, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                setattr(config, f.name, f.default_factory())
        else:
            fill_missing_fields(getattr(config, f.name))
