"""Lesion-wise detection on hand-built component layouts: hits, misses, splits, merges, IoU threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtransfer.errors import ConfigError, DataError
from medtransfer.metrics import LesionDetectionMetric, LesionStats, compute_lesion_detection, reduce_lesion_stats
from medtransfer.metrics.lesions import check_iou_threshold


def _layout() -> tuple[np.ndarray, np.ndarray]:
    """Reference: lesions A (split in the prediction), B and C (merged), D (missed); plus one false positive."""
    ref = np.zeros((1, 1, 12, 12, 4), dtype=bool)
    pred = np.zeros_like(ref)
    ref[0, 0, 0:2, 0:4, 0:2] = True  # A
    pred[0, 0, 0:2, 0, 0:2] = pred[0, 0, 0:2, 3, 0:2] = True  # A split into two predictions
    ref[0, 0, 5:7, 0:2, 0:2] = ref[0, 0, 5:7, 3:5, 0:2] = True  # B and C
    pred[0, 0, 5:7, 0:5, 0:2] = True  # one prediction bridging B and C
    ref[0, 0, 10:12, 10:12, 2:4] = True  # D, missed
    pred[0, 0, 0:2, 9:11, 2:4] = True  # false positive
    return pred, ref


def test_split_merge_miss_and_false_positive():
    stats = compute_lesion_detection(*_layout())
    assert (int(stats.n_ref[0, 0]), int(stats.n_pred[0, 0])) == (4, 4)
    assert (int(stats.tp[0, 0]), int(stats.fn[0, 0]), int(stats.fp[0, 0])) == (3, 1, 1)
    assert stats.detection_rate[0, 0] == pytest.approx(3 / 4)
    assert stats.precision[0, 0] == pytest.approx(3 / 4)  # 3 of 4 predicted components hit a lesion
    assert stats.f1[0, 0] == pytest.approx(3 / 4)
    assert stats.count_error[0, 0] == 0


def test_volumes_in_mm3():
    pred, ref = _layout()
    stats = compute_lesion_detection(pred, ref, spacing=(1.0, 0.5, 2.0))
    assert stats.volume_ref[0, 0] == pytest.approx(ref.sum() * 1.0)
    assert stats.volume_error[0, 0] == pytest.approx((pred.sum() - ref.sum()) * 1.0)
    assert compute_lesion_detection(pred, ref).volume_pred[0, 0] == pred.sum()


def test_iou_threshold_variant():
    pred, ref = _layout()
    stats = compute_lesion_detection(pred, ref, iou_threshold=0.5)
    # A: each half has IoU 4/16 < 0.5; B and C: IoU 8/20 < 0.5 with the bridge; nothing is detected
    assert (int(stats.tp[0, 0]), int(stats.fn[0, 0]), int(stats.fp[0, 0])) == (0, 4, 4)
    loose = compute_lesion_detection(pred, ref, iou_threshold=0.25)
    assert (int(loose.tp[0, 0]), int(loose.fp[0, 0])) == (3, 1)  # A via a half (4/16), B and C (8/20)


def test_connectivity_decides_whether_diagonal_voxels_are_one_lesion():
    ref = np.zeros((1, 1, 4, 4, 4), dtype=bool)
    ref[0, 0, 0, 0, 0] = ref[0, 0, 1, 1, 1] = True
    assert compute_lesion_detection(ref, ref, connectivity=26).n_ref[0, 0] == 1
    assert compute_lesion_detection(ref, ref, connectivity=18).n_ref[0, 0] == 2
    assert compute_lesion_detection(ref, ref, connectivity=6).n_ref[0, 0] == 2
    with pytest.raises(ConfigError, match="allowed"):
        compute_lesion_detection(ref, ref, connectivity=8)


def test_2d_and_label_maps():
    ref = np.zeros((1, 6, 6), dtype=np.int64)
    ref[0, 0, 0] = ref[0, 1, 1] = 1  # diagonal: one lesion with the default (8-connected in 2D)
    ref[0, 4:6, 4:6] = 2
    pred = np.zeros_like(ref)
    pred[0, 1, 1] = 1
    stats = compute_lesion_detection(pred, ref, labels=[1, 2])
    assert stats.n_ref[0].tolist() == [1, 1]
    assert stats.tp[0].tolist() == [1, 0]
    assert compute_lesion_detection(pred, ref, connectivity=4, labels=[1, 2]).n_ref[0, 0] == 2


def test_empty_cases():
    empty = np.zeros((1, 1, 4, 4, 4), dtype=bool)
    lesion = empty.copy()
    lesion[0, 0, 1, 1, 1] = True
    both = compute_lesion_detection(empty, empty)
    assert math.isnan(both.detection_rate[0, 0])
    assert math.isnan(both.precision[0, 0])
    assert math.isnan(both.f1[0, 0])
    missed = compute_lesion_detection(empty, lesion)
    assert missed.detection_rate[0, 0] == 0.0
    assert math.isnan(missed.precision[0, 0])
    assert missed.f1[0, 0] == 0.0
    spurious = compute_lesion_detection(lesion, empty)
    assert spurious.fp[0, 0] == 1
    assert spurious.f1[0, 0] == 0.0


def test_micro_and_macro_reduction_and_accumulator():
    pred, ref = _layout()
    perfect = ref.copy()
    metric = LesionDetectionMetric()
    metric(pred, ref)
    metric(perfect, ref)
    micro = metric.aggregate()
    assert micro["tp"][0] == 7
    assert micro["detection_rate"][0] == pytest.approx(7 / 8)
    assert micro["precision"][0] == pytest.approx(7 / 8)
    macro = reduce_lesion_stats(metric.get_buffer(), "macro")
    assert macro["detection_rate"][0] == pytest.approx((0.75 + 1.0) / 2)
    with pytest.raises(ConfigError, match="did you mean 'micro'"):
        metric.aggregate("mirco")
    metric.reset()
    metric(perfect, ref)
    assert metric.aggregate()["f1"][0] == 1.0


def test_dice_of_detected_lesions():
    stats = compute_lesion_detection(*_layout())
    split = 2 * 8 / (16 + 8)  # A (16 voxels) against its two 4-voxel halves
    merged = 2 * 8 / (8 + 20)  # B, and C, against the whole 20-voxel bridge
    assert stats.detected_dice_sum[0, 0] == pytest.approx(split + 2 * merged)
    assert stats.detected_dice[0, 0] == pytest.approx((split + 2 * merged) / 3)  # D is missed: not averaged
    half = compute_lesion_detection(*_layout(), iou_threshold=0.25)
    assert half.detected_dice[0, 0] == pytest.approx((split + 2 * merged) / 3)
    assert math.isnan(compute_lesion_detection(*_layout(), iou_threshold=0.5).detected_dice[0, 0])


def test_detected_dice_reduces_over_lesions_and_fp_per_case():
    pred, ref = _layout()
    stats = compute_lesion_detection(np.concatenate([pred, ref]), np.concatenate([ref, ref]))
    micro = reduce_lesion_stats(stats, "micro")
    split, merged = 2 * 8 / 24, 2 * 8 / 28
    assert micro["detected_dice"][0] == pytest.approx((split + 2 * merged + 4 * 1.0) / 7)  # 3 + 4 detected lesions
    assert reduce_lesion_stats(stats, "macro")["detected_dice"][0] == pytest.approx(((split + 2 * merged) / 3 + 1) / 2)
    assert micro["fp_per_case"][0] == pytest.approx(0.5)


def test_records_round_trip_and_name_a_missing_field():
    stats = compute_lesion_detection(*_layout(), spacing=(1.0, 0.5, 2.0))
    records = [{f"lesion_{k}": float(v[0, 0]) for k, v in stats.as_dict().items()}] * 2
    back = LesionStats.from_records(records)
    assert back.tp.dtype == np.int64
    assert back.tp[:, 0].tolist() == [3, 3]
    assert back.detected_dice_sum[1, 0] == pytest.approx(stats.detected_dice_sum[0, 0])
    with pytest.raises(DataError, match="lesion_detected_dice_sum"):
        LesionStats.from_records([{k: v for k, v in records[0].items() if k != "lesion_detected_dice_sum"}])


@pytest.mark.parametrize("bad", [0, 0.0, 1.01, -1, "0.5", True, math.nan, [0.1], "anima"])
def test_iou_threshold_must_be_in_zero_one(bad):
    with pytest.raises(ConfigError, match=r"iou_threshold must be a number in \(0, 1\] .*null .* or 'msseg'"):
        compute_lesion_detection(*_layout(), iou_threshold=bad)
    assert check_iou_threshold(None) is None
    assert check_iou_threshold(1) == 1.0
    assert check_iou_threshold(" MSSEG ") == "msseg"


def test_recall_by_volume_bins_by_mm3_with_the_lower_edge_inclusive():
    from medtransfer.metrics.lesions import recall_by_volume

    ref = np.zeros((30, 30, 30), dtype=bool)
    ref[0:5, 0:5, 0:4] = True  # 100 voxels x 1 mm³ = 100 mm³: the 0.1-1 ml bin (low <= v < high)
    ref[10:13, 10:13, 10:13] = True  # 27 mm³: under 0.03 ml
    ref[20:30, 20:30, 20:30] = True  # 1000 mm³: 1-10 ml
    pred = np.zeros_like(ref)
    pred[0:5, 0:5, 0:4] = True  # found
    pred[20:30, 20:30, 29] = True  # IoU 0.1 with the large one: found at IoU >= 0.1
    counts = recall_by_volume(pred, ref, (1.0, 1.0, 1.0))
    assert counts == {
        "lt0.03ml": (1, 0),
        "0.03-0.1ml": (0, 0),
        "0.1-1ml": (1, 1),
        "1-10ml": (1, 1),
        "ge10ml": (0, 0),
    }
    assert recall_by_volume(pred, ref, (1.0, 1.0, 1.0), iou_threshold=0.2)["1-10ml"] == (1, 0)
    # 2 mm voxels: every volume x 8: 216 mm³ (missed) and 800 mm³ (found) share 0.1-1 ml; 8000 mm³ stays 1-10 ml
    coarse = recall_by_volume(pred, ref, (2.0, 2.0, 2.0))
    assert (coarse["lt0.03ml"], coarse["0.1-1ml"], coarse["1-10ml"]) == ((0, 0), (2, 1), (1, 1))
    tp = int(compute_lesion_detection(pred[None, None], ref[None, None], iou_threshold=0.1).tp[0, 0])
    assert sum(d for _, d in counts.values()) == tp


def test_recall_by_volume_empty_2d_and_bad_input():
    from medtransfer.metrics.lesions import recall_by_volume

    empty = np.zeros((8, 8, 4), dtype=bool)
    assert set(recall_by_volume(empty, empty, (1, 1, 1)).values()) == {(0, 0)}
    ref2d = np.zeros((8, 8), dtype=bool)
    ref2d[1:3, 1:3] = True
    by_area = recall_by_volume(ref2d, ref2d, (1.0, 1.0), (0.0, 5.0, math.inf))  # 2D: 4 mm², bins in mm²
    assert by_area == {"lt0.005ml": (1, 1), "ge0.005ml": (0, 0)}
    for bad in [(10.0, 5.0), (0.0, 10.0, 50.0), (5.0, math.inf), (0.0, 20.0, 10.0, math.inf)]:
        # a finite last edge would drop the lesions above it: every lesion must fall in a bin
        with pytest.raises(ConfigError, match="volume bins must start at 0, increase and end at infinity"):
            recall_by_volume(empty, empty, (1, 1, 1), bad)
    with pytest.raises(ConfigError, match="too close to name apart"):
        recall_by_volume(empty, empty, (1, 1, 1), (0.0, 100.0, 100.00001, 100.00002, math.inf))
    with pytest.raises(DataError, match="differ in shape"):
        recall_by_volume(empty, np.zeros((8, 8, 5), bool), (1, 1, 1))
    with pytest.raises(DataError, match="spacing must have 2 values"):
        recall_by_volume(ref2d, ref2d, (1.0, 1.0, 3.0))  # a 2D case with a slice thickness
    with pytest.raises(DataError, match="positive and finite"):
        recall_by_volume(empty, empty, (1.0, -1.0, 1.0))
    with pytest.raises(DataError, match="one 2D or 3D case"):
        recall_by_volume(empty[None], empty[None], (1, 1, 1))
    big = np.zeros((8, 8, 4), dtype=bool)
    big[:5, :5, :2] = True  # 50 voxels: without a spacing, volumes are voxel counts
    assert recall_by_volume(big, big, None)["0.03-0.1ml"] == (1, 1)


@pytest.mark.parametrize("seed", range(6))
def test_lesion_case_equals_detection_and_recall_by_volume(seed):
    """One labelling for both (what evaluate_case records) gives exactly the two functions' numbers."""
    from scipy import ndimage

    from medtransfer.metrics.lesions import lesion_case, recall_by_volume

    rng = np.random.default_rng(seed)
    shape = (24, 20, 16) if seed % 2 == 0 else (40, 36)
    field = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    ref = field > np.quantile(field, 0.9)  # blobs of many sizes
    pred = ndimage.binary_dilation(ref) if seed % 2 else ndimage.binary_erosion(ref)  # IoU varies by size
    pred[: shape[0] // 4] = False  # lesions missed
    pred |= rng.random(shape) < 0.003  # false-positive specks
    spacing = None if seed == 0 else tuple(float(s) for s in rng.uniform(0.5, 2.0, len(shape)))
    iou = (None, 0.1, 0.5)[seed % 3]
    stats, by_volume = lesion_case(pred, ref, spacing, 26, iou)
    expected = compute_lesion_detection(pred[None, None], ref[None, None], 26, iou, spacing=spacing)
    assert int(expected.n_ref[0, 0]) > 3  # a layout that tests something: several lesions, false positives
    assert int(expected.fp[0, 0]) > 0
    for name, value in expected.as_dict().items():
        np.testing.assert_array_equal(getattr(stats, name), value, err_msg=name)
    assert by_volume == recall_by_volume(pred, ref, spacing, iou_threshold=iou)
    assert sum(found for _, found in by_volume.values()) == int(stats.tp[0, 0])


def _scipy_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """(tp, fn, fp) at any overlap, components 8-connected by scipy."""
    from scipy import ndimage

    ref_labels, n_ref = ndimage.label(ref, np.ones((3, 3)))
    pred_labels, n_pred = ndimage.label(pred, np.ones((3, 3)))
    hit_ref = {int(i) for i in np.unique(ref_labels[pred & ref]) if i}
    hit_pred = {int(i) for i in np.unique(pred_labels[pred & ref]) if i}
    return len(hit_ref), n_ref - len(hit_ref), n_pred - len(hit_pred)


@pytest.mark.parametrize(
    ("pred", "ref", "expected"),
    [
        # no pixel in common: before, a background pixel of pred got a label and "detected" ref (tp 1, fn 0, fp 1)
        ([[0, 1], [0, 0], [0, 0], [0, 1]], [[0, 0], [0, 1], [0, 0], [0, 0]], (0, 1, 2)),
        # before: IndexError (a component label above the count returned)
        (
            [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 1], [0, 1, 1]],
            [[0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
            (0, 1, 1),
        ),
    ],
)
def test_2d_lesions_are_8_connected_components_as_scipy_labels_them(pred, ref, expected):
    pred, ref = np.array(pred, bool), np.array(ref, bool)
    assert _scipy_counts(pred, ref) == expected
    stats = compute_lesion_detection(pred[None, None], ref[None, None], iou_threshold=None)
    assert (int(stats.tp[0, 0]), int(stats.fn[0, 0]), int(stats.fp[0, 0])) == expected


def test_2d_lesion_counts_match_scipy_on_random_masks():
    rng = np.random.default_rng(5)
    for _ in range(400):
        shape = tuple(int(s) for s in rng.integers(2, 7, 2))
        pred, ref = rng.random(shape) < 0.3, rng.random(shape) < 0.3
        stats = compute_lesion_detection(pred[None, None], ref[None, None], iou_threshold=None)
        got = (int(stats.tp[0, 0]), int(stats.fn[0, 0]), int(stats.fp[0, 0]))
        assert got == _scipy_counts(pred, ref), (pred.astype(int).tolist(), ref.astype(int).tolist())
