"""Losses against hand-worked values and against MONAI."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss as MonaiDiceCE
from monai.losses import DiceLoss as MonaiDice

from medtransfer.errors import ConfigError
from medtransfer.train import create_loss, list_losses
from medtransfer.train.losses import BlobDiceLoss, blob_components


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
    assert list_losses() == ["bce", "blob_dice_ce", "ce", "dice", "dice_ce", "dice_topk"]
    with pytest.raises(ConfigError, match="dice_ce"):
        create_loss("dice_cee")


def _logits(probabilities: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    p = torch.tensor(probabilities, dtype=torch.float64)
    return torch.log(p / (1 - p)).float().reshape(shape)


def test_blob_components_are_numbered_across_the_batch():
    labels = torch.tensor([[[1, 0, 2, 2]], [[0, 0, 0, 1]]])  # two classes in sample 0 are one foreground each
    assert blob_components(labels).tolist() == [[[1, 0, 2, 2]], [[0, 0, 0, 3]]]
    diagonal = torch.tensor([[[1, 0], [0, 1]]])  # 8-connected in 2D: one blob
    assert int(blob_components(diagonal).max()) == 1


def test_blob_dice_hand_values():
    # sample 0: probabilities 0.5 0.2 0.8 0.6, reference 1 0 1 1 -> blobs {0} (size 1) and {2, 3} (size 2);
    # the background of the sample holds 0.2.  Blob 1: 2*0.5 / (0.5 + 0.2 + 1) ; blob 2: 2*1.4 / (1.4 + 0.2 + 2).
    one = _logits([0.5, 0.2, 0.8, 0.6], (1, 1, 1, 4))
    labels = torch.tensor([1, 0, 1, 1]).reshape(1, 1, 4)
    blob1, blob2 = 1.0 / 1.7, 2.8 / 3.6
    assert float(create_loss("dice", smooth=0.0)(one, labels)) != pytest.approx(1 - (blob1 + blob2) / 2)
    assert float(BlobDiceLoss(smooth=0.0)(one, labels)) == pytest.approx(1 - (blob1 + blob2) / 2, rel=1e-6)
    # sample 1 (all 0.5, one blob at the end): its own background (1.5), not sample 0's, enters its blob's Dice
    two = torch.cat([one, torch.zeros(1, 1, 1, 4)])
    labels2 = torch.cat([labels, torch.tensor([0, 0, 0, 1]).reshape(1, 1, 4)])
    blob3 = 1.0 / (0.5 + 1.5 + 1)
    assert float(BlobDiceLoss(smooth=0.0)(two, labels2)) == pytest.approx(1 - (blob1 + blob2 + blob3) / 3, rel=1e-6)


def test_blob_dice_softmax_uses_one_minus_background():
    # two channels: foreground probability = 1 - softmax[:, 0]; logits (0, log 4) -> p_fg = 0.8
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1] = math.log(4.0)
    labels = torch.tensor([1, 0]).reshape(1, 1, 2)
    assert float(BlobDiceLoss(smooth=0.0)(logits, labels)) == pytest.approx(1 - 1.6 / (0.8 + 0.8 + 1), rel=1e-6)


def test_blob_dice_ce_weights_and_empty_batches():
    logits = torch.randn(2, 2, 6, 6, requires_grad=True)
    labels = torch.zeros(2, 6, 6, dtype=torch.long)
    labels[0, 1:3, 1:3] = 1
    labels[1, 4, 4] = 1
    total = create_loss("blob_dice_ce", blob_weight=0.5)(logits, labels)
    expected = create_loss("dice_ce")(logits, labels) + 0.5 * BlobDiceLoss()(logits, labels)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    total.backward()
    assert logits.grad is not None
    assert float(logits.grad.abs().sum()) > 0
    empty = torch.zeros(2, 6, 6, dtype=torch.long)
    assert float(BlobDiceLoss()(logits, empty)) == 0.0
    assert float(create_loss("blob_dice_ce")(logits, empty)) == pytest.approx(
        float(create_loss("dice_ce")(logits, empty))
    )


def test_blob_dice_weighs_a_small_lesion_like_a_large_one():
    # a prediction that finds a 16-voxel lesion and misses a 1-voxel one: batch Dice barely notices the miss,
    # blob Dice loses half its value
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 1
    labels[0, 7, 7] = 1
    p = torch.full((1, 1, 8, 8), 1e-4)
    p[0, 0, :4, :4] = 1 - 1e-4
    logits = torch.log(p / (1 - p))
    assert float(create_loss("dice", smooth=0.0)(logits, labels)) < 0.04
    assert float(BlobDiceLoss(smooth=0.0)(logits, labels)) == pytest.approx(0.5, abs=0.01)


def test_blob_dice_pairs_each_blob_with_its_own_sample_past_an_empty_one():
    # samples 0 and 2 hold blobs, sample 1 none: each blob's Dice uses its own sample's background
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 5, 5)
    labels = torch.zeros(3, 5, 5, dtype=torch.long)
    labels[0, 1, 1] = labels[0, 3, 3] = labels[2, 2, 2] = 1
    p = torch.sigmoid(logits[:, 0])
    dices = []
    for sample, y, x in ((0, 1, 1), (0, 3, 3), (2, 2, 2)):
        inside, background = p[sample, y, x], (p[sample] * (labels[sample] == 0)).sum()
        dices.append(2 * inside / (inside + background + 1))
    expected = 1 - float(torch.stack(dices).mean())
    assert float(BlobDiceLoss(smooth=0.0)(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_topk_cross_entropy_hand_values():
    from medtransfer.train.losses import TopKCrossEntropyLoss

    # four voxels, two classes; logits (0, 0) cost log 2, a correct confident voxel ~0, a wrong one log(1 + e^4)
    logits = torch.tensor([[[[0.0, 4.0], [0.0, -4.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # (B=1, C=2, 2, 2)
    target = torch.tensor([[[0, 0], [1, 0]]])
    per_voxel = [math.log(2), math.log(1 + math.exp(-4)), math.log(2), math.log(1 + math.exp(4))]
    assert float(TopKCrossEntropyLoss(k=100)(logits, target)) == pytest.approx(sum(per_voxel) / 4, rel=1e-6)
    assert float(TopKCrossEntropyLoss(k=50)(logits, target)) == pytest.approx(
        (math.log(1 + math.exp(4)) + math.log(2)) / 2, rel=1e-6
    )
    # fewer voxels than one per cent: the single worst voxel
    assert float(TopKCrossEntropyLoss(k=1)(logits, target)) == pytest.approx(math.log(1 + math.exp(4)), rel=1e-6)
    with pytest.raises(ValueError, match="percentage"):
        TopKCrossEntropyLoss(k=0)


def test_dice_topk_is_dice_plus_topk_and_full_k_is_dice_ce():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
    topk = create_loss("dice_topk")
    expected = create_loss("dice")(logits, target) + _topk_reference(logits, target, 10)
    assert float(topk(logits, target)) == pytest.approx(float(expected), rel=1e-6)
    assert float(create_loss("dice_topk", k=100)(logits, target)) == pytest.approx(
        float(create_loss("dice_ce")(logits, target)), rel=1e-6
    )


def _topk_reference(logits, target, k):
    """The k per cent highest per-voxel cross-entropies by sorting (as nnU-Net's TopKLoss takes them)."""
    per_voxel = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten()
    count = int(per_voxel.numel() * k / 100)
    return per_voxel.sort(descending=True).values[:count].mean()


def test_topk_cross_entropy_weighs_a_missed_small_lesion_more_than_plain_ce():
    # 1000 easy background voxels and 10 missed lesion voxels: plain CE averages the miss away, top-10 % does not
    logits = torch.zeros(1, 2, 1010)
    logits[0, 0] = 6.0  # confident background everywhere
    target = torch.zeros(1, 1010, dtype=torch.long)
    target[0, :10] = 1
    plain = float(create_loss("ce")(logits, target))
    top = float(create_loss("dice_topk").ce(logits, target))
    assert top > 5 * plain
