"""Image-level classification targets: per-slice "lesion present" labels, a classification loss and validator
recording per-epoch accuracy, balanced accuracy and AUC, and the convergence-speed summaries of that curve.

Transfusion (Raghu et al. 2019) measured mean-var and hybrid initialisation on classification targets;
:func:`medtransfer.finetune.classify.run_classification` trains a classification-head model under any registered
strategy with these parts, and :func:`epochs_to_reach` turns the history into a convergence speed
(docs/beyond.md).

Example:
    >>> import numpy as np
    >>> label = np.zeros((4, 4, 3), dtype=np.int64); label[1, 1, 2] = 1
    >>> slice_targets(label, axis=2).tolist()
    [0, 0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import DataError
from ..metrics.classification import classification_metrics


def slice_targets(label: np.ndarray, axis: int = 2, min_voxels: int = 1) -> np.ndarray:
    """Per slice along ``axis``: 1 if it holds at least ``min_voxels`` foreground voxels (label > 0), else 0."""
    label = np.asarray(label)
    counts = (label > 0).sum(axis=tuple(i for i in range(label.ndim) if i != axis))
    return (counts >= min_voxels).astype(np.int64)


class SliceClassificationDataset(Dataset):
    """2D slices of prepared cases (``case_id``, ``image (C,X,Y,Z)``, ``label (X,Y,Z)``) with a per-slice target.

    Args:
        cases: prepared cases (segmentation labels become "lesion present" targets).
        axis: slice axis.
        shape: in-plane shape of every item (zero padding at the end).
        min_voxels: foreground voxels a slice needs to count as positive.
        targets: optional case id -> per-slice targets (e.g. the MRI classification label of a bench case
            broadcast to its slices) replacing the lesion-present rule.
    """

    def __init__(
        self,
        cases: Sequence[Any],
        axis: int,
        shape: tuple[int, int],
        min_voxels: int = 1,
        targets: dict[str, Sequence[int]] | None = None,
    ) -> None:
        self.cases, self.axis, self.shape = list(cases), axis, shape
        self.targets = []
        for case in self.cases:
            n = case.image.shape[axis + 1]
            values = targets[case.case_id] if targets else slice_targets(case.label, axis, min_voxels)
            if len(values) != n:
                raise DataError(f"case {case.case_id}: {len(values)} targets for {n} slices along axis {axis}")
            self.targets.append(np.asarray(values, dtype=np.int64))
        self.index = [(ci, s) for ci, t in enumerate(self.targets) for s in range(len(t))]
        if not self.index:
            raise DataError("no slices to classify")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        ci, s = self.index[i]
        case = self.cases[ci]
        image = torch.from_numpy(np.ascontiguousarray(np.take(case.image, s, axis=self.axis + 1)))
        target = torch.tensor(int(self.targets[ci][s]))
        pad = [0, self.shape[1] - image.shape[-1], 0, self.shape[0] - image.shape[-2]]
        return {"image": F.pad(image, pad) if any(pad) else image, "label": target, "case": case.case_id}

    def class_counts(self) -> dict[int, int]:
        values, counts = np.unique(np.concatenate(self.targets), return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


class ClassificationLoss(nn.Module):
    """Cross-entropy on ``(B, K)`` logits (binary cross-entropy for ``K = 1``) with integer targets ``(B,)``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.reshape(-1).long()
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
        return F.cross_entropy(logits, target)


def class_scores(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities: ``(B,)`` foreground for one output, ``(B, K)`` softmax otherwise."""
    logits = logits.float()
    return torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)


class ClassificationValidator:
    """``validator(step) -> {"accuracy", "balanced_accuracy", "auc"}`` over a dataset (the Trainer's protocol)."""

    def __init__(self, dataset: Dataset, batch_size: int = 64) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __call__(self, step) -> dict[str, float]:
        scores, targets = [], []
        for start in range(0, len(self.dataset), self.batch_size):
            items = [self.dataset[i] for i in range(start, min(start + self.batch_size, len(self.dataset)))]
            batch = {"image": torch.stack([it["image"] for it in items])}
            scores.append(class_scores(step(batch)).cpu())
            targets.extend(int(it["label"]) for it in items)
        return classification_metrics(np.asarray(targets), torch.cat(scores).numpy())


def epochs_to_reach(history: Sequence[dict[str, Any]], key: str = "val_accuracy", target: float = 0.9) -> int | None:
    """First epoch count (1-based) at which ``history[key] >= target``; ``None`` if never reached."""
    for i, record in enumerate(history):
        value = record.get(key)
        if value is not None and not math.isnan(value) and value >= target:
            return i + 1
    return None


def area_under_curve(history: Sequence[dict[str, Any]], key: str = "val_accuracy") -> float:
    """Mean of ``key`` over epochs: one number for convergence speed (higher = faster, as Transfusion plots)."""
    values = [float(r[key]) for r in history if key in r and not math.isnan(float(r[key]))]
    return float(np.mean(values)) if values else math.nan
