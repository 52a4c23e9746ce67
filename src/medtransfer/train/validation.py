"""Validation on held-out subjects: per-case, per-class Dice accumulated over slices or patches."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def hard_prediction(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C, ...)`` logits -> ``(B, ...)`` labels (threshold 0 for one channel, argmax otherwise)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


class DiceAccumulator:
    """Sums intersection and sizes per (case, class) so that each case's Dice covers all of its slices.

    Classes absent from both prediction and reference of a case give NaN (nnU-Net's convention) and are left
    out of the means.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.stats: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(3, num_classes, dtype=torch.float64))

    def update(self, pred: torch.Tensor, target: torch.Tensor, cases: list[str]) -> None:
        """Add a batch of label maps ``(B, ...)`` of prediction and reference."""
        if target.ndim == pred.ndim + 1:
            target = target[:, 0]
        for b, case in enumerate(cases):
            p, t = pred[b].flatten(), target[b].flatten().long()
            for c in range(1, self.num_classes + 1):
                pc, tc = p == c, t == c
                self.stats[case][:, c - 1] += torch.stack([(pc & tc).sum(), pc.sum(), tc.sum()]).double().cpu()

    def per_case(self) -> dict[str, list[float]]:
        """Dice per case and foreground class."""
        out = {}
        for case, (inter, psum, tsum) in self.stats.items():
            denom = psum + tsum
            out[case] = [float(2 * i / d) if d > 0 else math.nan for i, d in zip(inter, denom, strict=True)]
        return out

    def aggregate(self) -> dict[str, float]:
        """``dice`` (mean over cases of the mean over classes) and ``dice_class<k>``."""
        values = torch.tensor(list(self.per_case().values()), dtype=torch.float64).reshape(-1, self.num_classes)
        result = {"dice": _nanmean(_nanmean_rows(values))}
        for c in range(self.num_classes):
            result[f"dice_class{c + 1}"] = _nanmean(values[:, c])
        return result


def _nanmean_rows(values: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.tensor(_nanmean(row)) for row in values]) if len(values) else values


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


class DiceValidator:
    """Runs the model over a held-out dataset in order and reports per-case Dice.

    Args:
        dataset: map-style dataset of dicts with ``image``, ``label`` and ``case``.
        num_classes: number of foreground classes (1 for binary).
        batch_size: batch size of the forward passes.
    """

    def __init__(self, dataset: Dataset, num_classes: int, batch_size: int = 32) -> None:
        self.dataset, self.num_classes, self.batch_size = dataset, num_classes, batch_size

    def __call__(self, step: Callable[[dict[str, Any]], torch.Tensor]) -> dict[str, float]:
        """``step(batch) -> logits`` is the trainer's ``validation_step``."""
        acc = DiceAccumulator(self.num_classes)
        for batch in DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False):
            logits = step(batch)
            cases = list(batch.get("case", ["all"] * len(logits)))
            acc.update(hard_prediction(logits).cpu(), batch["label"].cpu(), [str(c) for c in cases])
        return acc.aggregate()
