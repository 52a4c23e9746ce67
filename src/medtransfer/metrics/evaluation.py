"""Evaluate a folder of predicted label maps against a folder of references (NIfTI), case by case.

Cases are matched by file name (``case.nii.gz`` in both folders; ``.nii`` and ``.nii.gz`` are equivalent),
spacing comes from the reference header, and prediction and reference must share shape and affine.  Outputs:
``metrics_per_case.csv`` (one row per case and label) and ``summary.json`` (written last), both atomically.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, OutputError
from ..utils import atomic_path, write_json_atomic
from .lesions import (
    DEFAULT_LESION_IOU,
    MSSEG,
    LesionStats,
    check_iou_threshold,
    lesion_case,
    pooled_recall_by_volume,
    reduce_lesion_stats,
    volume_bin_columns,
)
from .reduction import nanmean
from .surface_distance import (
    average_symmetric_surface_distance,
    compute_surface_distances,
    robust_hausdorff,
    surface_dice_from_overlap,
    surface_overlap,
)

logger = logging.getLogger(__name__)

PER_CASE_FILE = "metrics_per_case.csv"
SUMMARY_FILE = "summary.json"
AFFINE_ATOL_MM = 1e-3
OVERLAP_KEYS = ("dice", "iou", "surface_dice", "hd95", "assd")


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compute.

    Attributes:
        labels: label values to evaluate; ``None`` for every non-zero label found in any case.
        tolerance_mm: surface Dice tolerance.
        connectivity: lesion connectivity (6, 18 or 26); 6 under the MSSEG rule, which is defined with it.
        lesions: also compute lesion-wise detection per label.
        lesion_iou: the lesion-matching rule: the IoU a single predicted component needs to detect a reference
            lesion, ``None`` for any overlap, or ``"msseg"`` for the MSSEG challenges' rule
            (:mod:`medtransfer.metrics.lesions`).
    """

    labels: tuple[int, ...] | None = None
    tolerance_mm: float = 1.0
    connectivity: int = 26
    lesions: bool = True
    lesion_iou: float | str | None = DEFAULT_LESION_IOU

    def __post_init__(self) -> None:
        object.__setattr__(self, "lesion_iou", check_iou_threshold(self.lesion_iou, "lesion matching rule"))
        if self.lesion_iou == MSSEG:  # the rule is defined with face connectivity; the summary records what ran
            object.__setattr__(self, "connectivity", 6)
        if not math.isfinite(self.tolerance_mm) or self.tolerance_mm < 0:
            raise ConfigError(f"tolerance must be a finite number >= 0 mm, got {self.tolerance_mm}")
        if self.labels is not None:
            labels = list(self.labels)
            if not labels or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v <= 0 for v in labels):
                raise ConfigError(f"labels must be foreground label values (whole numbers > 0), got {labels}")
            # a label given twice would be scored twice: twice the rows and lesion totals
            object.__setattr__(self, "labels", tuple(dict.fromkeys(int(v) for v in labels)))


def match_cases(pred_dir: str | Path, ref_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """``(case, prediction, reference)`` for every case, sorted by name.

    Raises:
        DataError: a folder is missing or empty, or a case lacks its prediction or its reference.
    """
    preds, refs = _nifti_files(pred_dir, "prediction"), _nifti_files(ref_dir, "reference")
    missing_pred = sorted(set(refs) - set(preds))
    missing_ref = sorted(set(preds) - set(refs))
    problems = []
    if missing_pred:
        problems.append(f"no prediction in {pred_dir} for {len(missing_pred)} case(s): {_names(missing_pred)}")
    if missing_ref:
        problems.append(f"no reference in {ref_dir} for {len(missing_ref)} prediction(s): {_names(missing_ref)}")
    if problems:
        raise DataError("; ".join(problems))
    return [(case, preds[case], refs[case]) for case in sorted(refs)]


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _nifti_files(folder: str | Path, what: str) -> dict[str, Path]:
    from ..data.io import is_nifti, strip_nifti_suffix

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file; the {what} must be a folder of .nii/.nii.gz files")
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and is_nifti(path.name)) or path.name.startswith("."):
            continue  # hidden files (macOS ._name.nii.gz) are not scans
        case = strip_nifti_suffix(path.name)
        if case in files:
            raise DataError(f"{what} folder {folder} has two files for case {case!r}: {files[case].name}, {path.name}")
        files[case] = path
    if not files:
        raise DataError(f"{what} folder {folder} contains no .nii/.nii.gz files")
    return files


def load_pair(pred_path: Path, ref_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Integer label arrays of a prediction and its reference, and the voxel spacing (mm).

    Raises:
        DataError: unreadable files, non-integer labels, or different shapes or affines (both named).
    """
    from ..data.io import load_nifti

    pred, ref = load_nifti(pred_path), load_nifti(ref_path)
    pred_shape, ref_shape = _spatial_shape(pred.array.shape), _spatial_shape(ref.array.shape)
    if pred_shape != ref_shape:
        raise DataError(
            f"grid mismatch: prediction {pred_path} has shape {pred.array.shape} but reference {ref_path} "
            f"has {ref.array.shape}; predictions must be on the reference grid"
        )
    if not np.allclose(pred.affine, ref.affine, rtol=0, atol=AFFINE_ATOL_MM):
        raise DataError(
            f"grid mismatch: prediction {pred_path} and reference {ref_path} have different affines "
            f"(max difference {np.abs(pred.affine - ref.affine).max():.4g} mm, allowed {AFFINE_ATOL_MM} mm)"
        )
    return _labels(pred.array, pred_path), _labels(ref.array, ref_path), ref.spacing[:3]


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without trailing singleton axes past the third (``(X, Y, Z, 1)`` is ``(X, Y, Z)``)."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3 and (array.ndim < 3 or any(s != 1 for s in array.shape[3:])):
        raise DataError(f"{path}: a label map must be 3D (one volume of label values), got shape {array.shape}")
    array = np.squeeze(array, axis=tuple(range(3, array.ndim))) if array.ndim > 3 else array
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise DataError(f"{path}: label map has non-integer values; expected integer labels")
        if rounded.size and np.abs(rounded).max() > np.iinfo(np.int32).max:
            raise DataError(
                f"{path}: label map has values up to {np.abs(rounded).max():.4g}, out of range for labels "
                f"(whole numbers 0..{np.iinfo(np.int32).max})"
            )
        array = rounded
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: label map has data type {array.dtype}; expected integer labels")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise DataError(f"{path}: label map has negative values (min {array.min()}); labels must be >= 0")
    return array


def _label_boxes(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> dict[int, tuple[slice, ...]]:
    """Joint bounding box of each label in prediction and reference (an empty box when absent from both).

    Every metric is unchanged by cropping to this box, and per-label work shrinks to the label's extent.
    """
    from scipy import ndimage

    boxes = {}
    found = [ndimage.find_objects(np.where(np.isin(a, labels), a, 0)) for a in (pred, ref)]
    for label in labels:
        parts = [objects[label - 1] for objects in found if label <= len(objects) and objects[label - 1]]
        if not parts:
            boxes[label] = tuple(slice(0, 0) for _ in pred.shape)
            continue
        boxes[label] = tuple(
            slice(min(p[axis].start for p in parts), max(p[axis].stop for p in parts)) for axis in range(pred.ndim)
        )
    return boxes


def evaluate_case(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], label: int, config: EvaluationConfig
) -> dict[str, Any]:
    """Every metric for one label of one case, as a flat dict (lesion counts prefixed ``lesion_``)."""
    p, r = pred == label, ref == label
    tp, n_pred, n_ref = np.count_nonzero(p & r), np.count_nonzero(p), np.count_nonzero(r)
    distances = compute_surface_distances(p, r, spacing)
    row: dict[str, Any] = {
        "dice": 2 * tp / (n_pred + n_ref) if n_pred + n_ref else math.nan,
        "iou": tp / (n_pred + n_ref - tp) if n_pred + n_ref else math.nan,
        "surface_dice": surface_dice_from_overlap(*surface_overlap(p, r, spacing, config.tolerance_mm)),
        "hd95": robust_hausdorff(distances),
        "assd": average_symmetric_surface_distance(distances),
    }
    if config.lesions:
        stats, by_volume = lesion_case(p, r, spacing, config.connectivity, config.lesion_iou)
        row.update({f"lesion_{k}": float(v[0, 0]) for k, v in stats.as_dict().items()})
        for name, n_ref_key, tp_key in volume_bin_columns():
            row[n_ref_key], row[tp_key] = by_volume[name]
    return row


def evaluate_folders(
    pred_dir: str | Path, ref_dir: str | Path, out_dir: str | Path, config: EvaluationConfig | None = None
) -> dict[str, Any]:
    """Evaluate every case, write ``metrics_per_case.csv`` and ``summary.json`` into ``out_dir``.

    Returns:
        The summary (also written to ``summary.json``).
    """
    config = config or EvaluationConfig()
    cases = match_cases(pred_dir, ref_dir)
    refuse_foreign_summary(Path(out_dir))
    results: dict[str, dict[int, dict[str, Any]]] = {}
    seen: tuple[set[int], set[int]] = (set(), set())
    for index, (case, pred_path, ref_path) in enumerate(cases, start=1):
        pred, ref, spacing = load_pair(pred_path, ref_path)
        pred_labels, ref_labels = np.unique(pred), np.unique(ref)
        seen[0].update(int(v) for v in pred_labels if v)
        seen[1].update(int(v) for v in ref_labels if v)
        labels = config.labels or tuple(int(v) for v in np.union1d(pred_labels, ref_labels) if v != 0)
        boxes = _label_boxes(pred, ref, labels)
        results[case] = {
            label: evaluate_case(pred[box], ref[box], spacing, label, config) for label, box in boxes.items()
        }
        logger.info("evaluated %s (%d/%d)", case, index, len(cases))
    if seen[0] and seen[1] and not seen[0] & seen[1]:
        logger.warning(
            "the predictions' labels (%s) and the references' (%s) share no value, so every overlap is 0: check "
            "the label values (0/255 masks against 0/1, say) or give --labels",
            _names([str(v) for v in sorted(seen[0])]),
            _names([str(v) for v in sorted(seen[1])]),
        )
    labels = config.labels or _found_labels(results)
    rows = _table(results, labels, config)
    summary = _summary(rows, labels, config, pred_dir, ref_dir)
    _publish(Path(out_dir), rows, summary, config)
    return summary


def refuse_foreign_summary(out_dir: Path) -> None:
    """Refuse an output folder whose ``summary.json`` evaluate did not write (a training run's, say): evaluate
    replaces its own summary and table, never another tool's file.

    Raises:
        DataError: naming the file.
    """
    import json

    path = out_dir / SUMMARY_FILE
    if not path.is_file():
        table = out_dir / PER_CASE_FILE
        if table.exists():  # a table without evaluate's summary beside it is someone else's file
            raise DataError(
                f"{table}: exists without the evaluation summary.json that evaluate writes beside it; evaluate "
                "does not replace it: give another --out folder"
            )
        return
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        summary = None
    if not (isinstance(summary, dict) and {"n_cases", "mean", "config"} <= summary.keys()):
        raise DataError(
            f"{path}: exists and is not an evaluation summary (a run's own summary?); evaluate does not replace "
            "it: give another --out folder"
        )


def _found_labels(results: dict[str, dict[int, dict[str, Any]]]) -> tuple[int, ...]:
    """Every label found in any case; label 1 (NaN everywhere: absent from both) when every mask is empty."""
    found = tuple(sorted({label for rows in results.values() for label in rows}))
    if not found:
        logger.warning(
            "no foreground label in any prediction or reference; evaluating label 1, which scores NaN "
            "(absent from both masks); give --labels to choose the labels"
        )
    return found or (1,)


def _publish(out_dir: Path, rows: list[dict[str, Any]], summary: dict[str, Any], config: EvaluationConfig) -> None:
    """Write the CSV, then the summary; on any error nothing is published and a folder made here is removed.

    Raises:
        OutputError: a file cannot be written (disk full, read-only folder, ...).
    """
    created = next((p for p in (out_dir, *out_dir.parents) if p.parent.exists()), out_dir)
    created = None if created.exists() else created
    try:
        with atomic_path(out_dir / SUMMARY_FILE) as summary_tmp:
            write_json_atomic(summary_tmp, summary)
            _write_csv(out_dir / PER_CASE_FILE, rows, _columns(config))
    except BaseException as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(err, OSError):
            raise OutputError.from_os_error(out_dir, err, f"{PER_CASE_FILE} and {SUMMARY_FILE}") from err
        raise


def _table(
    results: dict[str, dict[int, dict[str, Any]]], labels: Sequence[int], config: EvaluationConfig
) -> list[dict[str, Any]]:
    """One row per case and label; a label absent from a case gets the absent-class values (NaN, zero counts)."""
    rows = []
    for case, per_label in results.items():
        for label in labels:
            metrics = per_label.get(label) or _absent(label, config)
            rows.append({"case": case, "label": label, **metrics})
    return rows


def _absent(label: int, config: EvaluationConfig) -> dict[str, Any]:
    """The metrics of a label absent from both masks (NaN, zero counts)."""
    empty = np.zeros((1, 1, 1), dtype=np.int64)
    return evaluate_case(empty, empty, (1.0, 1.0, 1.0), label, config)


def _columns(config: EvaluationConfig) -> list[str]:
    return ["case", "label", *_absent(1, config)]


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _summary(
    rows: list[dict[str, Any]], labels: Sequence[int], config: EvaluationConfig, pred_dir: Any, ref_dir: Any
) -> dict[str, Any]:
    per_label: dict[str, dict[str, float]] = {}
    for label in labels:
        selected = [row for row in rows if row["label"] == label]
        means = {key: float(nanmean(np.array([row[key] for row in selected], dtype=float))) for key in OVERLAP_KEYS}
        if config.lesions:
            means.update(_lesion_summary(selected))
        per_label[str(label)] = means
    foreground = {
        key: float(nanmean(np.array([per_label[str(label)][key] for label in labels], dtype=float)))
        for key in OVERLAP_KEYS
    }
    for means in [*per_label.values(), foreground]:
        _add_null_reasons(means)
    return {
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "n_cases": len({row["case"] for row in rows}),
        "config": {**asdict(config), "labels": list(labels)},
        "conventions": "means ignore NaN (label absent from prediction and reference); inf (one mask empty) is kept; "
        "a mean that is not finite is written as null with the reason in <metric>_null_reason; "
        "lesion ratios are micro-averaged (counts summed over cases first); lesion_<ratio>_scan_mean: the ratio "
        "of each case averaged over the cases where it is defined (the MSSEG challenges' convention)",
        "mean": per_label,
        "foreground_mean": foreground,
    }


def _add_null_reasons(means: dict[str, Any]) -> None:
    """Say why a mean is not a number: JSON writes it as ``null`` (strict JSON has no NaN or infinity)."""
    for key in OVERLAP_KEYS:  # lesion ratios have their own convention (``lesion_*``)
        value = means.get(key)
        if isinstance(value, float) and math.isinf(value):
            means[f"{key}_null_reason"] = "infinite: a case has an empty prediction or an empty reference"
        elif isinstance(value, float) and math.isnan(value):
            means[f"{key}_null_reason"] = "undefined: the label is absent from every prediction and reference"


def _lesion_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Pooled (micro) lesion counts and ratios, plus recall, precision and F1 averaged per scan (the MSSEG
    challenges' convention, over the scans where each is defined) under ``lesion_<ratio>_scan_mean``."""
    stats = LesionStats.from_records(rows)
    reduced = reduce_lesion_stats(stats, "micro")
    per_scan = reduce_lesion_stats(stats, "macro")
    means = {f"lesion_{key}_scan_mean": float(per_scan[key][0]) for key in ("detection_rate", "precision", "f1")}
    return {f"lesion_{key}": float(value[0]) for key, value in reduced.items()} | means | pooled_recall_by_volume(rows)


def resolve_run_folder(run_dir: str | Path) -> tuple[Path, Path]:
    """``(predictions, references)`` of a run folder.

    The run folder holds ``predictions/`` and either ``reference/`` or a ``config.yaml`` with ``data.labels_dir``
    (a relative path is taken relative to the run folder).

    Raises:
        DataError: the folder, ``predictions/`` or the reference cannot be found.
    """
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    predictions = run_dir / "predictions"
    if not predictions.is_dir():
        raise DataError(f"run folder {run_dir} has no predictions/ folder")
    if (run_dir / "reference").is_dir():
        return predictions, run_dir / "reference"
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise DataError(f"run folder {run_dir} has neither reference/ nor config.yaml naming data.labels_dir")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{config_path}: invalid YAML ({err})") from err
    data = config.get("data") if isinstance(config, dict) else None
    labels_dir = data.get("labels_dir") if isinstance(data, dict) else None
    if not labels_dir:
        raise DataError(f"{config_path}: no key data.labels_dir naming the reference folder")
    if not isinstance(labels_dir, str):
        raise DataError(f"{config_path}: data.labels_dir must be a folder path, got {labels_dir!r}")
    return predictions, run_dir / Path(labels_dir).expanduser()
