"""Volumetric overlap: Dice and IoU per case and class.

Empty-case convention (nnU-Net's ``compute_metrics``): a class absent from both prediction and reference gives
NaN, and every mean ignores NaN.  A class absent from the reference but predicted gives 0.  MONAI's ``DiceMetric``
(``ignore_empty=True``) instead returns NaN whenever the *reference* is empty, even with false positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import CumulativeMetric
from .inputs import as_class_masks
from .reduction import MetricReduction


def overlap_counts(pred: Any, ref: Any, labels: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
    """True-positive, prediction and reference voxel counts, each ``(B, C)``.

    Args:
        pred: masks ``(B, C, *spatial)`` or label maps ``(B, *spatial)`` with ``labels``.
        ref: reference in the same layout.
        labels: label values for label-map inputs.
    """
    pred, ref = as_class_masks(pred, ref, labels)
    batch, channels = pred.shape[:2]
    flat_pred = pred.reshape(batch, channels, -1)
    flat_ref = ref.reshape(batch, channels, -1)
    tp = np.count_nonzero(flat_pred & flat_ref, axis=-1)
    return tp, np.count_nonzero(flat_pred, axis=-1), np.count_nonzero(flat_ref, axis=-1)


def compute_dice(pred: Any, ref: Any, labels: Sequence[int] | None = None) -> np.ndarray:
    """Dice ``2|P∩R| / (|P| + |R|)`` per case and class; NaN when the class is in neither mask.

    Args:
        pred: masks ``(B, C, *spatial)`` or label maps ``(B, *spatial)`` with ``labels``.
        ref: reference in the same layout.
        labels: label values for label-map inputs.

    Returns:
        ``(B, C)`` float64 array.

    Example:
        >>> import numpy as np
        >>> p = np.zeros((1, 1, 4, 4), bool); p[0, 0, :2, :2] = True
        >>> r = np.zeros((1, 1, 4, 4), bool); r[0, 0, :2, :] = True
        >>> compute_dice(p, r).round(4).tolist()
        [[0.6667]]
    """
    tp, n_pred, n_ref = overlap_counts(pred, ref, labels)
    return _ratio(2.0 * tp, n_pred + n_ref)


def compute_iou(pred: Any, ref: Any, labels: Sequence[int] | None = None) -> np.ndarray:
    """IoU (Jaccard) ``|P∩R| / |P∪R|`` per case and class; NaN when the class is in neither mask.

    Args:
        pred: masks ``(B, C, *spatial)`` or label maps ``(B, *spatial)`` with ``labels``.
        ref: reference in the same layout.
        labels: label values for label-map inputs.

    Returns:
        ``(B, C)`` float64 array.
    """
    tp, n_pred, n_ref = overlap_counts(pred, ref, labels)
    return _ratio(tp.astype(np.float64), n_pred + n_ref - tp)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


class DiceMetric(CumulativeMetric):
    """Accumulating Dice: call per batch, then :meth:`aggregate` (NaN-ignoring mean by default).

    Args:
        labels: label values when batches are label maps ``(B, *spatial)``; ``None`` for masks.
        reduction: see :class:`~medtransfer.metrics.reduction.MetricReduction`.

    Example:
        >>> import numpy as np
        >>> metric = DiceMetric(labels=[1, 2], reduction="mean_batch")
        >>> _ = metric(np.array([[[1, 2], [0, 0]]]), np.array([[[1, 1], [0, 0]]]))
        >>> metric.aggregate().tolist()
        [0.6666666666666666, 0.0]
    """

    def __init__(
        self, labels: Sequence[int] | None = None, reduction: str | MetricReduction = MetricReduction.MEAN
    ) -> None:
        super().__init__(reduction)
        self.labels = labels

    def compute(self, pred: Any, ref: Any) -> np.ndarray:
        return compute_dice(pred, ref, self.labels)


class IoUMetric(DiceMetric):
    """Accumulating IoU (Jaccard); same arguments as :class:`DiceMetric`.

    Example:
        >>> import numpy as np
        >>> metric = IoUMetric(labels=[1])
        >>> _ = metric(np.array([[[1, 1], [0, 0]]]), np.array([[[1, 0], [1, 0]]]))
        >>> metric.aggregate()
        0.3333333333333333
    """

    def compute(self, pred: Any, ref: Any) -> np.ndarray:
        return compute_iou(pred, ref, self.labels)
