"""Segmentation losses that ignore unconfident pseudo-labelled voxels (``label == ignore_index``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -1


class MaskedSegLoss(nn.Module):
    """Cross-entropy (BCE for one output channel) plus optional soft Dice over the voxels whose label is kept.

    Args:
        dice: add a soft Dice term (foreground classes) computed on kept voxels only.
        ignore_index: label value of voxels without a confident pseudo-label.

    Logits ``(B, C, *spatial)``, labels ``(B, *spatial)`` or ``(B, 1, *spatial)`` of class indices.  A batch
    with no kept voxel contributes zero (with a gradient graph), never NaN.
    """

    def __init__(self, dice: bool = False, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.dice, self.ignore_index = dice, ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        labels = target[:, 0] if target.ndim == logits.ndim else target
        labels = labels.long()
        keep = labels != self.ignore_index
        safe = torch.where(keep, labels, torch.zeros_like(labels))
        if logits.shape[1] == 1:
            per_voxel = F.binary_cross_entropy_with_logits(logits[:, 0], (safe > 0).float(), reduction="none")
            probs = torch.sigmoid(logits)
            onehot = (safe > 0).float().unsqueeze(1)
        else:
            per_voxel = F.cross_entropy(logits, safe, reduction="none")
            probs = torch.softmax(logits, 1)[:, 1:]
            onehot = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).float()[:, 1:]
        weight = keep.float()
        loss = (per_voxel * weight).sum() / weight.sum().clamp_min(1.0)
        if self.dice:
            mask = weight.unsqueeze(1)
            dims = tuple(i for i in range(probs.ndim) if i != 1)
            inter = (probs * onehot * mask).sum(dims)
            sizes = (probs * mask).sum(dims) + (onehot * mask).sum(dims)
            loss = loss + (1 - (2 * inter + 1e-5) / (sizes + 1e-5)).mean()
        return loss
