"""Pseudo-labels (threshold / entropy masks), slice-wise teacher prediction and the masked loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.semi import (
    IGNORE_INDEX,
    MaskedSegLoss,
    PseudoLabelConfig,
    UnlabelledCase,
    confident_labels,
    predict_probabilities,
    pseudo_label,
)


def test_threshold_and_entropy_masks_by_hand():
    # three voxels, two classes: p(fg) = 0.95, 0.6, 0.02
    fg = torch.tensor([0.95, 0.6, 0.02])
    probs = torch.stack([1 - fg, fg])
    labels, conf = confident_labels(probs, PseudoLabelConfig(threshold=0.9))
    assert labels.tolist() == [1, IGNORE_INDEX, 0]
    assert conf == pytest.approx([0.95, 0.6, 0.98])
    # normalised binary entropy of 0.95 is 0.286, of 0.98 is 0.141: max_entropy 0.2 drops the first voxel
    h = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05)) / math.log(2)
    assert h == pytest.approx(0.2864, abs=1e-4)
    labels, _ = confident_labels(probs, PseudoLabelConfig(threshold=0.5, max_entropy=0.2))
    assert labels.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 0]
    with pytest.raises(ConfigError, match="threshold"):
        PseudoLabelConfig(threshold=1.5)


class _Brightness(nn.Module):
    """A one-channel 'teacher' whose logit is 10 * (intensity - 0.5), to check slicing, padding and cropping."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        assert x.shape[-1] % 4 == 0
        assert x.shape[-2] % 4 == 0
        return self.scale * (x - 0.5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_predict_probabilities_slices_pads_and_crops(axis):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (1, 5, 6, 7)).astype(np.float32)
    probs = predict_probabilities(_Brightness(), image, axis=axis, divisor=4, batch_size=3)
    assert probs.shape == (2, 5, 6, 7)
    expected = torch.sigmoid(10 * (torch.from_numpy(image[0]) - 0.5))
    assert torch.allclose(probs[1], expected, atol=1e-6)
    assert torch.allclose(probs.sum(0), torch.ones(5, 6, 7), atol=1e-6)


def test_pseudo_label_cases():
    image = np.zeros((1, 4, 4, 2), np.float32)
    image[0, :2] = 1.0  # confident foreground
    image[0, 2, :, :] = 0.55  # unconfident (p = 0.62)
    cases = pseudo_label(_Brightness(), [UnlabelledCase("u", image)], PseudoLabelConfig(threshold=0.9), divisor=4)
    label = cases[0].label
    assert (label[:2] == 1).all()
    assert (label[2] == IGNORE_INDEX).all()
    assert (label[3] == 0).all()
    assert cases[0].kept_fraction == pytest.approx(0.75)


def test_masked_loss_ignores_unconfident_voxels():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (2, 1, 4, 4))
    target[0, 0, :2] = IGNORE_INDEX
    keep = target[:, 0] != IGNORE_INDEX
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][keep], target[:, 0][keep].float())
    loss = MaskedSegLoss()(logits, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert (logits.grad[0, 0, :2] == 0).all()
    # multi-class agrees with cross_entropy(ignore_index)
    logits3 = torch.randn(2, 3, 4, 4)
    target3 = torch.randint(0, 3, (2, 4, 4))
    target3[1, 1:] = IGNORE_INDEX
    ref = F.cross_entropy(logits3, target3, ignore_index=IGNORE_INDEX)
    assert MaskedSegLoss()(logits3, target3).item() == pytest.approx(ref.item(), rel=1e-6)
    # nothing kept: zero, not NaN, with Dice too
    empty = torch.full((1, 1, 4, 4), IGNORE_INDEX)
    value = MaskedSegLoss(dice=True)(torch.randn(1, 1, 4, 4), empty)
    assert torch.isfinite(value)
