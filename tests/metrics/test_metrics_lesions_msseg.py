"""The MSSEG challenges' lesion-detection rule (Commowick et al. 2018; animaSegPerfAnalyzer's defaults: alpha 0.10,
beta 0.70, gamma 0.65, components of at most 3 mm³ dropped, face connectivity) on hand-worked layouts, and against
a literal transcription of anima's overlap-table algorithm on random masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medtransfer.metrics import compute_lesion_detection
from medtransfer.metrics.lesions import lesion_case, recall_by_volume


def _counts(pred, ref, spacing=None, rule="msseg"):
    s = compute_lesion_detection(pred[None, None], ref[None, None], iou_threshold=rule, spacing=spacing)
    return tuple(int(getattr(s, k)[0, 0]) for k in ("tp", "fn", "fp", "n_ref", "n_pred"))


def test_fragments_of_one_lesion_detect_it_together_where_iou_counts_a_miss_and_false_positives():
    ref = np.zeros((12, 12, 12), bool)
    ref[1:11, 1:11, 1:11] = True  # 1000 voxels
    pred = np.zeros_like(ref)
    for z in (1, 3, 5, 7, 9):
        pred[1:11, 1:10, z] = True  # five slabs of 90 voxels inside it: IoU 0.09 each
    # covered 450 > 10 %; every slab lies inside (0 % outside); the lesion is 55 % uncovered (<= 70 %)
    assert _counts(pred, ref) == (1, 0, 0, 1, 5)
    assert _counts(pred, ref, rule=0.1) == (0, 1, 5, 1, 5)


def test_painting_everything_detects_nothing():
    ref = np.zeros((30, 30, 30), bool)
    ref[10:20, 10:20, 10:20] = True
    pred = np.ones_like(ref)  # one component, 26000 of its 27000 voxels outside the lesion
    assert _counts(pred, ref) == (0, 1, 1, 1, 1)
    assert _counts(pred, ref, rule=None) == (1, 0, 0, 1, 1)  # the any-overlap rule is fooled


@pytest.mark.parametrize(("outside", "detected"), [(230, True), (240, False)])
def test_beta_bounds_the_share_of_a_component_outside_the_lesions(outside, detected):
    ref = np.zeros((40, 10, 10), bool)
    ref[0:10, 0:10, 0] = True  # 100 voxels
    pred = ref.copy()
    flat = np.zeros(ref.size, bool)
    flat[:outside] = True
    extra = np.zeros_like(ref)
    extra[10:40, :, 0] = flat[:300].reshape(30, 10)  # rows of 10 grown from the lesion's edge: one component
    pred |= extra
    # 230 / 330 = 0.697 <= 0.7: detected;  240 / 340 = 0.706 > 0.7: not
    tp, fn, fp, n_ref, n_pred = _counts(pred, ref)
    assert (n_ref, n_pred) == (1, 1)
    assert (tp, fn) == ((1, 0) if detected else (0, 1))
    assert fp == 0  # the component is covered on 100 / 330 or 100 / 340 > 10 %, and the lesion is fully covered


def test_gamma_lets_the_largest_overlaps_decide_and_a_bad_fragment_counts_only_when_needed():
    ref = np.zeros((30, 30, 40), bool)
    ref[10:20, 10:20, 10:20] = True  # 1000 voxels
    good = np.zeros_like(ref)
    bad = np.zeros_like(ref)
    good[10:20, 10:20, 10:16] = True  # 600 inside
    bad[10:20, 10:20, 17:30] = True  # 300 inside, 1000 outside (0.77 > 0.7)
    # covered 900: the good component alone holds 600 / 900 = 0.667 >= 0.65, the bad one is never examined
    assert _counts(good | bad, ref) == (1, 0, 0, 1, 2)  # bad: covered 300 / 1300 = 0.23 > 0.1, lesion 10 % uncovered
    good[:] = False
    bad[:] = False
    good[10:20, 10:20, 10:15] = True  # 500 inside
    bad[10:20, 10:20, 16:30] = True  # 400 inside, 1000 outside (0.714 > 0.7)
    # covered 900: 500 / 900 = 0.556 < 0.65, so the bad one is needed, and it is too much outside: not detected;
    # both components are true positives the other way (each covered > 10 %, the lesion 10 % uncovered)
    assert _counts(good | bad, ref) == (0, 1, 0, 1, 2)


def test_at_most_n_ref_plus_one_components_are_examined_as_in_anima():
    """One lesion, four fragments: the two largest hold 600 / 1052 < 0.65 of the overlap, and the third largest lies
    90 % outside; anima examines only n_ref + 1 = 2 components, so the lesion counts as detected."""
    ref = np.zeros((20, 20, 60), bool)
    ref[0:16, 0:20, 0:12] = True  # 3840 voxels
    pred = np.zeros_like(ref)
    pred[0:15, 0:10, 0:2] = True  # 300 inside
    pred[0:15, 0:10, 3:5] = True  # 300 inside
    pred[2:16, 11:20, 9:11] = True  # 252 inside ...
    pred[16:20, 11:20, :] = True  # ... joined to 2160 outside
    pred[0:10, 0:10, 6:8] = True  # 200 inside
    assert _counts(pred, ref) == (1, 0, 4, 1, 4)  # the other way, the lesion is 73 % uncovered (> 70 %): no TP
    second = ref.copy()
    second[:, :, 40:50] = False
    second[0:4, 0:4, 40:44] = True  # a second lesion far away: now 3 components are examined, the third fails
    assert _counts(pred, second)[:2] == (0, 2)


def test_alpha_needs_more_than_a_tenth_of_the_lesion_covered():
    ref = np.zeros((10, 10, 10), bool)
    ref[0:10, 0:10, 0:10] = True  # 1000 voxels
    pred = np.zeros_like(ref)
    pred[0:10, 0:10, 0] = True  # 100 = exactly 10 %: not more than alpha
    assert _counts(pred, ref)[:2] == (0, 1)
    pred[0, 0, 1] = True  # 101
    assert _counts(pred, ref)[:2] == (1, 0)


def test_two_lesions_merged_by_one_component_are_both_detected():
    ref = np.zeros((5, 5, 11), bool)
    ref[:, :, 0:5] = ref[:, :, 6:11] = True  # 125 + 125
    pred = np.ones_like(ref)  # 275: 25 outside (0.09)
    assert _counts(pred, ref) == (2, 0, 0, 2, 1)


def test_components_of_at_most_3_mm3_leave_both_masks_and_face_connectivity_splits_corner_contacts():
    ref = np.zeros((10, 10, 10), bool)
    ref[0, 0, 0:3] = True  # 3 voxels
    ref[5, 5, 0:4] = True  # 4 voxels
    pred = ref.copy()
    assert _counts(pred, ref, spacing=(1.0, 1.0, 1.0)) == (1, 0, 0, 1, 1)  # 3 mm³ is "at most 3": dropped
    assert _counts(pred, ref, spacing=(2.0, 2.0, 2.0)) == (2, 0, 0, 2, 2)  # 24 mm³ each: kept
    corner = np.zeros((6, 6, 6), bool)
    corner[0:2, 0:2, 0:2] = corner[2:4, 2:4, 2:4] = True  # touching at a corner only
    assert _counts(corner, corner)[3:] == (2, 2)  # 26-connected it is one lesion; MSSEG counts faces only
    assert _counts(corner, corner, rule=0.1)[3:] == (1, 1)


def test_empty_masks():
    ref = np.zeros((8, 8, 8), bool)
    ref[1:4, 1:4, 1:4] = True
    assert _counts(np.zeros_like(ref), ref) == (0, 1, 0, 1, 0)
    assert _counts(ref, np.zeros_like(ref)) == (0, 0, 1, 0, 1)
    assert _counts(np.zeros_like(ref), np.zeros_like(ref)) == (0, 0, 0, 0, 0)


def test_2d_uses_4_connectivity():
    ref = np.zeros((8, 8), bool)
    ref[0:2, 0:2] = ref[2:4, 2:4] = True  # diagonal contact: two lesions of 4 pixels
    assert _counts(ref, ref, spacing=(1.0, 1.0)) == (2, 0, 0, 2, 2)


def test_per_case_helpers_agree_with_the_batch_function():
    ref = np.zeros((12, 12, 12), bool)
    ref[1:11, 1:11, 1:11] = True
    ref[0, 0, 0:5] = True  # a second lesion of 5 voxels (diagonal to the first), not predicted
    pred = np.zeros_like(ref)
    for z in (1, 3, 5, 7, 9):
        pred[1:11, 1:10, z] = True
    stats, by_volume = lesion_case(pred, ref, (1.0, 1.0, 1.0), iou_threshold="msseg")
    batch = compute_lesion_detection(pred[None, None], ref[None, None], iou_threshold="msseg", spacing=(1, 1, 1))
    for name in ("tp", "fn", "fp", "n_ref", "n_pred", "detected_dice_sum"):
        assert getattr(stats, name)[0, 0] == pytest.approx(getattr(batch, name)[0, 0])
    assert by_volume == recall_by_volume(pred, ref, (1.0, 1.0, 1.0), iou_threshold="msseg")
    assert sum(found for _, found in by_volume.values()) == int(stats.tp[0, 0]) == 1
    assert sum(total for total, _ in by_volume.values()) == int(stats.n_ref[0, 0]) == 2
    # the detected lesion's Dice is with all five fragments: 2 * 450 / (1000 + 450)
    assert float(batch.detected_dice_sum[0, 0]) == pytest.approx(2 * 450 / 1450)


# ------------------------------------------------------------------ anima's algorithm, transcribed literally
def _anima_detected(table: np.ndarray, alpha=0.10, beta=0.70, gamma=0.65) -> int:
    """animaSegPerfCAnalyzer::getTruePositiveLesions on an overlap table (rows: reference labels, columns: test
    labels, label 0 the background of each).  Its loop stops at the number of rows (``k < pi_iNbLabelsRef``); the
    ``k < len(order)`` guard only keeps Python from indexing past the list, where C++ would read past the vector
    (the weights of the overlapping components add up to 1 >= gamma before that)."""
    n_ref, n_test = table.shape
    row_tp = table[:, 1:].sum(axis=1)
    col_sum = table.sum(axis=0)
    detected = 0
    for i in range(1, n_ref):
        tp, fn = row_tp[i], table[i, 0]
        if tp / (tp + fn) <= alpha:
            continue
        order = sorted(range(1, n_test), key=lambda j: (-table[i, j], j))
        weight, k, failed = 0.0, 0, False
        while weight < gamma and k < n_ref and k < len(order) and not failed:
            j = order[k]
            failed = table[0, j] / col_sum[j] > beta
            if not failed:
                weight += table[i, j] / tp
            k += 1
        detected += not failed
    return detected


def _anima_counts(pred: np.ndarray, ref: np.ndarray, voxel_volume: float = 1.0) -> tuple[int, int, int, int]:
    """(TP reference lesions, TP test components, n_ref, n_test) as anima computes them (scipy labels faces)."""
    most = int(np.floor(3.0 / voxel_volume))

    def labelled(mask):
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = np.flatnonzero(sizes > most)
        keep = keep[keep > 0]
        remap = np.zeros(n + 1, int)
        remap[keep] = np.arange(1, keep.size + 1)
        return remap[labels], keep.size

    ref_labels, n_ref = labelled(ref)
    test_labels, n_test = labelled(pred)
    table = np.zeros((n_ref + 1, n_test + 1), int)
    np.add.at(table, (ref_labels.ravel(), test_labels.ravel()), 1)
    if n_ref == 0 or n_test == 0:
        return 0, 0, n_ref, n_test
    return _anima_detected(table), _anima_detected(table.T), n_ref, n_test


@pytest.mark.parametrize("seed", range(12))
def test_matches_anima_on_random_lesion_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (24, 24, 24)
    ref = ndimage.binary_dilation(rng.random(shape) < 0.004, iterations=int(rng.integers(1, 3)))
    noise = ndimage.binary_dilation(rng.random(shape) < 0.003, iterations=1)
    drawn = ndimage.binary_erosion(ref) if seed % 3 == 0 else ndimage.binary_dilation(ref) if seed % 3 == 1 else ref
    pred = (drawn & (rng.random(shape) < 0.85)) | noise  # holes fragment some lesions
    spacing = (1.0, 1.0, 1.0) if seed % 2 else (0.8, 0.8, 1.2)
    tp_ref, tp_test, n_ref, n_test = _anima_counts(pred, ref, float(np.prod(spacing)))
    assert n_ref > 0
    assert n_test > 0
    assert _counts(pred, ref, spacing=spacing) == (tp_ref, n_ref - tp_ref, n_test - tp_test, n_ref, n_test)
