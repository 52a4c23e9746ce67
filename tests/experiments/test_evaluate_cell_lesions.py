"""A grid cell's lesion-wise numbers are metrics/' numbers: hand-worked layouts, empty cases, scipy cross-check."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from scipy import ndimage

from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import load_dataset, write_dataset_json
from medtransfer.errors import ConfigError
from medtransfer.experiments.evaluate_cell import evaluate_test_cases, score, summarize_rows
from medtransfer.metrics import compute_lesion_detection

SHAPE = (12, 12, 6)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm³ voxels: volumes are twice the voxel counts
VOXEL_MM3 = 2.0


def _blank() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint8)


def _split():
    """One reference lesion of 16 voxels; the prediction finds its two end slices as two components."""
    ref, pred = _blank(), _blank()
    ref[2:4, 2:4, 1:5] = 1
    pred[2:4, 2:4, 1] = pred[2:4, 2:4, 4] = 1  # 4 + 4 voxels, each IoU 4/16
    return pred, ref


def _merged():
    """Two reference lesions of 8 voxels one voxel apart; one predicted component (20 voxels) bridges them."""
    ref, pred = _blank(), _blank()
    ref[2:4, 2:4, 1:3] = ref[2:4, 5:7, 1:3] = 1
    pred[2:4, 2:7, 1:3] = 1  # IoU 8/20 with each
    return pred, ref


def _far_false_positive():
    ref, pred = _blank(), _blank()
    ref[2:4, 2:4, 1:3] = pred[2:4, 2:4, 1:3] = 1
    pred[10, 10, 5] = 1  # one voxel in the far corner
    return pred, ref


def _empty_reference():
    pred = _blank()
    pred[2:4, 2:4, 1:3] = 1
    return pred, _blank()


def _empty_prediction():
    ref = _blank()
    ref[2:4, 2:4, 1:3] = 1
    return _blank(), ref


def _both_empty():
    return _blank(), _blank()


N = None  # undefined (NaN in metrics/), null in the cell's rows
# tp, fn, fp, n_ref, n_pred | recall, precision, F1, Dice of detected lesions | count error, volume error (mm³)
HAND = {
    "split": (_split, (1, 0, 0, 1, 2), (1.0, 1.0, 1.0, 2 * 8 / (16 + 8)), (1, (8 - 16) * VOXEL_MM3)),
    "merged": (_merged, (2, 0, 0, 2, 1), (1.0, 1.0, 1.0, 2 * 8 / (8 + 20)), (-1, (20 - 16) * VOXEL_MM3)),
    "far_fp": (_far_false_positive, (1, 0, 1, 1, 2), (1.0, 0.5, 2 / 3, 1.0), (1, 1 * VOXEL_MM3)),
    "empty_ref": (_empty_reference, (0, 0, 1, 0, 1), (N, 0.0, 0.0, N), (1, 8 * VOXEL_MM3)),
    "empty_pred": (_empty_prediction, (0, 1, 0, 1, 0), (0.0, N, 0.0, N), (-1, -8 * VOXEL_MM3)),
    "both_empty": (_both_empty, (0, 0, 0, 0, 0), (N, N, N, N), (0, 0.0)),
}
COUNTS = ("lesion_tp", "lesion_fn", "lesion_fp", "lesion_n_ref", "lesion_n_pred")
RATIOS = ("lesion_detection_rate", "lesion_precision", "lesion_f1", "lesion_detected_dice")
ERRORS = ("lesion_count_error", "lesion_volume_error")


class _StubPredictor:
    """Stands in for a trained model: returns the hand-made prediction of each case's image."""

    label_values = (0, 1)

    def __init__(self, predictions: dict[str, np.ndarray]) -> None:
        self.predictions = predictions

    def predict(self, volume, source: str) -> np.ndarray:
        case = source.rsplit("/", 1)[-1].removesuffix("_0000.nii.gz")
        return self.predictions[case]


@pytest.fixture
def hand_cell(tmp_path, monkeypatch):
    """A lesion dataset of the hand-worked cases and a predictor that returns their predictions."""
    import medtransfer.infer as infer

    root = tmp_path / "Dataset009_Lesion"
    predictions, lines = {}, ["case,subject,domain"]
    for case, (make, *_) in HAND.items():
        pred, ref = make()
        predictions[case] = pred
        save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", ref.astype(np.float32), AFFINE)
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", ref, AFFINE)
        lines.append(f"{case},{case},a")
    write_dataset_json(root, {"background": 0, "lesion": 1}, ["T1"], len(HAND))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    loaded = []
    monkeypatch.setattr(
        infer, "load_predictor", lambda model, **kw: loaded.append(model) or _StubPredictor(predictions)
    )
    return load_dataset(root), tmp_path / "cell", loaded


def _evaluate(hand_cell, options=None):
    dataset, run_dir, _ = hand_cell
    rows = evaluate_test_cases(run_dir / "model", dataset, list(HAND), run_dir, {"save_cases": 0, **(options or {})})
    return {row["case"]: row for row in rows}


def test_cell_rows_hold_the_hand_worked_lesion_numbers(hand_cell, caplog):
    caplog.set_level(logging.INFO)  # the log line of a case without any Dice must format too
    rows = _evaluate(hand_cell)
    json.dumps(list(rows.values()), allow_nan=False)  # strict JSON: undefined values are null
    for case, (_, counts, ratios, errors) in HAND.items():
        row = rows[case]
        assert tuple(row[k] for k in COUNTS) == counts, case
        for key, expected in zip(RATIOS + ERRORS, ratios + errors, strict=True):
            assert row[key] == (None if expected is None else pytest.approx(expected)), (case, key)
        assert row["lesion_match"] == "IoU >= 0.1, 26-connected"
    assert rows["both_empty"]["dice"] is None
    assert rows["empty_ref"]["dice"] == 0.0


def test_cell_rows_equal_metrics_lesion_detection(hand_cell):
    """The cell does not count on its own: every lesion number is compute_lesion_detection's."""
    rows = _evaluate(hand_cell)
    for case, (make, *_) in HAND.items():
        pred, ref = make()
        stats = compute_lesion_detection(
            pred[None, None] > 0, ref[None, None] > 0, iou_threshold=0.1, spacing=(1, 1, 2)
        )
        for name, value in stats.as_dict().items():
            expected = float(value[0, 0])
            got = rows[case][f"lesion_{name}"]
            assert (got is None and math.isnan(expected)) or got == pytest.approx(expected), (case, name)


def test_cell_summary_pools_the_lesion_counts(hand_cell):
    metrics = summarize_rows(list(_evaluate(hand_cell).values()))
    # summed over the six cases: tp 4, n_ref 5, n_pred 6, fp 2
    recall, precision = 4 / 5, 4 / 6
    assert metrics["lesion_detection_rate"] == pytest.approx(recall)
    assert metrics["lesion_precision"] == pytest.approx(precision)
    assert metrics["lesion_f1"] == pytest.approx(2 * recall * precision / (recall + precision))
    assert metrics["lesion_detected_dice"] == pytest.approx((2 / 3 + 2 * (16 / 28) + 1.0) / 4)
    assert metrics["lesion_fp_per_case"] == pytest.approx(2 / 6)
    assert metrics["lesion_count_error"] == pytest.approx((1 - 1 + 1 + 1 - 1 + 0) / 6)
    assert metrics["lesion_volume_error"] == pytest.approx((-16 + 8 + 2 + 16 - 16 + 0) / 6)
    json.dumps(metrics, allow_nan=False)


# Reference lesions by volume (2 mm³ voxels): split 16 voxels = 32 mm³ (0.03-0.1 ml, found); merged two of 16 mm³
# (< 0.03 ml, both found); far_fp one of 16 mm³ (found); empty_pred one of 16 mm³ (missed).
HAND_BINS = {
    "split": {"0.03-0.1ml": (1, 1)},
    "merged": {"lt0.03ml": (2, 2)},
    "far_fp": {"lt0.03ml": (1, 1)},
    "empty_ref": {},
    "empty_pred": {"lt0.03ml": (1, 0)},
    "both_empty": {},
}


def test_cell_rows_hold_recall_by_volume(hand_cell):
    from medtransfer.metrics.lesions import volume_bin_columns

    rows = _evaluate(hand_cell)
    for case, expected in HAND_BINS.items():
        for name, n_ref, tp in volume_bin_columns():
            assert (rows[case][n_ref], rows[case][tp]) == expected.get(name, (0, 0)), (case, name)
            assert isinstance(rows[case][n_ref], int)
        assert sum(rows[case][tp] for _, _, tp in volume_bin_columns()) == rows[case]["lesion_tp"]
    metrics = summarize_rows(list(rows.values()))
    assert metrics["lesion_recall_lt0.03ml"] == pytest.approx(3 / 4)
    assert metrics["lesion_recall_0.03-0.1ml"] == 1.0
    pooled = {k for k in metrics if k.startswith("lesion_recall_")}
    assert pooled == {"lesion_recall_lt0.03ml", "lesion_recall_0.03-0.1ml"}  # bins without a lesion: left out


def test_any_overlap_rule_is_an_eval_option(hand_cell):
    """``lesion_iou: null`` is the >= 1 voxel rule; the split then counts both halves as matched, as before."""
    rows = _evaluate(hand_cell, {"lesion_iou": None})
    assert rows["split"]["lesion_match"] == "overlap >= 1 voxel, 26-connected"
    assert rows["split"]["lesion_tp"] == 1
    strict = _evaluate(hand_cell, {"lesion_iou": 0.5})  # each half has IoU 0.25, the bridge 0.4: nothing found
    assert (strict["split"]["lesion_tp"], strict["split"]["lesion_fp"]) == (0, 2)
    assert (strict["merged"]["lesion_tp"], strict["merged"]["lesion_fp"]) == (0, 1)
    assert strict["split"]["lesion_match"] == "IoU >= 0.5, 26-connected"


@pytest.mark.parametrize("bad", [0, 1.5, -0.1, "0.1", True, float("nan"), "anima"])
def test_a_bad_lesion_iou_fails_before_the_model_loads(hand_cell, bad):
    dataset, run_dir, loaded = hand_cell
    with pytest.raises(ConfigError) as err:
        evaluate_test_cases(run_dir / "model", dataset, ["split"], run_dir, {"lesion_iou": bad})
    assert str(err.value) == (
        "eval.lesion_iou must be a number in (0, 1] (the IoU one predicted component needs), null (any overlap of "
        f">= 1 voxel) or 'msseg' (the MSSEG challenges' detection rule), got {bad!r}"
    )
    assert loaded == []


def test_the_msseg_rule_is_an_eval_option_and_is_not_fooled_by_painting():
    """``lesion_iou: msseg``: fragments of one lesion detect it together; one component over everything detects
    nothing (it lies outside the lesions on more than 70 % of its voxels)."""
    ref = np.zeros((12, 12, 12), dtype=np.int64)
    ref[1:11, 1:11, 1:11] = 1
    pred = np.zeros_like(ref)
    for z in (1, 3, 5, 7, 9):
        pred[1:11, 1:10, z] = 1  # five fragments of 90 voxels: IoU 0.09 each
    row = score(pred, ref, (1.0, 1.0, 1.0), 1, {"lesion_iou": "msseg"}, True)
    assert (row["lesion_tp"], row["lesion_fp"], row["lesion_n_pred"], row["lesion_f1"]) == (1, 0, 5, 1.0)
    assert row["lesion_match"].startswith("MSSEG (Commowick et al. 2018): predicted components cover > 0.1 of")
    assert row["lesion_detected_dice"] == pytest.approx(2 * 450 / 1450)
    strict = score(pred, ref, (1.0, 1.0, 1.0), 1, {}, True)
    assert (strict["lesion_tp"], strict["lesion_fp"]) == (0, 5)
    big = np.zeros((30, 30, 30), dtype=np.int64)
    big[:12, :12, :12] = ref  # 1000 lesion voxels in 27000: the painted component is 96 % outside
    painted = score(np.ones_like(big), big, (1.0, 1.0, 1.0), 1, {"lesion_iou": "msseg"}, True)
    assert (painted["lesion_tp"], painted["lesion_fp"], painted["lesion_f1"]) == (0, 1, 0.0)


def test_painting_the_whole_volume_detects_nothing_by_default():
    """The gamed baseline: one component over everything touches every lesion but matches none at IoU >= 0.1."""
    ref = _blank()
    ref[2:4, 2:4, 1:3] = ref[8:10, 8:10, 3:5] = 1
    everything = np.ones_like(ref)
    row = score(everything, ref.astype(np.int64), (1.0, 1.0, 2.0), 1, {}, True)
    assert (row["lesion_tp"], row["lesion_fp"], row["lesion_n_pred"]) == (0, 1, 1)
    assert (row["lesion_detection_rate"], row["lesion_precision"], row["lesion_f1"]) == (0.0, 0.0, 0.0)
    gamed = score(everything, ref.astype(np.int64), (1.0, 1.0, 2.0), 1, {"lesion_iou": None}, True)
    assert (gamed["lesion_detection_rate"], gamed["lesion_precision"], gamed["lesion_f1"]) == (1.0, 1.0, 1.0)


BINS_MM3 = [
    ("lt0.03ml", 0, 30),
    ("0.03-0.1ml", 30, 100),
    ("0.1-1ml", 100, 1000),
    ("1-10ml", 1000, 10000),
    ("ge10ml", 10000, math.inf),
]


def _scipy_lesions(pred: np.ndarray, ref: np.ndarray, iou: float | None) -> dict[str, float]:
    """An independent per-lesion matching with scipy.ndimage.label, one lesion at a time (26-connectivity)."""
    structure = np.ones((3, 3, 3), dtype=bool)
    ref_labels, n_ref = ndimage.label(ref, structure)
    pred_labels, n_pred = ndimage.label(pred, structure)
    tp, dice_sum, hit = 0, 0.0, set()
    for i in range(1, n_ref + 1):
        lesion = ref_labels == i
        matched = []
        for j in set(np.unique(pred_labels[lesion]).tolist()) - {0}:
            component = pred_labels == j
            if iou is None or (lesion & component).sum() / (lesion | component).sum() >= iou:
                matched.append(j)
        if matched:
            union = np.isin(pred_labels, matched)
            tp += 1
            dice_sum += 2 * (lesion & union).sum() / (lesion.sum() + union.sum())
            hit.update(matched)
    bins = {}  # reference lesions and detected ones per volume bin (1 mm³ voxels), counted one lesion at a time
    for i in range(1, n_ref + 1):
        lesion = ref_labels == i
        volume = float(lesion.sum())
        name = next(n for n, lo, hi in BINS_MM3 if lo <= volume < hi)
        found = any(
            iou is None or (lesion & (pred_labels == j)).sum() / (lesion | (pred_labels == j)).sum() >= iou
            for j in set(np.unique(pred_labels[lesion]).tolist()) - {0}
        )
        n, d = bins.get(name, (0, 0))
        bins[name] = (n + 1, d + int(found))
    return {
        **{f"lesion_n_ref_{n}": bins.get(n, (0, 0))[0] for n, _, _ in BINS_MM3},
        **{f"lesion_tp_{n}": bins.get(n, (0, 0))[1] for n, _, _ in BINS_MM3},
        "lesion_tp": tp,
        "lesion_fn": n_ref - tp,
        "lesion_fp": n_pred - len(hit),
        "lesion_n_ref": n_ref,
        "lesion_n_pred": n_pred,
        "lesion_detected_dice": dice_sum / tp if tp else None,
    }


@pytest.mark.parametrize("iou", [None, 0.1, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_lesion_matching_agrees_with_scipy_label(seed, iou):
    rng = np.random.default_rng(seed)
    ref = ndimage.gaussian_filter(rng.normal(size=(24, 24, 16)), 1.5) > 0.12
    pred = ndimage.gaussian_filter(rng.normal(size=ref.shape), 1.5) > 0.15
    pred = (ref & (rng.random(ref.shape) > 0.3)) | (pred & (rng.random(ref.shape) > 0.5))  # split, miss, add
    row = score(pred.astype(np.int64), ref.astype(np.int64), (1.0, 1.0, 1.0), 1, {"lesion_iou": iou}, True)
    expected = _scipy_lesions(pred, ref, iou)
    assert expected["lesion_n_ref"] >= 5  # the layout exercises misses, hits and false positives
    assert expected["lesion_tp"] >= 1
    assert expected["lesion_fp"] >= 1
    assert sum(expected[f"lesion_n_ref_{n}"] > 0 for n, _, _ in BINS_MM3) >= 2  # lesions of several volume bins
    for key, value in expected.items():
        assert row[key] == (None if value is None else pytest.approx(value)), key
