"""Optimisers that honour the per-group ``lr_scale`` of a transfer strategy's parameter groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .config import OptimizerName, TrainConfig


def param_groups_with_lr(groups: Iterable[dict[str, Any]] | None, model: nn.Module, lr: float) -> list[dict]:
    """Resolve parameter groups: each group's ``lr`` is ``lr * lr_scale``; groups with scale 0 are dropped.

    Parameters with ``requires_grad=False`` stay in their group (they get no gradient, so the optimiser leaves
    them alone) so that gradual unfreezing can switch them on later without rebuilding the optimiser.

    Args:
        groups: dicts with ``"params"`` and optionally ``"lr_scale"`` (a strategy plan's groups); ``None``
            means one group of every trainable parameter of ``model``.
        model: the model (used when ``groups`` is ``None``).
        lr: base learning rate.

    Returns:
        Groups for ``torch.optim``; extra keys (``name``, ``lr_scale``) are kept for logging.
    """
    if groups is None:
        groups = [{"params": list(model.parameters()), "lr_scale": 1.0, "name": "all"}]
    resolved = []
    for group in groups:
        params = list(group["params"])
        scale = float(group.get("lr_scale", 1.0))
        if not params or scale == 0.0:
            continue
        extra = {k: v for k, v in group.items() if k not in ("params", "lr")}
        resolved.append({**extra, "params": params, "lr": lr * scale, "lr_scale": scale})
    return resolved


def create_optimizer(
    model: nn.Module, config: TrainConfig, groups: Iterable[dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """The optimiser of ``config`` over ``groups`` (or every trainable parameter of ``model``).

    SGD uses Nesterov momentum 0.9 (DART and nnU-Net); Adam/AdamW use PyTorch defaults for betas.

    Raises:
        ValueError: no trainable parameter is left (everything frozen).
    """
    resolved = param_groups_with_lr(groups, model, config.lr)
    if not any(p.requires_grad for g in resolved for p in g["params"]):
        raise ValueError("no trainable parameters: the strategy froze the whole model")
    if config.optimizer == OptimizerName.SGD:
        return torch.optim.SGD(resolved, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.optimizer == OptimizerName.ADAM:
        return torch.optim.Adam(resolved, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(resolved, lr=config.lr, weight_decay=config.weight_decay)
