"""Validate a dataset folder and report every problem, each with its file.

:func:`check_dataset` never stops at the first problem: structural ones come from the layout reader (missing
labels or channel files, duplicate case ids, paths escaping the root, ...), then every file is opened and checked:
readable, 3D (or 4D with the declared channels when the layout stores channels in one file), finite, labels
integer-valued with declared values only, and image/label grids equal (shape and affine within a tolerance).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import DataError
from .io import Volume, load_nifti
from .layouts import Case, CaseDataset, Problem, detect_layout, load_dataset

__all__ = ["Problem", "check_case", "check_dataset", "count_nonfinite"]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-3  # mm (translation) and unitless (direction x spacing), as nnU-Net's geometry check


def check_dataset(
    path: str | os.PathLike, *, affine_tolerance: float = AFFINE_TOLERANCE, progress: bool = False
) -> list[Problem]:
    """Every problem of the dataset at ``path`` (empty list when clean).

    Args:
        path: dataset folder or datalist JSON file.
        affine_tolerance: largest allowed absolute difference between image and label affines.
        progress: show a progress bar over the cases (stderr).

    Raises:
        DataError: ``path`` is not a dataset in any known layout (nothing to check).
    """
    detect_layout(path)
    try:
        dataset = load_dataset(path, strict=False)
    except DataError as err:  # an index file (dataset.json, metadata.csv) is broken: nothing more can be read
        return [Problem(str(path), str(err))]
    problems = list(dataset.problems)
    cases = dataset.cases + dataset.test_cases
    if not cases:
        problems.append(Problem(str(dataset.root), f"empty dataset: no cases found in the {dataset.layout} layout"))
    from tqdm.auto import tqdm

    for case in tqdm(cases, desc="check", unit="case", disable=not progress):
        logger.debug("checking case %s", case.case_id)
        problems += check_case(case, dataset, affine_tolerance=affine_tolerance)
    return problems


def check_case(case: Case, dataset: CaseDataset, *, affine_tolerance: float = AFFINE_TOLERANCE) -> list[Problem]:
    """Problems of one case's files (see the module docstring)."""
    problems: list[Problem] = []
    reference: tuple[Path, Volume] | None = None
    for path in case.images:
        volume = _load(path, "image", problems)
        if volume is None:
            continue
        problems += _image_problems(path, volume, dataset)
        if reference is None:
            reference = (path, volume)
        else:
            problems += _grid_problems(path, volume, *reference, affine_tolerance, "channel")
    if case.label is not None:
        label = _load(case.label, "label", problems)
        if label is not None:
            problems += _label_problems(case.label, label, dataset)
            if reference is not None:
                problems += _grid_problems(case.label, label, *reference, affine_tolerance, "label")
    return problems


def _load(path: Path, what: str, problems: list[Problem]) -> Volume | None:
    if not path.is_file():
        problems.append(Problem(str(path), f"{what} file missing"))
        return None
    try:
        return load_nifti(path)
    except (DataError, OSError, MemoryError) as err:
        message = str(err).removeprefix(f"{path}: ")
        problems.append(Problem(str(path), message))
        return None


def _image_problems(path: Path, volume: Volume, dataset: CaseDataset) -> list[Problem]:
    problems = []
    shape = volume.array.shape
    expected = dataset.num_channels if dataset.channels_in_file else 1
    channels = 1 if len(shape) == 3 else (shape[3] if len(shape) == 4 else -1)
    if len(shape) not in (3, 4) or channels != expected:
        where = "one file holding all channels" if dataset.channels_in_file else "one file per channel"
        allowed = f"3D, or 4D with {expected} channels" if expected > 1 else "3D"
        problems.append(
            Problem(str(path), f"image has shape {shape} ({len(shape)}D); the layout ({where}) allows {allowed}")
        )
    problems += _nonfinite(path, volume.array)
    return problems


def count_nonfinite(array: np.ndarray) -> tuple[int, int]:
    """``(NaN voxels, infinite voxels)`` of an array (``(0, 0)`` for integer arrays)."""
    if array.dtype.kind not in "fc":
        return 0, 0
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    nans = int(np.count_nonzero(np.isnan(array))) if bad else 0
    return nans, bad - nans


def _nonfinite(path: Path, array: np.ndarray) -> list[Problem]:
    nans, infs = count_nonfinite(array)
    if not nans + infs:
        return []
    return [
        Problem(str(path), f"{nans + infs} non-finite voxel(s) ({nans} NaN, {infs} inf); all voxels must be finite")
    ]


def _label_problems(path: Path, volume: Volume, dataset: CaseDataset) -> list[Problem]:
    array = volume.array
    problems = []
    if array.ndim != 3 and not (array.ndim == 4 and array.shape[3] == 1):
        problems.append(Problem(str(path), f"label has shape {array.shape}; labels must be 3D"))
    problems += _nonfinite(path, array)
    if problems:
        return problems
    values = np.unique(array)
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        fractional = values[values != np.round(values)][:5]
        return [Problem(str(path), f"label has non-integer values {_fmt(fractional)}; labels must be integers")]
    if dataset.label_names:
        undeclared = sorted(set(values.astype(np.int64).tolist()) - set(dataset.label_names))
        if undeclared:
            declared = ", ".join(f"{v}={n}" for v, n in dataset.label_names.items())
            problems.append(
                Problem(str(path), f"label values {_fmt(undeclared)} are not declared in dataset.json ({declared})")
            )
    return problems


def _grid_problems(
    path: Path, volume: Volume, ref_path: Path, ref: Volume, tolerance: float, what: str
) -> list[Problem]:
    shape, ref_shape = volume.array.shape[:3], ref.array.shape[:3]
    if shape != ref_shape:
        return [Problem(str(path), f"{what} shape {shape} differs from image {ref_path.name} shape {ref_shape}")]
    diff = float(np.abs(volume.affine - ref.affine).max())
    if diff > tolerance:
        return [
            Problem(
                str(path),
                f"{what} affine differs from image {ref_path.name} by up to {diff:.4g} (tolerance {tolerance}): "
                f"{_fmt_affine(volume.affine)} vs {_fmt_affine(ref.affine)}",
            )
        ]
    return []


def _fmt(values: Iterable) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "]"


def _fmt_affine(affine: np.ndarray) -> str:
    return np.array2string(np.asarray(affine)[:3], precision=3, separator=",", max_line_width=10_000)
