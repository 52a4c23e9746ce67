"""Check what a strategy did, after the fact: compare fine-tuned weights with the source, stage by stage.

A run's checkpoint stores the strategy description (:attr:`StrategyPlan.description`); with the source
checkpoint, :func:`verify_strategy` confirms that frozen stages are bit-identical to the source (and their
norm statistics too when ``bn_mode`` was ``frozen``) and that trained stages did move.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..models.loading import resolve_state_dict


def compare_with_source(model: nn.Module, source: str | os.PathLike | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stage: how many parameters/buffers differ from ``source`` and the largest absolute difference.

    Only tensors present in both with the same shape are compared (``compared`` counts them).
    """
    state = resolve_state_dict(source)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    out: dict[str, dict[str, Any]] = {}
    for key, stage in model.parameter_stages().items():
        row = out.setdefault(stage, {"compared": 0, "params_changed": 0, "buffers_changed": 0, "max_abs_diff": 0.0})
        value, ref = params[key] if key in params else buffers[key], state.get(key)
        if ref is None or ref.shape != value.shape:
            continue
        row["compared"] += 1
        if torch.equal(value.detach().cpu(), ref.to(value.dtype).cpu()):
            continue
        row["params_changed" if key in params else "buffers_changed"] += 1
        if value.is_floating_point():
            diff = (value.detach().cpu().float() - ref.cpu().float()).abs().max().item()
            row["max_abs_diff"] = max(row["max_abs_diff"], diff)
    return out


def verify_strategy(
    model: nn.Module, source: str | os.PathLike | Mapping[str, Any], description: Mapping[str, Any]
) -> list[str]:
    """Problems found (empty list = the weights are consistent with the described strategy).

    Frozen stages must have no changed parameter, and no changed buffer when their norm statistics were
    ``frozen``.  Stages that started from the pretrained weights and were trained should have changed.
    """
    changes = compare_with_source(model, source)
    problems = []
    for row in description["stages"]:
        stage, seen = row["stage"], changes.get(row["stage"])
        if seen is None or not seen["compared"]:
            continue
        if not row["trainable"] and seen["params_changed"]:
            problems.append(f"stage {stage} was frozen but {seen['params_changed']} parameter tensors changed")
        if not row["trainable"] and row["norm_stats"] == "frozen" and seen["buffers_changed"]:
            problems.append(f"stage {stage} had frozen norm statistics but {seen['buffers_changed']} buffers changed")
        if row["trainable"] and row["init"] == "pretrained" and row["trainable_params"] and not seen["params_changed"]:
            problems.append(f"stage {stage} was trainable but no parameter changed")
    return problems
