"""The 'untrained network' baseline: a run's pipeline with freshly initialised weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig


def untrained_pipeline(cfg_path: Path, seed: int = 0):
    """The pipeline of a run's config with freshly initialised weights (torch seed ``seed``), in eval mode: the
    'untrained network' baseline."""
    import torch
    import yaml
    from nerfstudio.configs.method_configs import all_methods

    config = yaml.load(Path(cfg_path).read_text(), Loader=yaml.Loader)
    if config.method_name in all_methods:
        method = cast("TrainerConfig", all_methods[config.method_name])  # a featurenerf method, not a dummy
        config.pipeline.datamanager._target = method.pipeline.datamanager._target
    torch.manual_seed(seed)
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    pipeline.eval()
    return pipeline
