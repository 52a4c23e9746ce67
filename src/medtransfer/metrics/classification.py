"""Image-level classification metrics: accuracy, balanced accuracy and ROC AUC (binary and one-vs-rest).

Definitions follow scikit-learn: balanced accuracy is the mean recall over the classes present in ``y_true``;
AUC is the Mann-Whitney statistic (tied scores count one half); the multi-class AUC is the unweighted mean of
the one-vs-rest AUCs (``roc_auc_score(..., multi_class="ovr", average="macro")``).  An AUC is undefined (NaN)
when ``y_true`` holds a single class.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def accuracy(y_true, y_pred) -> float:
    """Share of correct predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def balanced_accuracy(y_true, y_pred) -> float:
    """Mean over the classes present in ``y_true`` of their recall."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not y_true.size:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def binary_auc(y_true, scores) -> float:
    """ROC AUC of ``scores`` for ``y_true`` in {0, 1} (NaN with one class only)."""
    y_true, scores = np.asarray(y_true).astype(bool), np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: ties count one half
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(y_true, scores) -> float:
    """AUC from scores ``(N,)`` (binary: score of class 1) or probabilities ``(N, K)`` (one-vs-rest macro)."""
    scores = np.asarray(scores, dtype=np.float64)
    y_true = np.asarray(y_true)
    if scores.ndim == 1:
        return binary_auc(y_true, scores)
    if scores.shape[1] == 2:
        return binary_auc(y_true == 1, scores[:, 1])
    values = [binary_auc(y_true == k, scores[:, k]) for k in range(scores.shape[1]) if (y_true == k).any()]
    return float(np.mean(values)) if values else float("nan")


def classification_metrics(y_true, scores, threshold: float = 0.5) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy`` and ``auc`` from class probabilities ``(N, K)`` (argmax) or binary
    probabilities of class 1 ``(N,)`` (class 1 above ``threshold``)."""
    scores = np.asarray(scores, dtype=np.float64)
    pred = (scores > threshold).astype(np.int64) if scores.ndim == 1 else scores.argmax(1)
    return {
        "accuracy": accuracy(y_true, pred),
        "balanced_accuracy": balanced_accuracy(y_true, pred),
        "auc": roc_auc(y_true, scores),
    }
