"""Predict a cell's test cases with its model and score them (Dice, IoU, surface Dice, lesion-wise metrics).

The scores come from :mod:`medtransfer.metrics` (:func:`~medtransfer.metrics.evaluation.evaluate_case`, the
function ``medtransfer evaluate`` uses), so a cell's numbers and ``medtransfer evaluate``'s agree.  Lesion
targets get every ``lesion_*`` column of that function (counts, volumes, detection rate = lesion recall,
precision, F1, Dice of detected lesions, count and volume error, and per reference-volume bin the reference and
detected lesion counts ``lesion_n_ref_<bin>`` / ``lesion_tp_<bin>``) and ``lesion_match``, the overlap rule in words.
Values that are undefined (NaN: e.g. F1 of a case without reference and predicted lesions) are ``None``, so
the rows are strict JSON.  Predictions are the run's as ``medtransfer predict`` makes them: 2.5D stacking,
test-time mirroring and the small-component removal tuned on validation, when the checkpoint records them
(:class:`~medtransfer.infer.predictor.Predictor`, :mod:`medtransfer.infer.postprocess`).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REFERENCE_1MM = "labelsTr_1mm"
# A cell's `eval:` keys (grid files are checked against them): the options below, and max_test_cases (the cell caps
# its test cases with it before calling evaluate_test_cases).
OPTION_KEYS = ("max_test_cases", "tolerance_mm", "surface_1mm", "lesions", "lesion_iou", "save_cases", "checkpoint")


def evaluate_test_cases(
    model: Path, dataset, case_ids: list[str], run_dir: Path, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per test case (and foreground label when there are several).

    Options: ``tolerance_mm`` (1.0), ``surface_1mm`` (True: surface Dice on the dataset's ``labelsTr_1mm``
    reference when present), ``lesions`` (``auto``: when a label name contains "lesion"), ``lesion_iou`` (0.1:
    the IoU a single predicted component needs to detect a reference lesion; ``null``: any overlap of >= 1
    voxel; see ``docs/metrics.md``), ``save_cases`` (2:
    write ``predictions/``, ``reference/`` and ``images/`` of that many cases for the report's overlays),
    ``checkpoint`` (``last``: the final weights of a run folder, as nnU-Net evaluates; ``best`` selects by
    validation Dice, which on the one or two validation cases of a CPU-sized grid is mostly noise: a small lesion
    missed at every epoch leaves the untrained first epoch as "best").
    """
    from ..data.io import load_nifti, save_nifti
    from ..infer import load_predictor

    lesion_iou(options)  # a bad option fails before the model is loaded
    predictor = load_predictor(model, checkpoint=str(options.get("checkpoint", "last")))
    if getattr(predictor, "postprocess", None):  # applied by predictor.predict, as `medtransfer predict` does
        log.info("post-processing from the checkpoint: %s", predictor.postprocess)
    labels = [v for v in predictor.label_values if v != 0]
    lesions = options.get("lesions", "auto")
    if lesions == "auto":
        lesions = any("lesion" in str(n).lower() for n in (dataset.label_names or {}).values())
    rows = []
    for index, case_id in enumerate(case_ids):
        case = dataset.get(case_id)
        volumes = [load_nifti(p, dtype="float32") for p in case.images]
        pred = predictor.predict(volumes[0] if len(volumes) == 1 else volumes, source=str(case.images[0]))
        ref = load_nifti(case.label)
        ref_labels = np.rint(ref.array).astype(np.int64)
        ref_1mm = _reference_1mm(dataset.root, case_id) if options.get("surface_1mm", True) else None
        for label in labels:
            row = score(pred, ref_labels, ref.spacing[:3], label, options, bool(lesions))
            if ref_1mm is not None:
                row["surface_dice"] = _surface_dice_1mm(pred, ref.affine, ref_1mm, label, options)
            rows.append({"case": case_id, **({"label": label} if len(labels) > 1 else {}), **row})
        if index < int(options.get("save_cases", 2)):
            save_nifti(run_dir / "predictions" / f"{case_id}.nii.gz", pred, ref.affine, dtype=np.uint8)
            save_nifti(run_dir / "reference" / f"{case_id}.nii.gz", ref_labels, ref.affine, dtype=np.uint8)
            (run_dir / "images").mkdir(exist_ok=True)
            shutil.copyfile(case.images[0], run_dir / "images" / f"{case_id}_0000.nii.gz")
        log.info("test case %s: dice %s", case_id, _fmt(rows[-1]["dice"]))
    return rows


def lesion_iou(options: dict[str, Any]) -> float | str | None:
    """The ``lesion_iou`` eval option (default :data:`~medtransfer.metrics.lesions.DEFAULT_LESION_IOU`): the IoU
    one predicted component needs, null (any overlap) or ``msseg`` (the MSSEG challenges' rule).

    Raises:
        ConfigError: anything else.
    """
    from ..metrics.lesions import DEFAULT_LESION_IOU, check_iou_threshold

    return check_iou_threshold(options.get("lesion_iou", DEFAULT_LESION_IOU), "eval.lesion_iou")


def lesion_match_rule(iou: float | str | None, connectivity: int = 26) -> str:
    """The overlap rule in words, e.g. ``IoU >= 0.1, 26-connected``, ``overlap >= 1 voxel, 26-connected`` or the
    MSSEG rule with its parameters."""
    from ..metrics import lesions as m

    if iou == m.MSSEG:
        return (
            f"MSSEG (Commowick et al. 2018): predicted components cover > {m.MSSEG_ALPHA:g} of the lesion, and "
            f"those holding {m.MSSEG_GAMMA:g} of the covered voxels, largest first, each lie <= {m.MSSEG_BETA:g} "
            f"outside every lesion; the same test the other way for precision; components <= "
            f"{m.MSSEG_MIN_VOLUME_MM3:g} mm3 dropped, face-connected"
        )
    return f"{'overlap >= 1 voxel' if iou is None else f'IoU >= {iou:g}'}, {connectivity}-connected"


def score(
    pred: np.ndarray, ref: np.ndarray, spacing, label: int, options: dict[str, Any], lesions: bool
) -> dict[str, Any]:
    """Dice, IoU, surface Dice at ``tolerance_mm`` and (lesion targets) the lesion-wise metrics of one label."""
    from ..metrics.evaluation import EvaluationConfig, evaluate_case
    from ..metrics.lesions import is_lesion_count

    iou = lesion_iou(options)
    config = EvaluationConfig(tolerance_mm=float(options.get("tolerance_mm", 1.0)), lesions=lesions, lesion_iou=iou)
    full = evaluate_case(np.asarray(pred, dtype=np.int64), ref, tuple(float(s) for s in spacing), label, config)
    row: dict[str, Any] = {k: _finite(full[k]) for k in ("dice", "iou", "surface_dice")}
    if lesions:
        lesion = {k: v for k, v in full.items() if k.startswith("lesion_")}
        row.update({k: int(v) if is_lesion_count(k) else _finite(v) for k, v in lesion.items()})
        row["lesion_match"] = lesion_match_rule(iou, config.connectivity)
    return row


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, float]:
    """A cell's aggregate metrics: means of the finite per-case values; lesion metrics micro-averaged.

    Lesion ratios are pooled over the cases (counts summed first, as ``medtransfer evaluate``'s summary does):
    ``lesion_detection_rate``, ``lesion_precision``, ``lesion_f1``, ``lesion_detected_dice``; plus the per-case
    means ``lesion_fp_per_case``, ``lesion_count_error`` and ``lesion_volume_error``, and ``lesion_recall_<bin>``
    per reference-volume bin that holds a lesion.  Undefined values are left out (strict JSON).
    """
    from ..metrics.lesions import LesionStats, pooled_recall_by_volume, reduce_lesion_stats

    out = {}
    for key in ("dice", "iou", "surface_dice"):
        values = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
        if values:
            out[key] = sum(values) / len(values)
    lesion_rows = [r for r in rows if "lesion_tp" in r]
    if lesion_rows:
        reduced = reduce_lesion_stats(LesionStats.from_records(lesion_rows), "micro")
        for key in ("detection_rate", "precision", "f1", "detected_dice", "fp_per_case", "count_error", "volume_error"):
            value = _finite(reduced[key][0])
            if value is not None:
                out[f"lesion_{key}"] = value
        out.update(pooled_recall_by_volume(lesion_rows))
    return out


def _reference_1mm(root: Path, case_id: str):
    from ..data.io import load_nifti

    path = Path(root) / REFERENCE_1MM / f"{case_id}.nii.gz"
    return load_nifti(path) if path.is_file() else None


def _surface_dice_1mm(pred: np.ndarray, affine: np.ndarray, ref_1mm, label: int, options: dict[str, Any]) -> float:
    """Surface Dice of the prediction resampled (nearest neighbour) onto the 1 mm reference grid."""
    from ..data.resample import resample_to_grid
    from ..metrics.surface_distance import surface_dice_from_overlap, surface_overlap

    mask = resample_to_grid(
        (pred == label).astype(np.float32), affine, ref_1mm.array.shape[:3], ref_1mm.affine, order=0
    )
    ref = np.rint(ref_1mm.array[..., 0] if ref_1mm.array.ndim > 3 else ref_1mm.array) == label
    tolerance = float(options.get("tolerance_mm", 1.0))
    return _finite(surface_dice_from_overlap(*surface_overlap(mask > 0.5, ref, ref_1mm.spacing[:3], tolerance)))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
