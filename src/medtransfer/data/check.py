"""Validate a dataset folder and report every problem, each with its file.

:func:`check_dataset` never stops at the first problem: structural ones come from the layout reader (missing
labels or channel files, duplicate case ids, paths escaping the root, ...), then every file is opened and checked:
readable, 3D (or 4D with the declared channels when the layout stores channels in one file), finite, labels
integer-valued in 0..255 with declared values only, and image/label grids equal (shape and affine within a tolerance).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .io import Volume, load_nifti
from .layouts import Case, CaseDataset, Problem, detect_layout, load_dataset, reference_labels
from .layouts.nnunet import MAX_LABEL

__all__ = ["DatasetCheck", "Problem", "check_case", "check_dataset", "count_nonfinite", "inspect_dataset"]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE = 1e-3  # mm (translation) and unitless (direction x spacing), as nnU-Net's geometry check


@dataclass(frozen=True)
class DatasetCheck:
    """What :func:`inspect_dataset` found.

    Attributes:
        dataset: the dataset as read (``None`` when an index file could not be read at all).
        problems: everything that must be fixed (the dataset is refused for training).
        warnings: things that are allowed but likely a mistake (e.g. no label has any foreground).
    """

    dataset: CaseDataset | None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


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
    return inspect_dataset(path, affine_tolerance=affine_tolerance, progress=progress).problems


def inspect_dataset(
    path: str | os.PathLike, *, affine_tolerance: float = AFFINE_TOLERANCE, progress: bool = False
) -> DatasetCheck:
    """The dataset at ``path`` with its problems and warnings (what ``medtransfer data check`` prints).

    Raises:
        DataError: ``path`` is not a dataset in any known layout (nothing to check).
        ConfigError: ``affine_tolerance`` is not a finite number >= 0.
    """
    check_affine_tolerance(affine_tolerance)
    detect_layout(path)
    try:
        dataset = load_dataset(path, strict=False)
    except DataError as err:  # an index file (dataset.json, metadata.csv) is broken: nothing more can be read
        return DatasetCheck(None, [_error_problem(path, err)])
    problems = list(dataset.problems)
    cases = dataset.cases + dataset.test_cases
    if not cases:
        problems.append(Problem(str(dataset.root), f"empty dataset: no cases found in the {dataset.layout} layout"))
    from tqdm.auto import tqdm

    foreground: list[bool] = []
    references, _ = reference_labels(dataset)  # the reader already reported the ones it refused
    for case in tqdm(cases, desc="check", unit="case", disable=not progress):
        logger.debug("checking case %s", case.case_id)
        problems += _check_case(case, dataset, affine_tolerance, foreground, references.get(case.case_id))
    warnings = []
    if foreground and not any(foreground):
        warnings.append(
            Problem(
                str(dataset.root),
                f"no label has any foreground: all {len(foreground)} label file(s) hold only 0 (background); "
                "a model trained on them learns to predict background everywhere",
            )
        )
    return DatasetCheck(dataset, problems, warnings)


def check_affine_tolerance(value: float) -> None:
    """Refuse a tolerance that every affine difference meets (``nan``, ``inf``: a mirrored label would pass) or
    none can (negative).

    Raises:
        ConfigError: naming the value and what is allowed.
    """
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(
            f"affine tolerance (--affine-tolerance) is {value}; expected a finite number >= 0 (the largest "
            f"image/label affine difference, default {AFFINE_TOLERANCE:g})"
        )


def _error_problem(path: str | os.PathLike, err: DataError) -> Problem:
    """A :class:`Problem` for an error whose message starts with the file it concerns (``file: message``)."""
    text = " ".join(str(err).split("\n"))
    file, sep, message = text.partition(": ")
    try:
        named = bool(sep and file) and Path(file).exists()
    except (OSError, ValueError):
        named = False
    return Problem(file, message) if named else Problem(str(path), text)


def check_case(case: Case, dataset: CaseDataset, *, affine_tolerance: float = AFFINE_TOLERANCE) -> list[Problem]:
    """Problems of one case's files (see the module docstring)."""
    return _check_case(case, dataset, affine_tolerance, [])


def _check_case(
    case: Case,
    dataset: CaseDataset,
    affine_tolerance: float,
    foreground: list[bool],
    reference_1mm: Path | None = None,
) -> list[Problem]:
    """:func:`check_case`, appending to ``foreground`` whether the case's label (when readable) has any, and
    checking the case's 1 mm reference label (``labelsTr_1mm``) against the image and label it has loaded."""
    problems: list[Problem] = []
    label: Volume | None = None
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
            label_problems = _label_problems(case.label, label, dataset)
            if not label_problems:
                foreground.append(bool(np.any(label.array)))
            problems += label_problems
            if reference is not None:
                problems += _grid_problems(case.label, label, *reference, affine_tolerance, "label")
    if reference_1mm is not None:
        # in space only against what loaded (a file that did not is the case's own problem above)
        loaded = reference if case.label is None or label is not None else None
        problems += _check_reference(reference_1mm, dataset, loaded, label)
    return problems


def _check_reference(
    path: Path, dataset: CaseDataset, image: tuple[Path, Volume] | None, label: Volume | None
) -> list[Problem]:
    """Problems of a 1 mm reference label (``labelsTr_1mm``): readable, 3D, declared integer labels, and in the
    case's space: its field of view overlaps the case's image and the label's foreground lies on or near the
    reference's (the evaluation resamples predictions onto this grid by the affines, so a reference in another space,
    e.g. a template's, scores every prediction against the wrong voxels)."""
    problems: list[Problem] = []
    volume = _load(path, "1 mm reference label", problems)
    if volume is None:
        return problems
    problems = _label_problems(path, volume, dataset)
    if problems or image is None:
        return problems
    return problems + _reference_space_problems(path, volume, *image, label)


REFERENCE_OFFSET_MM = 10.0
"""How far (median, plus two label voxels) the label's foreground voxels may lie from the 1 mm reference's before
``data check`` says the two are in different spaces: a label resampled from its reference is within a voxel."""


def _reference_space_problems(
    path: Path, reference: Volume, image_path: Path, image: Volume, label: Volume | None
) -> list[Problem]:
    ref_box, image_box = _world_box(reference), _world_box(image)
    overlap = np.clip(np.minimum(ref_box[1], image_box[1]) - np.maximum(ref_box[0], image_box[0]), 0, None).prod()
    smaller = min(np.prod(ref_box[1] - ref_box[0]), np.prod(image_box[1] - image_box[0]))
    if overlap < 0.5 * smaller:
        return [
            Problem(
                str(path),
                f"1 mm reference covers {_fmt_box(ref_box)} mm in world space, the image {image_path.name} covers "
                f"{_fmt_box(image_box)} ({100 * overlap / max(smaller, 1e-9):.0f}% overlap); the reference must be "
                "in the image's space (same scanner/world coordinates), at 1 mm",
            )
        ]
    if label is None:
        return []
    ref_points, label_points = _foreground_points(reference, 50_000), _foreground_points(label, 5_000)
    if ref_points is None:
        if label_points is not None:
            return [
                Problem(
                    str(path), "the reference has no foreground but the label has; they must mark the same structures"
                )
            ]
        return []  # a label on a coarse grid may lose what its 1 mm reference has (a lesion of a few voxels)
    if label_points is None:
        return []
    from scipy.spatial import cKDTree

    distance = float(np.median(cKDTree(ref_points).query(label_points)[0]))
    allowed = REFERENCE_OFFSET_MM + 2 * float(max(label.spacing[:3]))
    if distance > allowed:
        return [
            Problem(
                str(path),
                f"the foreground of the label {label.source} lies a median {distance:.1f} mm from this reference's "
                f"(allowed {allowed:.1f} mm); the 1 mm reference must mark the same structures in the same space",
            )
        ]
    return []


def _world_box(volume: Volume) -> np.ndarray:
    """``[[min x, y, z], [max x, y, z]]``: the world coordinates of the corner voxel centres."""
    shape = np.array(volume.array.shape[:3]) - 1
    corners = np.array([[i, j, k, 1] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])], float)
    world = (np.asarray(volume.affine, float) @ corners.T)[:3].T
    return np.stack([world.min(0), world.max(0)])


def _fmt_box(box: np.ndarray) -> str:
    return " x ".join(f"[{lo:.0f}, {hi:.0f}]" for lo, hi in zip(box[0], box[1], strict=True))


def _foreground_points(volume: Volume, limit: int) -> np.ndarray | None:
    """World coordinates of (at most ``limit``, drawn with a fixed seed) foreground voxel centres; ``None`` if none."""
    array = np.asarray(volume.array)
    array = array[..., 0] if array.ndim == 4 else array
    idx = np.argwhere(array > 0)
    if idx.size == 0:
        return None
    if len(idx) > limit:
        idx = idx[np.random.default_rng(0).choice(len(idx), limit, replace=False)]
    return (np.asarray(volume.affine, float) @ np.c_[idx, np.ones(len(idx))].T)[:3].T


def _load(path: Path, what: str, problems: list[Problem]) -> Volume | None:
    if path.is_dir():
        problems.append(Problem(str(path), f"{what} path is a folder, not a file; give the {what}'s NIfTI file"))
        return None
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
        allowed = f"4D with {expected} channels" if expected > 1 else "3D (or 4D with 1 channel)"
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
        fractional = values[values != np.round(values)]
        shown = ", ".join(f"{float(v):.9g}" for v in fractional[:5]) + (", ..." if len(fractional) > 5 else "")
        return [
            Problem(str(path), f"label has non-integer values [{shown}]; labels must be integers{_scaling_note(path)}")
        ]
    found = values.astype(np.int64).tolist()
    outside = [v for v in found if not 0 <= v <= MAX_LABEL]
    if outside:
        return [
            Problem(
                str(path),
                f"label has values {_fmt(outside)} outside 0..{MAX_LABEL} (values {_fmt(found)}); label values must "
                f"be integers 0..{MAX_LABEL}, with 0 the background",
            )
        ]
    declared = dataset.label_names or DEFAULT_LABELS
    undeclared = sorted(set(found) - set(declared))
    if undeclared:
        problems.append(Problem(str(path), _undeclared_message(undeclared, found, dataset)))
    return problems


def _scaling_note(path: Path) -> str:
    """``"; its header scales ..."`` when the NIfTI header of ``path`` sets ``scl_slope``/``scl_inter`` (the stored
    integers are read multiplied and shifted, e.g. 255 * (1/255) = 1.00000006), else ``""``."""
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj
        slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    except Exception:  # noqa: BLE001 - the label was read already; the note is only a hint
        return ""
    if slope == 1.0 and inter == 0.0:
        return ""
    return (
        f"; its header scales the stored values (scl_slope {slope:.9g}, scl_inter {inter:.9g}): store the label "
        "values themselves, unscaled (scl_slope 1, scl_inter 0)"
    )


DEFAULT_LABELS = {0: "background", 1: "foreground"}
"""The labels of a dataset that declares none (binary), as ``medtransfer finetune`` reads it."""


def _undeclared_message(undeclared: list[int], found: list[int], dataset: CaseDataset) -> str:
    values = f"label values {_fmt(undeclared)}"
    if dataset.label_names:
        declared = ", ".join(f"{v}={n}" for v, n in dataset.label_names.items())
        where = dataset.index_file.name if dataset.index_file is not None else f"the {dataset.layout} layout"
        return f"{values} are not declared in {where} ({declared})"
    index = dataset.index_file
    foreground = [v for v in found if v != 0]
    example = ", ".join(['"background": 0'] + [f'"NAME_{v}": {v}' for v in foreground[:3]])
    example += ", ..." if len(foreground) > 3 else ""
    hint = f'; or declare every value in {index} as "labels": {{{example}}}' if index is not None else ""
    return (
        f"{values} (values {_fmt(found)}) are not allowed: the dataset declares no labels, so labels are binary "
        f"(0=background, 1=foreground); recode the foreground to 1{hint}"
    )


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


def _fmt(values: Iterable, limit: int = 12) -> str:
    """``[0, 1, 2]``; at most ``limit`` values, then ``, ... (N in all)``."""
    values = list(values)
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:limit])
    return f"[{shown}, ... ({len(values)} in all)]" if len(values) > limit else f"[{shown}]"


def _fmt_affine(affine: np.ndarray) -> str:
    """The top three rows of an affine on one line: ``[[1 0 0 -90]; [0 1 0 -125]; [0 0 1 -71]]``."""
    rows = np.asarray(affine, dtype=np.float64)[:3]
    return "[" + "; ".join("[" + " ".join(f"{v:.4g}" for v in row) + "]" for row in rows) + "]"
