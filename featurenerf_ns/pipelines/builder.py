"""The set-up both pipelines share: nerfstudio's ``VanillaPipeline.__init__`` without its point-cloud seeding (our
models take no seed points), plus the explicit hand-overs between data manager and model.

    datamanager = config.datamanager.setup(..., **datamanager_kwargs)
    model = config.model.setup(scene_box, num_train_data, metadata, ...,
                               teacher_feature_dim=datamanager.teacher_feature_dim, **model_kwargs)

A config loaded from an older run's config.yml first gets the defaults of the fields added since.
"""

from __future__ import annotations

import typing
from typing import Any, Dict, Optional

from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import Pipeline
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from featurenerf_ns.utils import compat


def setup_pipeline(
    pipeline: Pipeline,
    config,
    device,
    test_mode: str,
    world_size: int,
    local_rank: int,
    grad_scaler=None,
    datamanager_kwargs: Optional[Dict[str, Any]] = None,
    model_kwargs: Optional[Dict[str, Any]] = None,
) -> None:
    Pipeline.__init__(pipeline)
    compat.fill_missing_fields(config)
    p = typing.cast(Any, pipeline)  # an nn.Module: mypy would type its new attributes as Tensor | Module
    p.config, p.test_mode, p.world_size, p.local_rank = config, test_mode, world_size, local_rank
    dm = config.datamanager.setup(
        device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank, **(datamanager_kwargs or {})
    )
    dm.to(device)
    p.datamanager = dm
    train = dm.train_dataset
    p._model = config.model.setup(
        scene_box=train.scene_box,
        num_train_data=len(train),
        metadata=train.metadata,
        device=device,
        grad_scaler=grad_scaler,
        teacher_feature_dim=dm.teacher_feature_dim,
        **(model_kwargs or {}),
    )
    p.model.to(device)
    if world_size > 1:
        p._model = typing.cast(Model, DDP(p._model, device_ids=[local_rank], find_unused_parameters=True))
        dist.barrier(device_ids=[local_rank])
