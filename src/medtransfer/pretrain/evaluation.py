"""Source-task metrics on held-out source data, as trainer validators (``validator(step) -> metrics``).

* classification / rotation: ``accuracy``, ``chance`` (1 / classes) and ``majority`` (the held-out share of
  the most frequent class: the accuracy of always answering it);
* segmentation: ``dice``: mean over foreground classes present in the held-out set of the global Dice
  (hard argmax prediction); ``dice_foreground``: Dice of "any foreground class" vs background;
* restoration: ``mse`` of the restored image, ``mse_identity`` of the corrupted input (the do-nothing
  baseline) and their ratio ``mse_ratio`` (< 1: the model restores).

The restoration loss lives here too: MSE (Models Genesis) or L1 on float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate

Step = Callable[[dict[str, Any]], torch.Tensor]


def batches(dataset: Dataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """Consecutive batches of a map-style dataset (no shuffling)."""
    for start in range(0, len(dataset), batch_size):
        yield default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


class RestorationLoss(nn.Module):
    """Pixel-wise ``mse`` (Models Genesis) or ``l1`` between the restored and the original image."""

    def __init__(self, kind: str = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "l1"):
            raise ValueError(f"restoration loss must be 'mse' or 'l1', got {kind!r}")
        self.kind = kind

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output, target = output.float(), target.float()
        return F.mse_loss(output, target) if self.kind == "mse" else F.l1_loss(output, target)


class AccuracyValidator:
    """Top-1 accuracy of class logits ``(B, K)``."""

    def __init__(self, dataset: Dataset, num_classes: int, batch_size: int = 64) -> None:
        self.dataset, self.num_classes, self.batch_size = dataset, num_classes, batch_size

    def __call__(self, step: Step) -> dict[str, float]:
        correct = total = 0
        counts = torch.zeros(self.num_classes, dtype=torch.int64)
        for batch in batches(self.dataset, self.batch_size):
            pred = step(batch).argmax(1).cpu()
            correct += int((pred == batch["label"]).sum())
            total += len(pred)
            counts += torch.bincount(batch["label"].long(), minlength=self.num_classes)[: self.num_classes]
        return {
            "accuracy": correct / max(total, 1),
            "chance": 1.0 / self.num_classes,
            "majority": float(counts.max()) / max(total, 1),
        }


def dice_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class Dice ``2 TP / (2 TP + FP + FN)`` from a ``(K, K)`` confusion matrix (rows: truth); NaN when the
    class is absent from both truth and prediction.

    Example:
        >>> dice_per_class(torch.tensor([[3, 1], [0, 2]])).tolist()
        [0.8571428656578064, 0.800000011920929]
    """
    tp = confusion.diag().float()
    denominator = confusion.sum(0).float() + confusion.sum(1).float()
    return torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.nan)


def foreground_dice(confusion: torch.Tensor) -> float:
    """Dice of "any foreground class" vs background (class 0) from a confusion matrix.

    Example:
        >>> round(foreground_dice(torch.tensor([[5, 1, 0], [0, 2, 1], [1, 0, 3]])), 4)  # 2*6 / (2*6 + 1 + 1)
        0.8571
    """
    tp = float(confusion[1:, 1:].sum())
    denominator = 2 * tp + float(confusion[0, 1:].sum()) + float(confusion[1:, 0].sum())
    return 2 * tp / denominator if denominator > 0 else float("nan")


class SegmentationValidator:
    """Global Dice per foreground class over the held-out set; ``dice`` is their mean over classes in the truth."""

    def __init__(self, dataset: Dataset, num_classes: int, batch_size: int = 32) -> None:
        self.dataset, self.num_classes, self.batch_size = dataset, num_classes, batch_size

    def __call__(self, step: Step) -> dict[str, float]:
        k = max(self.num_classes, 2)
        confusion = torch.zeros(k, k, dtype=torch.int64)
        for batch in batches(self.dataset, self.batch_size):
            logits = step(batch).cpu()
            pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
            truth = batch["label"][:, 0].long()
            confusion += torch.bincount(truth.flatten() * k + pred.flatten(), minlength=k * k).reshape(k, k)
        dice = dice_per_class(confusion)[1:]
        present = confusion.sum(1)[1:] > 0
        value = float(dice[present].mean()) if bool(present.any()) else float("nan")
        return {"dice": value, "dice_foreground": foreground_dice(confusion)}


class RestorationValidator:
    """Mean squared error of the restored images and of the corrupted inputs against the originals."""

    def __init__(self, dataset: Dataset, batch_size: int = 32) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __call__(self, step: Step) -> dict[str, float]:
        restored = identity = 0.0
        count = 0
        for batch in batches(self.dataset, self.batch_size):
            output = step(batch).cpu().float()
            clean, corrupted = batch["label"].float(), batch["image"].float()
            restored += float(((output - clean) ** 2).sum())
            identity += float(((corrupted - clean) ** 2).sum())
            count += clean.numel()
        mse, base = restored / max(count, 1), identity / max(count, 1)
        return {"mse": mse, "mse_identity": base, "mse_ratio": mse / base if base > 0 else float("nan")}
