"""Learning-rate schedule of the FeatureNeRF presets: hold, then anneal (off by default).

lr(s) = lr0 for s <= s0; lr0 * (lr_final / lr0) ** ((s - s0) / (s1 - s0)) for s0 < s < s1; lr_final after s1, with
s the absolute training step, s0 = ``decay_start``, s1 = ``decay_end``. ``decay_start=None`` (the default) keeps the
rate constant at every step (factor exactly 1.0), which is the official schedule (Adam 1e-4, no decay).

Why not nerfstudio's ``ExponentialDecaySchedulerConfig``: it decays from step 0 (a constant phase needs its warmup
with ``lr_pre_warmup`` set to the rate), and the point of this one is to anneal only the end of a long run, e.g.
``--optimizers.field.scheduler.decay-start 12000 --optimizers.field.scheduler.decay-end 14000`` (and the same for
``encoder``) continues a 12,000-step run with 2,000 annealed steps.
Steps are absolute also after ``--load-dir`` from a checkpoint saved without scheduler state (runs from before the
presets had one): :func:`featurenerf_ns.pipelines.callbacks.scheduler_alignment_callback` sets the counter to the
resumed step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from torch.optim import Optimizer, lr_scheduler


@dataclass
class HoldThenDecaySchedulerConfig(SchedulerConfig):
    """Constant learning rate, then exponential decay to ``lr_final`` between ``decay_start`` and ``decay_end``."""

    _target: Type = field(default_factory=lambda: HoldThenDecayScheduler)
    decay_start: Optional[int] = None
    """Step where the decay starts (None: constant rate throughout)."""
    decay_end: Optional[int] = None
    """Step where the rate reaches ``lr_final`` (held after it); required with ``decay_start``."""
    lr_final: float = 5e-5
    """Rate at ``decay_end``."""


class HoldThenDecayScheduler(Scheduler):
    config: HoldThenDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        c = self.config
        start, end = c.decay_start, c.decay_end
        if start is not None and (end is None or end <= start):
            raise ValueError(
                f"scheduler: decay_end ({end}) must be after decay_start ({start}); "
                "pass --optimizers.<group>.scheduler.decay-end"
            )
        if not lr_init > 0 or not c.lr_final > 0:
            raise ValueError(f"scheduler: learning rates must be positive (lr {lr_init}, lr_final {c.lr_final})")
        ratio = c.lr_final / lr_init

        def factor(step: int) -> float:
            if start is None or end is None or step <= start:
                return 1.0
            return ratio ** (min(step - start, end - start) / (end - start))

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
