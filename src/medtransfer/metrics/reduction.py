"""Reductions of per-case, per-class metric tables ``(B, C)`` that ignore NaN (absent classes)."""

from __future__ import annotations

import warnings
from enum import StrEnum

import numpy as np

from ..errors import ConfigError, did_you_mean


class MetricReduction(StrEnum):
    """How to reduce a ``(B, C)`` table; NaN entries (class absent from both masks) are ignored.

    ``inf`` entries (a surface distance to an empty mask) are kept, so a mean containing one is ``inf``.
    """

    NONE = "none"
    MEAN = "mean"  # mean of all finite-or-inf entries
    MEAN_BATCH = "mean_batch"  # per class, over cases -> (C,)
    MEAN_CHANNEL = "mean_channel"  # per case, over classes -> (B,)
    SUM = "sum"


def parse_reduction(reduction: str | MetricReduction) -> MetricReduction:
    """``MetricReduction`` from its value, with a did-you-mean error."""
    try:
        return MetricReduction(reduction)
    except ValueError as err:
        raise ConfigError(did_you_mean(str(reduction), [r.value for r in MetricReduction], what="reduction")) from err


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean ignoring NaN; NaN (without a warning) where every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def reduce_metric(values: np.ndarray, reduction: str | MetricReduction = MetricReduction.MEAN) -> np.ndarray | float:
    """Reduce a ``(B, C)`` table of per-case, per-class values, ignoring NaN.

    Example:
        >>> reduce_metric(np.array([[1.0, np.nan], [0.5, 0.25]]), "mean_batch").tolist()
        [0.75, 0.25]
    """
    reduction = parse_reduction(reduction)
    values = np.asarray(values, dtype=np.float64)
    if reduction is MetricReduction.NONE:
        return values
    if reduction is MetricReduction.SUM:
        return float(np.nansum(values))
    if reduction is MetricReduction.MEAN:
        return float(nanmean(values))
    return nanmean(values, axis=0 if reduction is MetricReduction.MEAN_BATCH else 1)
