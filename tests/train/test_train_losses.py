"""Losses against hand-worked values and against MONAI."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss as MonaiDiceCE
from monai.losses import DiceLoss as MonaiDice

from medtransfer.errors import ConfigError
from medtransfer.train import create_loss, list_losses


def test_bce_hand_value():
    logits = torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2)
    target = torch.tensor([1, 0]).reshape(1, 1, 2)
    expected = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert float(create_loss("bce")(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_dice_hand_value_binary():
    # sigmoid(0)=0.5 everywhere on 4 pixels, 2 of them foreground: 2*1 / (2 + 2) = 0.5
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[1, 1], [0, 0]]).reshape(1, 1, 2, 2)
    assert float(create_loss("dice", smooth=0.0)(logits, target)) == pytest.approx(0.5)


@pytest.mark.parametrize("include_background", [True, False])
def test_dice_matches_monai_batch_dice(include_background):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=g)
    target = torch.randint(0, 3, (2, 1, 5, 6), generator=g)
    ours = create_loss("dice", include_background=include_background)(logits, target)
    ref = MonaiDice(include_background=include_background, to_onehot_y=True, softmax=True, batch=True)
    assert float(ours) == pytest.approx(float(ref(logits, target)), abs=1e-5)


def test_dice_ce_matches_monai():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4), generator=g)
    ours = create_loss("dice_ce")(logits, target)
    ref = MonaiDiceCE(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    assert float(ours) == pytest.approx(float(ref(logits, target)), abs=1e-5)


def test_ce_equals_torch_cross_entropy():
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(create_loss("ce")(logits, target), expected)


def test_registry_unknown_name_suggests():
    assert list_losses() == ["bce", "ce", "dice", "dice_ce"]
    with pytest.raises(ConfigError, match="dice_ce"):
        create_loss("dice_cee")
