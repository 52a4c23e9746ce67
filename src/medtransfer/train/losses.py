"""Segmentation losses and their registry: ``ce``, ``bce``, ``dice``, ``dice_ce``.

Every loss takes logits ``(B, C, *spatial)`` and an integer label map ``(B, *spatial)`` or ``(B, 1, *spatial)``.
With one output channel the problem is binary (sigmoid); with ``C > 1`` it is multi-class (softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, did_you_mean


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Integer labels ``(B, *spatial)`` from ``(B, *spatial)`` or ``(B, 1, *spatial)``."""
    if target.ndim == logits.ndim:
        target = target[:, 0]
    return target.long()


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, *spatial)`` integer labels -> ``(B, C, *spatial)`` float one-hot."""
    return F.one_hot(labels, num_classes).movedim(-1, 1).float()


def _binary_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    labels = _labels(target, logits)
    if logits.shape[1] == 1:
        return (labels > 0).float().unsqueeze(1)
    return one_hot(labels, logits.shape[1])


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over classes (binary cross-entropy when the model has one output channel)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits, _binary_target(target, logits))
        return F.cross_entropy(logits, _labels(target, logits))


class BCELoss(nn.Module):
    """Per-channel sigmoid binary cross-entropy (DART); with ``C > 1`` each class is a one-vs-rest channel."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, _binary_target(target, logits))


class DiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean_c 2|P∩G| / (|P| + |G|)``, summed over batch and space (nnU-Net "batch Dice").

    Args:
        include_background: count class 0 in the multi-class mean (nnU-Net leaves it out).
        smooth: added to numerator and denominator.
    """

    def __init__(self, include_background: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.include_background = include_background
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:
            probs, truth = torch.sigmoid(logits), _binary_target(target, logits)
        else:
            probs, truth = logits.softmax(1), one_hot(_labels(target, logits), logits.shape[1])
            if not self.include_background:
                probs, truth = probs[:, 1:], truth[:, 1:]
        dims = [0, *range(2, logits.ndim)]
        intersection = (probs * truth).sum(dims)
        denominator = probs.sum(dims) + truth.sum(dims)
        dice = (2 * intersection + self.smooth) / (denominator + self.smooth)
        return 1 - dice.mean()


class DiceCELoss(nn.Module):
    """Dice + cross-entropy with equal weights (nnU-Net's default loss)."""

    def __init__(self, include_background: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.dice = DiceLoss(include_background, smooth)
        self.ce = CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.ce(logits, target)


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "bce": BCELoss,
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
}


def list_losses() -> list[str]:
    """Registered loss names."""
    return sorted(LOSSES)


def create_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered loss.

    Example:
        >>> loss = create_loss("dice_ce")
        >>> float(loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))) > 0
        True
    """
    if name not in LOSSES:
        raise ConfigError(did_you_mean(name, LOSSES, what="loss"))
    return LOSSES[name](**kwargs)
