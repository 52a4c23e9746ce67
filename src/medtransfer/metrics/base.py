"""Accumulating metrics: ``metric(pred, ref)`` per batch, then ``aggregate()``, then ``reset()`` (MONAI's design)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .reduction import MetricReduction, parse_reduction, reduce_metric


class CumulativeMetric:
    """Base class: collects per-case, per-class ``(B, C)`` tables and reduces them on :meth:`aggregate`.

    Subclasses implement :meth:`compute`, which returns the ``(B, C)`` table of one batch.

    Args:
        reduction: how :meth:`aggregate` reduces the stacked table (NaN ignored), see :class:`MetricReduction`.
    """

    def __init__(self, reduction: str | MetricReduction = MetricReduction.MEAN) -> None:
        self.reduction = parse_reduction(reduction)
        self._tables: list[np.ndarray] = []

    def compute(self, pred: Any, ref: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, pred: Any, ref: Any, **kwargs: Any) -> np.ndarray:
        """Compute the batch's ``(B, C)`` table, remember it and return it."""
        table = np.asarray(self.compute(pred, ref, **kwargs), dtype=np.float64)
        self._tables.append(table)
        return table

    def get_buffer(self) -> np.ndarray:
        """Every table seen since the last :meth:`reset`, stacked to ``(N, C)``."""
        if not self._tables:
            return np.zeros((0, 0))
        return np.concatenate(self._tables, axis=0)

    def aggregate(self, reduction: str | MetricReduction | None = None) -> np.ndarray | float:
        """Reduce everything seen so far (default: the reduction given at construction)."""
        return reduce_metric(self.get_buffer(), self.reduction if reduction is None else reduction)

    def reset(self) -> None:
        """Forget every batch seen."""
        self._tables.clear()
