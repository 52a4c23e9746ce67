"""Image-level classification targets: per-slice "lesion present" labels, a classification loss and validator,
and a small training loop that records per-epoch accuracy, balanced accuracy and AUC (convergence speed).

Transfusion (Raghu et al. 2019) measured mean-var and hybrid initialisation on classification targets;
:func:`train_classification` trains a classification-head model under any registered strategy so those inits
can be compared on the same slices, and :func:`epochs_to_reach` turns the history into a convergence speed.

Example:
    >>> import numpy as np
    >>> label = np.zeros((4, 4, 3), dtype=np.int64); label[1, 1, 2] = 1
    >>> slice_targets(label, axis=2).tolist()
    [0, 0, 1]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import DataError
from ..metrics.classification import classification_metrics
from .batches import StepBatchSampler, TrainBatches
from .config import TrainConfig
from .finetune_strategy import apply_strategy
from .trainer import Trainer

log = logging.getLogger(__name__)


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


@dataclass
class ClassificationRun:
    """What :func:`train_classification` returns: the trained model, the strategy plan and per-epoch records."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    strategy: dict[str, Any] = field(default_factory=dict)

    def curve(self, key: str = "val_accuracy") -> list[float]:
        return [float(r.get(key, math.nan)) for r in self.history]


def train_classification(
    model: nn.Module,
    strategy: str,
    pretrained: dict[str, Any] | None,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig,
    *,
    seed: int = 0,
) -> ClassificationRun:
    """Prepare ``model`` (a classification-head model) with ``strategy`` and train it, validating every epoch.

    Args:
        model: e.g. ``create_model("unet", head="classification", num_classes=2, ...)``.
        strategy: ``NAME[:ARGS]`` of a registered strategy (``mean_var``, ``hybrid_k:2``, ``full``, ...).
        pretrained: source checkpoint or state dict (``None`` for ``scratch``).
        train_data, val_data: datasets of ``{"image", "label"}`` items (label: class index).
        config: training options (``val_every`` is forced to 1 for a per-epoch curve).

    Returns:
        the run with ``history`` records ``epoch``, ``train_loss``, ``val_accuracy``, ``val_balanced_accuracy``,
        ``val_auc``.
    """
    applied = apply_strategy(strategy, model, pretrained, seed=seed)
    config = TrainConfig.from_dict({**config.to_dict(), "val_every": 1, "seed": seed})
    batches = TrainBatches(
        train_data, StepBatchSampler(len(train_data), config.batch_size, config.steps_per_epoch, seed), 0
    )
    trainer = Trainer(
        model,
        config,
        batches,
        loss=ClassificationLoss(),
        param_groups=applied.param_groups,
        validator=ClassificationValidator(val_data),
        epoch_start_hooks=applied.hooks,
    )
    result = trainer.fit()
    return ClassificationRun(trainer.model, list(result.history), applied.description)


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
