"""Transfer strategies as data: what to initialise, what to freeze, what to fine-tune, at which rate.

``create_strategy("first_k:2").prepare(model, pretrained_state, seed=0)`` initialises the model in place, sets
``requires_grad`` and the norm-layer mode and returns a :class:`StrategyPlan` (optimiser param groups with
``lr_scale``, a JSON description for the run folder, the load audit).  Call
``strategy.on_epoch_start(model, epoch, optimizer)`` at every epoch (gradual unfreezing; no-op otherwise).

After training, ``verify_strategy(model, source_state, plan.description)`` checks that frozen stages are still
bit-identical to the source.

Registered strategies (``list_strategies()``; ``medtransfer strategies`` prints them with their parameters):
scratch, full, first_k, last_k, frozen_encoder, bn_only, discriminative, gradual_unfreeze, mean_var, hybrid_k,
reinit_head, spottune.  :func:`apply_strategy` applies any of them for a fine-tuning :class:`Task`.
"""

from __future__ import annotations

from .apply import AppliedStrategy, apply_strategy, check_strategy_task
from .bn import BNMode, freeze_norm_stats, release_norm_stats
from .registry import (
    Task,
    create_strategy,
    get_strategy_entry,
    list_strategies,
    parse_strategy_spec,
    register_strategy,
)
from .strategy import Init, Strategy, StrategyConfig, StrategyPlan, Train
from .verify import compare_with_source, verify_strategy

__all__ = [
    "AppliedStrategy",
    "BNMode",
    "Init",
    "Strategy",
    "StrategyConfig",
    "StrategyPlan",
    "Task",
    "Train",
    "apply_strategy",
    "check_strategy_task",
    "compare_with_source",
    "create_strategy",
    "freeze_norm_stats",
    "get_strategy_entry",
    "list_strategies",
    "parse_strategy_spec",
    "register_strategy",
    "release_norm_stats",
    "verify_strategy",
]
