"""Dice and IoU: hand-worked squares, the empty-case convention, reductions, and agreement with MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtransfer.errors import ConfigError, DataError
from medtransfer.metrics import DiceMetric, IoUMetric, compute_dice, compute_iou, reduce_metric


def _two_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 squares offset by (1, 2): overlap 3x2 = 6 voxels."""
    pred = np.zeros((1, 1, 8, 8), dtype=bool)
    ref = np.zeros((1, 1, 8, 8), dtype=bool)
    pred[0, 0, 1:5, 1:5] = True
    ref[0, 0, 2:6, 3:7] = True
    return pred, ref


def test_two_squares_by_hand():
    pred, ref = _two_squares()
    assert compute_dice(pred, ref)[0, 0] == pytest.approx(2 * 6 / (16 + 16))
    assert compute_iou(pred, ref)[0, 0] == pytest.approx(6 / (16 + 16 - 6))


def test_multiclass_label_maps_and_empty_convention():
    ref = np.array([[[1, 1, 2, 0], [0, 0, 2, 0]]])  # (B=1, 2, 4)
    pred = np.array([[[1, 0, 2, 2], [0, 3, 0, 0]]])
    dice = compute_dice(pred, ref, labels=[1, 2, 3, 4])
    assert dice[0, 0] == pytest.approx(2 * 1 / 3)  # label 1: 1 of 2 found
    assert dice[0, 1] == pytest.approx(2 * 1 / 4)  # label 2
    assert dice[0, 2] == 0.0  # predicted but absent from the reference
    assert math.isnan(dice[0, 3])  # absent from both
    iou = compute_iou(pred, ref, labels=[1, 2, 3, 4])
    assert iou[0, 1] == pytest.approx(1 / 3)
    assert reduce_metric(dice) == pytest.approx(np.mean([2 / 3, 0.5, 0.0]))  # NaN ignored


def test_label_maps_with_a_channel_axis():
    ref = np.zeros((2, 1, 3, 4, 4), dtype=np.int64)
    ref[:, 0, 1, 1:3, 1:3] = 1
    np.testing.assert_array_equal(compute_dice(ref, ref, labels=[1]), compute_dice(ref[:, 0], ref[:, 0], labels=[1]))


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    pred, ref = _two_squares()
    assert compute_dice(torch.from_numpy(pred), torch.from_numpy(ref).int())[0, 0] == pytest.approx(0.375)


def test_reductions():
    table = np.array([[1.0, np.nan], [0.5, 0.25]])
    assert reduce_metric(table, "mean") == pytest.approx(1.75 / 3)
    np.testing.assert_allclose(reduce_metric(table, "mean_batch"), [0.75, 0.25])
    np.testing.assert_allclose(reduce_metric(table, "mean_channel"), [1.0, 0.375])
    assert reduce_metric(table, "sum") == pytest.approx(1.75)
    assert math.isnan(reduce_metric(np.full((2, 1), np.nan)))
    with pytest.raises(ConfigError, match="did you mean 'mean_batch'"):
        reduce_metric(table, "mean_bach")


def test_accumulator_call_aggregate_reset():
    pred, ref = _two_squares()
    metric = DiceMetric()
    first = metric(pred, ref)
    metric(ref, ref)
    assert first[0, 0] == pytest.approx(0.375)
    assert metric.aggregate() == pytest.approx((0.375 + 1.0) / 2)
    metric.reset()
    metric(ref, ref)
    assert metric.aggregate() == 1.0
    assert IoUMetric()(pred, ref)[0, 0] == pytest.approx(6 / 26)


def test_agrees_with_monai_when_reference_is_present():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(0)
    pred = rng.random((3, 2, 7, 6, 5)) > 0.6
    ref = rng.random((3, 2, 7, 6, 5)) > 0.5
    expected_dice = monai_metrics.DiceMetric(include_background=True, reduction="none")(
        torch.from_numpy(pred), torch.from_numpy(ref)
    )
    expected_iou = monai_metrics.MeanIoU(include_background=True, reduction="none")(
        torch.from_numpy(pred), torch.from_numpy(ref)
    )
    np.testing.assert_allclose(compute_dice(pred, ref), expected_dice.numpy(), atol=1e-6)
    np.testing.assert_allclose(compute_iou(pred, ref), expected_iou.numpy(), atol=1e-6)


def test_differs_from_monai_on_empty_reference():
    """MONAI (ignore_empty=True) gives NaN for an empty reference even with false positives; we give 0."""
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    pred = np.zeros((1, 1, 4, 4), dtype=bool)
    pred[0, 0, 0, 0] = True
    ref = np.zeros_like(pred)
    monai_value = monai_metrics.DiceMetric(include_background=True)(torch.from_numpy(pred), torch.from_numpy(ref))
    assert math.isnan(float(monai_value))
    assert compute_dice(pred, ref)[0, 0] == 0.0


def test_bad_inputs():
    pred, ref = _two_squares()
    with pytest.raises(DataError, match="binary"):
        compute_dice(pred.astype(np.int64) * 2, ref)
    with pytest.raises(DataError, match=r"\(B, C, \*spatial\)"):
        compute_dice(pred[0], ref[0])
    with pytest.raises(DataError, match="same shape"):
        compute_iou(pred, ref[..., :4])
