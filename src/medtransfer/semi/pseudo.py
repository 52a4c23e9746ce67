"""Pseudo-labels from a teacher: slice-wise prediction, confidence / entropy masks, ignore-index for the rest.

The teacher is a 2D model applied to every slice along ``axis`` of preprocessed volumes ``(C, X, Y, Z)``
(the preprocessing of its fine-tuning run, so the intensities match).  A voxel keeps its pseudo-label when the
teacher's top-class probability is at least ``threshold`` and (optionally) the normalised entropy of its class
distribution is at most ``max_entropy``; every other voxel gets ``ignore_index`` and is left out of the loss.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.io import load_nifti
from ..data.layouts import Case
from ..data.preprocess import PreprocessConfig, preprocess_case, split_channels
from ..errors import ConfigError
from .loss import IGNORE_INDEX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PseudoLabelConfig:
    """How confident a teacher must be for a voxel to keep its pseudo-label.

    Attributes:
        threshold: minimum top-class probability (0.5 keeps every binary voxel).
        max_entropy: maximum normalised entropy in [0, 1] (entropy / log(num classes)); ``None``: no entropy test.
        ignore_index: label of discarded voxels.
        batch_size: slices per teacher forward pass.
    """

    threshold: float = 0.9
    max_entropy: float | None = None
    ignore_index: int = IGNORE_INDEX
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--pseudo-threshold (pseudo-label threshold) must be in [0, 1], got {self.threshold}")
        if self.max_entropy is not None and not 0.0 <= self.max_entropy <= 1.0:
            raise ConfigError(
                f"--pseudo-max-entropy (pseudo-label max_entropy) must be in [0, 1], got {self.max_entropy}"
            )


@dataclass(frozen=True)
class UnlabelledCase:
    """A preprocessed scan without a label: image ``(C, X, Y, Z)`` float32."""

    case_id: str
    image: np.ndarray


@dataclass(frozen=True)
class PseudoLabelledCase:
    """A pseudo-labelled case: class indices with ``ignore_index`` where unconfident, and the confidence map.

    Has ``case_id``/``image``/``label`` like a prepared labelled case, so the slice datasets take it as is.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    confidence: np.ndarray

    @property
    def kept_fraction(self) -> float:
        return float(np.mean(self.label != IGNORE_INDEX)) if self.label.size else 0.0


def prepare_unlabelled(cases: Sequence[Case], config: PreprocessConfig) -> list[UnlabelledCase]:
    """Load and preprocess scans (their labels, if any, are not read)."""
    prepared = []
    for case in cases:
        channels = [v for path in case.images for v in split_channels(load_nifti(path, dtype="float32"))]
        image, _, _ = preprocess_case(channels, config, None)
        prepared.append(UnlabelledCase(case.case_id, image))
    return prepared


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, image: np.ndarray, *, axis: int = 2, divisor: int = 16, batch_size: int = 16
) -> torch.Tensor:
    """Class probabilities ``(K, X, Y, Z)`` of a 2D model applied slice by slice (K = 2 for one-channel models).

    Slices are zero-padded to a multiple of ``divisor`` (the model's down-sampling) and cropped back.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    volume = torch.from_numpy(np.ascontiguousarray(image)).float().movedim(axis + 1, 0)  # (S, C, a, b)
    size = volume.shape[-2:]
    pad = [0, (-size[1]) % divisor, 0, (-size[0]) % divisor]
    outputs = []
    for start in range(0, volume.shape[0], batch_size):
        batch = torch.nn.functional.pad(volume[start : start + batch_size], pad).to(device)
        logits = model(batch).float()[..., : size[0], : size[1]]
        if logits.shape[1] == 1:
            fg = torch.sigmoid(logits)
            outputs.append(torch.cat([1 - fg, fg], 1).cpu())
        else:
            outputs.append(torch.softmax(logits, 1).cpu())
    model.train(was_training)
    return torch.cat(outputs).movedim(0, axis + 1)  # (K, X, Y, Z)


def confident_labels(probs: torch.Tensor, config: PseudoLabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, confidence)`` from class probabilities ``(K, *spatial)``; unconfident voxels get ignore_index."""
    confidence, labels = probs.max(0)
    keep = confidence >= config.threshold
    if config.max_entropy is not None:
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(0) / math.log(probs.shape[0])
        keep &= entropy <= config.max_entropy
    labels = torch.where(keep, labels, torch.full_like(labels, config.ignore_index))
    return labels.numpy().astype(np.int64), confidence.numpy().astype(np.float32)


def pseudo_label(
    teacher: nn.Module,
    cases: Sequence[UnlabelledCase],
    config: PseudoLabelConfig | None = None,
    *,
    axis: int = 2,
    divisor: int = 16,
) -> list[PseudoLabelledCase]:
    """Pseudo-label preprocessed unlabelled cases with ``teacher`` (see :class:`PseudoLabelConfig`)."""
    config = config or PseudoLabelConfig()
    result = []
    for case in cases:
        probs = predict_probabilities(teacher, case.image, axis=axis, divisor=divisor, batch_size=config.batch_size)
        labels, confidence = confident_labels(probs, config)
        result.append(PseudoLabelledCase(case.case_id, case.image, labels, confidence))
        log.info("pseudo-labelled %s: %.1f%% of voxels kept", case.case_id, 100 * result[-1].kept_fraction)
    return result
