"""Apply a transfer strategy (:mod:`medtransfer.transfer`) to a model: weights, parameter groups, epoch hooks and a
JSON description (with the load audit) for the run's checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class AppliedStrategy:
    """What the trainer needs from a strategy.

    Attributes:
        param_groups: optimiser groups with ``lr_scale`` (``None``: all parameters at the base lr).
        hooks: ``hook(model, epoch, optimizer)`` called at each epoch start.
        description: JSON-serialisable plan (which stages are trainable / frozen / re-initialised).
        audit: the load audit of the pretrained weights as a dict, or ``None``.
    """

    param_groups: list[dict[str, Any]] | None
    hooks: list = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] | None = None
    model: nn.Module | None = None  # a replacement model to train (SpotTune wraps the target model)
    wrap_loss: Any = None  # loss -> loss (SpotTune adds its freezing penalty)
    finish: Any = None  # checkpoint path -> None, after training (SpotTune collapses to a plain model)


def plain_data(obj: Any) -> Any:
    """``obj`` as JSON types only (enums become strings) so that weights-only checkpoints can hold it."""
    return json.loads(json.dumps(obj, default=str))


def apply_strategy(
    spec: str, model: nn.Module, pretrained: dict[str, Any] | None, *, seed: int | None = None
) -> AppliedStrategy:
    """Initialise and prepare ``model`` in place with strategy ``spec`` (``NAME[:ARGS]``).

    Args:
        spec: strategy name with arguments, e.g. ``first_k:2``.
        model: the target model (fresh initialisation).
        pretrained: source checkpoint dict or state dict; ``None`` for scratch.
        seed: seeds re-initialisation and mean-var draws.
    """
    from ..transfer import create_strategy
    from ..transfer.spottune import collapse_checkpoint, is_spottune, prepare_spottune

    if is_spottune(spec):
        plan = prepare_spottune(spec, model, pretrained, seed=seed)
        return AppliedStrategy(
            param_groups=plan.param_groups,
            hooks=[plan.on_epoch_start],
            description=plain_data(plan.description()),
            audit=plain_data(plan.audit),
            model=plan.model,
            wrap_loss=plan.wrap_loss,
            finish=collapse_checkpoint,
        )
    strategy = create_strategy(spec)
    plan = strategy.prepare(model, pretrained, seed=seed)
    audit = plan.audit.to_dict() if plan.audit is not None else None
    return AppliedStrategy(
        param_groups=list(plan.param_groups),
        hooks=[strategy.on_epoch_start],
        description=plain_data({"spec": strategy.spec, **plan.description}),
        audit=plain_data(audit),
    )
