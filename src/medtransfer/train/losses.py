"""Segmentation losses and their registry: ``ce``, ``bce``, ``dice``, ``dice_ce``, ``blob_dice_ce``, ``dice_topk``.

Every loss takes logits ``(B, C, *spatial)`` and an integer label map ``(B, *spatial)`` or ``(B, 1, *spatial)``.
With one output channel the problem is binary (sigmoid); with ``C > 1`` it is multi-class (softmax).
"""

from __future__ import annotations

import numpy as np
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


class TopKCrossEntropyLoss(nn.Module):
    """Cross-entropy over the ``k`` per cent of voxels of the batch with the highest loss (nnU-Net's ``TopKLoss``,
    ``k=10``): the many easy background voxels stop diluting the few hard ones (a small lesion that is missed).

    With one output channel it is the binary cross-entropy of the sigmoid, as :class:`CrossEntropyLoss`.
    """

    def __init__(self, k: float = 10.0) -> None:
        super().__init__()
        if not 0 < k <= 100:
            raise ValueError(f"k must be a percentage in (0, 100], got {k}")
        self.k = k

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:
            per_voxel = F.binary_cross_entropy_with_logits(logits, _binary_target(target, logits), reduction="none")
        else:
            per_voxel = F.cross_entropy(logits, _labels(target, logits), reduction="none")
        flat = per_voxel.flatten()
        count = max(1, int(flat.numel() * self.k / 100))
        return flat.topk(count, sorted=False).values.mean()


class DiceTopKLoss(nn.Module):
    """Dice + top-k cross-entropy (nnU-Net's ``DC_and_topk_loss``, ``k=10``)."""

    def __init__(self, k: float = 10.0, include_background: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.dice = DiceLoss(include_background, smooth)
        self.ce = TopKCrossEntropyLoss(k)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits, target) + self.ce(logits, target)


def blob_components(labels: torch.Tensor) -> torch.Tensor:
    """Connected components of the foreground (label > 0) of every sample, numbered from 1 across the batch
    (``(B, *spatial)`` int64, 0 = background; full connectivity: 8 in 2D, 26 in 3D).  Computed on the CPU."""
    from scipy import ndimage

    fg = (labels > 0).cpu().numpy()
    out = torch.zeros(labels.shape, dtype=torch.long)
    structure = ndimage.generate_binary_structure(fg.ndim - 1, fg.ndim - 1)
    offset = 0
    for b in range(fg.shape[0]):
        components, n = ndimage.label(fg[b], structure=structure)
        out[b] = torch.from_numpy(np.where(components > 0, components + offset, 0).astype("int64"))
        offset += n
    return out.to(labels.device)


class BlobDiceLoss(nn.Module):
    """Blob Dice (Kofler et al. 2023, "blob loss"): the soft Dice of every connected foreground component
    ("blob") of the reference on its own, averaged over the blobs of the batch, so that a 5-voxel lesion counts as
    much as a 5000-voxel one (batch Dice is dominated by the large ones, and lesion-wise F1 counts lesions).

    For blob ``b`` of a sample, the other blobs are masked out and the sample's background is kept, so that the
    foreground probability ``p`` painted anywhere off the reference costs every blob of that sample::

        Dice_b = 2 sum_b(p) / (sum_b(p) + sum_background(p) + |b|)

    Foreground is every class > 0 (``1 - p(background)`` with softmax, ``sigmoid`` with one channel).  A batch
    without blobs gives 0 (and no gradient).
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        labels = _labels(target, logits)
        fg = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else 1 - logits.softmax(1)[:, 0]
        blobs = blob_components(labels)
        n_blobs = int(blobs.max())
        if n_blobs == 0:
            return logits.sum() * 0.0
        flat_fg, flat_blobs = fg.flatten(1), blobs.flatten(1)
        inside = torch.zeros(n_blobs + 1, device=fg.device).index_add(0, flat_blobs.flatten(), flat_fg.flatten())
        size = torch.bincount(flat_blobs.flatten(), minlength=n_blobs + 1).float()
        background = (flat_fg * (flat_blobs == 0)).sum(1)  # per sample
        # blobs are numbered sample by sample, so each sample's highest number (carried over empty samples) ends its run
        last = torch.cummax(flat_blobs.max(1).values, 0).values
        counts = torch.diff(last, prepend=last.new_zeros(1))
        sample_of_blob = torch.repeat_interleave(torch.arange(fg.shape[0], device=fg.device), counts)
        i, s, bg = inside[1:], size[1:], background[sample_of_blob]
        dice = (2 * i + self.smooth) / (i + bg + s + self.smooth)
        return 1 - dice.mean()


class BlobDiceCELoss(nn.Module):
    """Dice + cross-entropy (:class:`DiceCELoss`) plus ``blob_weight`` x :class:`BlobDiceLoss`.

    Kofler et al. weigh the global loss 2 and the blob term 1; ``blob_weight=0.5`` is that ratio.
    """

    def __init__(self, blob_weight: float = 0.5, include_background: bool = False, smooth: float = 1e-5) -> None:
        super().__init__()
        self.global_loss = DiceCELoss(include_background, smooth)
        self.blob = BlobDiceLoss(smooth)
        self.blob_weight = blob_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.global_loss(logits, target) + self.blob_weight * self.blob(logits, target)


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropyLoss,
    "bce": BCELoss,
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
    "blob_dice_ce": BlobDiceCELoss,
    "dice_topk": DiceTopKLoss,
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
