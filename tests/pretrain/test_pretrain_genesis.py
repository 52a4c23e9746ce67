"""Models Genesis corruptions: hand-checked properties of each transform."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.pretrain.genesis import (
    GenesisCorruption,
    bezier_curve,
    inpaint,
    local_pixel_shuffle,
    nonlinear_intensity,
    outpaint,
)


def test_bezier_endpoints_and_a_straight_line():
    x, y = bezier_curve(np.array([[0, 0], [1 / 3, 1 / 3], [2 / 3, 2 / 3], [1, 1]]), n=5)
    # collinear, evenly spaced control points give the identity line x(t) = y(t) = t
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1.0], atol=1e-12)
    np.testing.assert_allclose(y, x, atol=1e-12)


def test_nonlinear_intensity_is_monotonic_and_keeps_the_range():
    image = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    seen = set()
    for seed in range(12):
        out = nonlinear_intensity(image, np.random.default_rng(seed)).ravel()
        assert out.min() >= -1e-6
        assert out.max() <= 1 + 1e-6
        steps = np.diff(out)
        increasing = bool((steps >= -1e-6).all())
        assert increasing or bool((steps <= 1e-6).all())  # monotonic one way or the other
        seen.add(increasing)
    assert seen == {True, False}  # both directions occur (contrast inversion half the time)


def test_local_pixel_shuffle_only_permutes_within_blocks():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    out = local_pixel_shuffle(image, np.random.default_rng(1))
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(image.ravel()))
    # pixels never travel further than a block side (a tenth of the image, here 3)
    single = local_pixel_shuffle(image, np.random.default_rng(2), blocks=1)
    moved = np.argwhere(single != image)
    if len(moved):
        assert np.ptp(moved[:, 0]) < 3
        assert np.ptp(moved[:, 1]) < 3


def test_inpaint_changes_boxes_and_outpaint_keeps_boxes():
    image = np.full((30, 30), 0.5, dtype=np.float32)
    painted = inpaint(image, np.random.default_rng(0), holes=1)
    changed = painted != image
    rows, cols = np.where(changed)
    box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    assert 25 <= box <= 100
    assert changed.sum() == box
    outside = outpaint(image, np.random.default_rng(0), windows=1)
    kept = outside == 0.5
    rows, cols = np.where(kept)
    assert kept.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1) >= 12 * 12  # one 12-18 pixel window survives


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corruption_is_reproducible_and_bounded(seed):
    image = np.random.default_rng(5).random((32, 32)).astype(np.float32)
    a = GenesisCorruption()(image, np.random.default_rng(seed))
    b = GenesisCorruption()(image, np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert a.min() >= 0
    assert a.max() <= 1


def test_no_corruption_when_every_probability_is_zero():
    image = np.random.default_rng(5).random((16, 16)).astype(np.float32)
    out = GenesisCorruption(shuffle_prob=0, nonlinear_prob=0, paint_prob=0)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)


def test_segmentation_dice_from_a_hand_worked_confusion_matrix():
    import torch

    from medtransfer.pretrain.evaluation import dice_per_class, foreground_dice

    # truth rows, prediction columns: class 1 has TP 2, FP 1 (from class 0), FN 1 (predicted as 2)
    confusion = torch.tensor([[5, 1, 0], [0, 2, 1], [1, 0, 3]])
    torch.testing.assert_close(dice_per_class(confusion), torch.tensor([10 / 12, 4 / 6, 6 / 8]))
    assert foreground_dice(confusion) == pytest.approx(12 / 14)
    assert torch.isnan(dice_per_class(torch.tensor([[4, 0], [0, 0]]))[1])
