"""Apply a registered strategy to a model: what the trainer needs from it (:class:`AppliedStrategy`).

Data strategies (:class:`~medtransfer.transfer.strategy.Strategy`) initialise and freeze the model in place;
strategies with a ``prepare`` hook (``spottune``) may also replace the model to train, wrap the loss and turn
the trained model back into a plain one.  :func:`medtransfer.finetune.fit.fit_strategy` is the one place the
result meets the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .registry import Task, create_params


@dataclass
class AppliedStrategy:
    """What the trainer needs from a strategy.

    Attributes:
        param_groups: optimiser groups with ``lr_scale`` (``None``: all parameters at the base lr).
        hooks: ``hook(model, epoch, optimizer)`` called at each epoch start.
        description: JSON-serialisable plan (which stages are trainable / frozen / re-initialised).
        audit: the load audit of the pretrained weights as a dict, or ``None``.
        model: a replacement model to train (SpotTune wraps the target model), else ``None``.
        wrap_loss: ``loss -> loss`` (SpotTune adds its freezing penalty), else ``None``.
        finish: ``checkpoint path -> path`` after training (SpotTune collapses to a plain model), else ``None``.
        plain_model: ``trained model -> plain model of the original architecture``, else ``None``.
    """

    param_groups: list[dict[str, Any]] | None
    hooks: list = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] | None = None
    model: nn.Module | None = None
    wrap_loss: Callable[[nn.Module], nn.Module] | None = None
    finish: Callable[[Path], Path] | None = None
    plain_model: Callable[[nn.Module], nn.Module] | None = None


def plain_data(obj: Any) -> Any:
    """``obj`` as JSON types only (enums become strings) so that weights-only checkpoints can hold it."""
    return json.loads(json.dumps(obj, default=str))


def check_strategy_task(spec: str, task: Task | str) -> None:
    """Refuse (:class:`ConfigError`) a strategy spec that is unknown, badly parametrised or cannot serve ``task``;
    call it before any expensive work."""
    entry, _ = create_params(spec)
    entry.check_task(task)


def apply_strategy(
    spec: str,
    model: nn.Module,
    pretrained: dict[str, Any] | None,
    *,
    seed: int | None = None,
    task: Task | str = Task.SEGMENTATION,
) -> AppliedStrategy:
    """Initialise and prepare ``model`` in place with strategy ``spec`` (``NAME[:ARGS]``) for ``task``.

    Args:
        spec: strategy name with arguments, e.g. ``first_k:2``.
        model: the target model (fresh initialisation).
        pretrained: source checkpoint dict or state dict; ``None`` for scratch.
        seed: seeds re-initialisation and mean-var draws.
        task: the fine-tuning task (a strategy that cannot serve it is refused).

    Raises:
        ConfigError: unknown strategy or parameter, a task the strategy does not serve, missing weights.
    """
    from .strategy import Strategy

    entry, params = create_params(spec)
    entry.check_task(task)
    if entry.prepare is not None:
        return entry.prepare(params, model, pretrained, seed)
    strategy = Strategy(name=entry.name, params=params, config=entry.build(params))
    plan = strategy.prepare(model, pretrained, seed=seed)
    audit = plan.audit.to_dict() if plan.audit is not None else None
    return AppliedStrategy(
        param_groups=list(plan.param_groups),
        hooks=[strategy.on_epoch_start],
        description=plain_data({"spec": strategy.spec, **plan.description}),
        audit=plain_data(audit),
    )
