"""Strong augmentation and noise for the student (noisy student): intensity, spatial, and feature dropout.

Items are the slice/patch dicts of the fine-tuning datasets (``image (C, *spatial)``, ``label (1, *spatial)``).
Random numbers come from torch's global generator, which the trainer seeds (as for random patches).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..train.augment import SpatialAugment


@dataclass(frozen=True)
class StrongAugmentConfig:
    """Augmentation strengths (0 or ``None`` switches a transform off).

    Attributes:
        flip: random flips along every spatial axis.
        rotate_deg: maximum rotation (degrees; about each axis in 3D).
        scale: maximum relative zoom (0.1 = +-10%).
        gamma: maximum log-gamma (intensities ``sign(x)|x|^gamma`` with gamma in ``exp(+-gamma)``).
        noise_std: Gaussian noise standard deviation.
        bias: strength of a smooth multiplicative bias field (linear ramp per axis).
    """

    flip: bool = True
    rotate_deg: float = 15.0
    scale: float = 0.1
    gamma: float = 0.3
    noise_std: float = 0.05
    bias: float = 0.2


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def augment_item(image: torch.Tensor, label: torch.Tensor, config: StrongAugmentConfig):
    """Augment one ``(C, *spatial)`` image and its ``(1, *spatial)`` class-index label consistently.

    The spatial part is fine-tuning's :class:`~medtransfer.train.augment.SpatialAugment` (always applied here);
    the intensity transforms (gamma, bias field, noise) are the student's own.
    """
    spatial = SpatialAugment(
        max_rotation_deg=config.rotate_deg or 0.0,
        scale_range=(1.0 - (config.scale or 0.0), 1.0 + (config.scale or 0.0)),
        p_affine=1.0 if (config.rotate_deg or config.scale) else 0.0,
        p_flip=0.5 if config.flip else 0.0,
    )
    moved = spatial({"image": image.float(), "label": label})
    image, label = moved["image"], moved["label"]
    dims = image.ndim - 1
    if config.gamma:
        gamma = math.exp(_uniform(-config.gamma, config.gamma))
        image = image.sign() * image.abs().pow(gamma)
    if config.bias:
        ramp = sum(
            _uniform(-config.bias, config.bias)
            * torch.linspace(-1, 1, n).reshape([n if i == d else 1 for i in range(dims)])
            for d, n in enumerate(image.shape[1:])
        )
        image = image * torch.exp(ramp)
    if config.noise_std:
        image = image + config.noise_std * torch.randn_like(image)
    return image, label


class AugmentedDataset(Dataset):
    """Wraps a dataset of ``{"image", "label", ...}`` items with :func:`augment_item`."""

    def __init__(self, base: Dataset, config: StrongAugmentConfig) -> None:
        self.base, self.config = base, config

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["image"], item["label"] = augment_item(item["image"], item["label"], self.config)
        return item


def add_feature_dropout(model: nn.Module, p: float, skip: Sequence[str] = ("head",)) -> list:
    """Dropout on the output of every named stage (except ``skip``) while training; returns the hook handles.

    Remove with ``for h in handles: h.remove()`` before saving or predicting (eval mode is a no-op anyway).
    """
    if p <= 0:
        return []
    handles = []
    for name, module in model.stage_modules().items():
        if name in skip:
            continue
        handles.append(module.register_forward_hook(lambda m, args, out: F.dropout(out, p, m.training)))
    return handles
