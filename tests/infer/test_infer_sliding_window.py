"""Slice-wise and patch-wise sliding-window prediction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtransfer.infer import importance_map, predict_patches, predict_slices, predict_volume
from medtransfer.infer.sliding_window import window_starts


def _conv2d() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(2, 3, 3, padding=1).eval()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_equal_per_slice_forward(axis):
    model = _conv2d()
    image = torch.randn(2, 5, 6, 7)
    probs = predict_slices(model, image, axis=axis, batch_size=3, divisor=1)
    assert probs.shape == (3, 5, 6, 7)
    index = [slice(None)] * 4
    index[axis + 1] = 2
    expected = model(image[tuple(index)][None]).softmax(1)[0]
    assert torch.allclose(probs[tuple(index)], expected, atol=1e-6)


def test_slices_padding_is_cropped_back_and_sigmoid_gives_two_classes():
    model = nn.Conv2d(1, 1, 1).eval()
    image = torch.randn(1, 4, 5, 3)
    probs = predict_slices(model, image, divisor=8)
    assert probs.shape == (2, 4, 5, 3)
    assert torch.allclose(probs.sum(0), torch.ones(4, 5, 3))
    assert torch.allclose(probs[1], torch.sigmoid(model(image.movedim(3, 0)).movedim(0, 3)[0]), atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_patches_of_a_pointwise_model_are_exact(blend):
    torch.manual_seed(0)
    model = nn.Conv3d(1, 2, 1).eval()
    image = torch.randn(1, 11, 9, 6)
    probs = predict_patches(model, image, (4, 4, 4), overlap=0.5, blend=blend, batch_size=3)
    expected = model(image[None]).softmax(1)[0]
    assert probs.shape == (2, 11, 9, 6)
    assert torch.allclose(probs, expected, atol=1e-5)


def test_patch_smaller_volume_is_padded_and_whole_volume_default():
    model = nn.Conv3d(1, 1, 1).eval()
    image = torch.randn(1, 3, 5, 2)
    assert predict_patches(model, image, (4, 8, 4)).shape == (2, 3, 5, 2)
    assert predict_volume(model, image.numpy(), spatial_dims=3, divisor=4).shape == (2, 3, 5, 2)


def test_window_starts_cover_the_axis():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 5, 7]
    assert window_starts(3, 4, 0.5) == [0]
    starts = window_starts(11, 4, 0.5)
    assert starts[-1] + 4 == 11


def test_gaussian_importance_peaks_in_the_centre():
    w = importance_map((5, 5, 5))
    assert w[2, 2, 2] == w.max() == 1
    assert w[0, 0, 0] < w[1, 1, 1] < w[2, 2, 2]
    assert w.min() > 0
    assert torch.equal(importance_map((2, 2, 2), "constant"), torch.ones(2, 2, 2))
