"""Learning-rate schedules as pure functions of the optimiser step, wrapped in ``LambdaLR``.

A schedule is a small frozen object (its state is its fields), so the scheduler's ``state_dict`` is plain data
and a resumed run computes exactly the same rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ScheduleName, TrainConfig


@dataclass(frozen=True)
class LRFactor:
    """Multiplier of the base lr at optimiser step ``step`` (0-based, counted over the whole run).

    Attributes:
        kind: ``constant``, ``step``, ``cosine`` or ``poly``.
        steps_per_epoch: to turn steps into epochs for the step schedule.
        total_steps: length of the run (cosine / poly decay to its end).
        step_epoch: the step schedule's milestone epoch (DART: x0.1 at epoch 15 of 20).
        gamma: the step schedule's factor.
        poly_exponent: the poly schedule's exponent.
        warmup_steps: linear warm-up from ``1 / warmup_steps`` to 1.
    """

    kind: str
    steps_per_epoch: int
    total_steps: int
    step_epoch: int = 15
    gamma: float = 0.1
    poly_exponent: float = 0.9
    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        return warm * self._decay(step)

    def _decay(self, step: int) -> float:
        progress = min(step / max(self.total_steps, 1), 1.0)
        if self.kind == ScheduleName.STEP:
            return self.gamma if step // self.steps_per_epoch >= self.step_epoch else 1.0
        if self.kind == ScheduleName.COSINE:
            return 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == ScheduleName.POLY:
            return (1 - progress) ** self.poly_exponent
        return 1.0


def create_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` for ``config.schedule``; call ``scheduler.step()`` after every optimiser step."""
    factor = LRFactor(
        kind=str(config.schedule),
        steps_per_epoch=config.steps_per_epoch,
        total_steps=config.total_steps,
        step_epoch=config.step_epoch,
        gamma=config.gamma,
        poly_exponent=config.poly_exponent,
        warmup_steps=config.warmup_steps,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
