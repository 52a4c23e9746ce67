"""Reading scans for prediction (single files or nnU-Net style folders) and writing label maps."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.check import count_nonfinite
from ..data.io import Volume, is_nifti, load_nifti, save_nifti, strip_nifti_suffix, warn_unoriented
from ..errors import DataError
from .predictor import Predictor

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def visible_scans(folder: Path) -> list[Path]:
    """The NIfTI files of ``folder``, sorted; hidden files (macOS ``._*`` metadata, say) are no scans."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))


def group_scans(folder: Path, channels: int, *, what: str = "predict", hint: str = "") -> dict[str, list[Path]]:
    """NIfTI files of ``folder`` grouped into cases: ``{case}_{0000..}`` for multi-channel models, else per file
    (``{case}_0000`` is ``{case}``).

    Args:
        folder: the folder of scans (hidden files are skipped).
        channels: the model's input channels.
        what: what the scans are for, in the messages (``predict``, ``pseudo-label``).
        hint: added to the message about two files of one case (e.g. where an earlier prediction may be one).

    Raises:
        DataError: the folder holds no scan, or two files would be one case (``a.nii`` and ``a.nii.gz``, or ``a``
            and ``a_0000``); the message names both.
    """
    files = visible_scans(folder)
    if not files:
        raise DataError(f"{folder}: no .nii or .nii.gz files to {what}")
    stems: dict[str, Path] = {}
    for path in files:
        twin = stems.setdefault(strip_nifti_suffix(path.name), path)
        if twin != path:
            raise DataError(
                f"{path}: {twin.name} has the same name without its suffix, so both would be one case; keep one of "
                f"them in the folder{hint}"
            )
    cases: dict[str, list[Path]] = {}
    if channels == 1:
        _refuse_other_channels(files, what, hint)
    for path in files:
        stem = strip_nifti_suffix(path.name)
        match = _CHANNEL.match(stem)
        key = match["case"] if match and (channels > 1 or match["channel"] == "0000") else stem
        cases.setdefault(key, []).append(path)
    for key, paths in cases.items():
        plain = [p for p in paths if strip_nifti_suffix(p.name) == key]
        if plain and len(paths) > 1:  # `case.nii.gz` beside `case_0000.nii.gz`: two scans of one case
            other = next(p for p in paths if p != plain[0])
            raise DataError(
                f"{plain[0]}: {other.name} is the same case {key!r} (a case is one file named {plain[0].name} or "
                f"files named {key}_0000{'' if channels == 1 else ', ' + key + '_0001, ...'}, not both); keep one "
                f"of them in the folder{hint}"
            )
    return cases


def _refuse_other_channels(files: list[Path], what: str, hint: str) -> None:
    """A 1-channel model and ``{case}_0000`` beside ``{case}_0001`` (nnU-Net's name of a second channel, a FLAIR
    beside a T1, say): predicting the second file as a case of its own would write a mask of the wrong scan."""
    channel_files: dict[str, list[Path]] = {}
    for path in files:
        match = _CHANNEL.match(strip_nifti_suffix(path.name))
        if match:
            channel_files.setdefault(match["case"], []).append(path)
    for case, paths in channel_files.items():
        first = [p for p in paths if strip_nifti_suffix(p.name) == f"{case}_0000"]
        other = [p for p in paths if p not in first]
        if first and other:
            raise DataError(
                f"{other[0]}: beside {first[0].name} this is another channel of case {case!r} (nnU-Net's naming: "
                f"{case}_0000, {case}_0001, ...), but the model takes 1 channel; {what} a folder holding only the "
                f"channel it was trained on, or name single-scan cases without a _NNNN suffix{hint}"
            )


def predict_file(predictor: Predictor, inputs: list[Path], output: Path, *, allow_nan: bool = False) -> Path:
    """Predict one case (one file, or one file per channel) and write its label map with the input's affine.

    Args:
        predictor: the trained model.
        inputs: the case's file(s), one per channel (or one 4D file).
        output: the label map to write (atomically).
        allow_nan: predict scans with some NaN / infinite voxels (with a warning) instead of refusing them.

    Raises:
        DataError: an input cannot be read or used (the message names the file).
    """
    volumes = [load_nifti(p, dtype="float32") for p in inputs]
    _check_channel_files(inputs, volumes, predictor.in_channels)
    for volume in volumes:
        _check_finite(volume, allow_nan)
        _warn_constant(volume)
    warn_unoriented(inputs[0])
    source = ", ".join(str(p) for p in inputs)
    labels = predictor.predict(volumes[0] if len(volumes) == 1 else volumes, source=source)
    return save_nifti(output, labels, volumes[0].affine, like=inputs[0])


def _check_channel_files(inputs: list[Path], volumes: list[Volume], channels: int) -> None:
    """The files of a multi-channel case are ``{case}_0000`` ... ``{case}_{C-1}``, each once (nnU-Net's naming): a
    case of ``_0000`` and ``_0002`` for a 2-channel model would otherwise be predicted with the wrong scan in its
    second channel. A lone 3D ``{case}_0000`` names the channel files that are missing."""
    matches = [_CHANNEL.match(strip_nifti_suffix(p.name)) for p in inputs]
    if channels < 2 or not all(matches) or (len(inputs) == 1 and volumes[0].array.ndim != 3):
        return  # one plain or 4D file: the predictor checks its channel count
    case = matches[0]["case"]
    numbers = sorted(int(m["channel"]) for m in matches)
    if numbers == list(range(channels)):
        return
    missing = [f"{case}_{i:04d}" for i in range(channels) if i not in numbers]
    extra = [p.name for p, m in zip(inputs, matches, strict=True) if int(m["channel"]) >= channels]
    problems = ([f"{', '.join(missing)} missing"] if missing else []) + (
        [f"{', '.join(extra)} beyond them"] if extra else []
    )
    raise DataError(
        f"{inputs[0].parent / case}: the case's channel files are {', '.join(p.name for p in inputs)}; the "
        f"{channels}-channel model needs {case}_0000 to {case}_{channels - 1:04d} ({'; '.join(problems)})"
    )


def _check_finite(volume: Volume, allow_nan: bool) -> None:
    """Refuse (or, with ``allow_nan``, warn about) NaN / infinite voxels; a scan with no finite voxel is refused."""
    nans, infs = count_nonfinite(volume.array)
    if not nans + infs:
        return
    size = volume.array.size
    if nans + infs == size:
        raise DataError(f"{volume.source}: all {size} voxels are NaN or infinite; a scan needs intensities to predict")
    counts = f"{nans} NaN" + (f" and {infs} infinite" if infs else "") + f" voxel(s) of {size}"
    if not allow_nan:
        raise DataError(
            f"{volume.source}: {counts}; scans with missing intensities are refused: pass --allow-nan to predict "
            "them with NaN read as background (the lowest clipped intensity)"
        )
    infinite = ", +inf as the highest and -inf as the lowest clipped intensity" if infs else ""
    logger.warning("%s: %s, predicted with NaN read as background%s (--allow-nan)", volume.source, counts, infinite)


def _warn_constant(volume: Volume) -> None:
    """Warn about a scan whose finite voxels all hold one value (all zero, say): its mask says nothing."""
    finite = volume.array[np.isfinite(volume.array)]
    if finite.size and finite.min() == finite.max():
        logger.warning(
            "%s: every voxel is %g (an empty or constant scan): its mask cannot show anything",
            volume.source,
            float(finite.min()),
        )


@dataclass
class PredictResult:
    """What :func:`predict_path` did.

    Attributes:
        written: the label maps written.
        failed: one ``"<file>: <what is wrong>"`` message per case that could not be predicted.
    """

    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def plan_predictions(
    source: Path, output: Path, channels: int, *, overwrite: bool = False
) -> list[tuple[list[Path], Path]]:
    """``(input files, output file)`` of each case to predict, checked before any work.

    Args:
        source: a scan, or a folder of scans.
        output: the label map (for a scan) or the folder to write them in (for a folder).
        channels: the model's input channels (how a folder's files group into cases).
        overwrite: replace label maps that already exist at the outputs (never an input scan); without it an
            existing output file is refused.

    Raises:
        DataError: the input is missing or a file that is not NIfTI, the output kind does not match the input's
            (file / folder), an output is a folder, an output already exists (without ``overwrite``), or an output
            would overwrite an input scan (:func:`refuse_overwriting_inputs`).
    """
    if source.is_file():
        if not is_nifti(source):
            raise DataError(
                f"{source}: not a NIfTI file (allowed: .nii, .nii.gz); convert it first (e.g. dcm2niix for DICOM, "
                "mri_convert for .mgz; an Analyze .img/.hdr pair stores no orientation)"
            )
        if not is_nifti(output):
            raise DataError(f"{output}: the output of a single scan must end in .nii or .nii.gz")
        jobs, allowed = [([source], output)], "give another --output file"
    elif source.is_dir():
        if is_nifti(output):
            raise DataError(f"{output}: for an input folder the output must be a folder, not a NIfTI file name")
        if output.exists() and not output.is_dir():
            raise DataError(f"{output}: is a file; for an input folder the output must be a folder")
        earlier = " (a label map predicted into this folder is one of them: give another --output)"
        groups = group_scans(source, channels, hint=earlier if output.resolve() == source.resolve() else "")
        jobs = [(files, output / f"{case}.nii.gz") for case, files in groups.items()]
        allowed = "give an --output folder other than the input folder"
    else:
        raise DataError(f"{source}: input not found (give a .nii/.nii.gz file or a folder of them)")
    refuse_overwriting_inputs(jobs, allowed)
    folders = [out for _, out in jobs if out.is_dir()]
    if folders:
        raise DataError(f"{folders[0]}: is a folder, so the label map cannot be written there; give another --output")
    existing = [out for _, out in jobs if out.exists() or out.is_symlink()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the {len(jobs)} outputs)" if len(existing) > 1 else ""
        raise DataError(
            f"{existing[0]}: already exists{more}; predict does not replace existing files unless --overwrite is "
            "given (or give another --output)"
        )
    return jobs


def refuse_overwriting_inputs(jobs: list[tuple[list[Path], Path]], allowed: str) -> None:
    """Refuse outputs that are an input scan: the same path, a hard link or a symlink to it.

    Args:
        jobs: ``(input files, output file)`` per case.
        allowed: what to do instead, the end of the message.

    Raises:
        DataError: naming the first colliding output, its input and how many outputs collide.
    """
    inputs = {_file_id(p): p for files, _ in jobs for p in files}
    clashes = [(out, inputs[_file_id(out)]) for _, out in jobs if out.exists() and _file_id(out) in inputs]
    if not clashes:
        return
    out, scan = clashes[0]
    same = f"is the same file as the input scan {scan}"
    if os.path.abspath(out) == os.path.abspath(scan):
        same = "is the input scan"
    more = f" (and {len(clashes) - 1} more output(s) would overwrite inputs)" if len(clashes) > 1 else ""
    raise DataError(f"{out}: the output {same}{more}; predict never writes over an input: {allowed}")


def _file_id(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def predict_path(
    predictor: Predictor,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    allow_nan: bool = False,
    overwrite: bool = False,
) -> PredictResult:
    """Predict a file (``output`` is a file) or every case of a folder (``output`` is a folder).

    Every output is checked before the first prediction (nothing of the user's is overwritten: an existing output
    file is refused unless ``overwrite``, an input scan always).
    A single scan that cannot be predicted raises; in a folder every readable case is predicted and the others are
    listed in :attr:`PredictResult.failed`.

    Raises:
        DataError: bad input or output paths, an output that is an input, or the single scan cannot be predicted.
    """
    source, output = Path(source), Path(output)
    jobs = plan_predictions(source, output, predictor.in_channels, overwrite=overwrite)
    if source.is_file():
        return PredictResult(written=[predict_file(predictor, *jobs[0], allow_nan=allow_nan)])
    result = PredictResult()
    for inputs, target in tqdm(jobs, desc="predict", unit="scan"):
        try:
            result.written.append(predict_file(predictor, inputs, target, allow_nan=allow_nan))
        except DataError as err:
            result.failed.append(str(err))
            continue
        logger.info("%s -> %s", inputs[0].name, target)
    return result
