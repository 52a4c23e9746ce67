"""Reading scans for prediction (single files or nnU-Net style folders) and writing label maps."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from tqdm.auto import tqdm

from ..data.io import is_nifti, load_nifti, save_nifti, strip_nifti_suffix
from ..errors import DataError
from .predictor import Predictor

logger = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def group_scans(folder: Path, channels: int) -> dict[str, list[Path]]:
    """NIfTI files of ``folder`` grouped into cases: ``{case}_{0000..}`` for multi-channel models, else per file."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))
    if not files:
        raise DataError(f"{folder}: no .nii or .nii.gz files to predict")
    cases: dict[str, list[Path]] = {}
    for path in files:
        stem = strip_nifti_suffix(path.name)
        match = _CHANNEL.match(stem)
        key = match["case"] if match and (channels > 1 or match["channel"] == "0000") else stem
        cases.setdefault(key, []).append(path)
    return cases


def predict_file(predictor: Predictor, inputs: list[Path], output: Path) -> Path:
    """Predict one case (one file, or one file per channel) and write its label map with the input's affine."""
    volumes = [load_nifti(p, dtype="float32") for p in inputs]
    source = ", ".join(str(p) for p in inputs)
    labels = predictor.predict(volumes[0] if len(volumes) == 1 else volumes, source=source)
    return save_nifti(output, labels, volumes[0].affine)


def predict_path(predictor: Predictor, source: str | os.PathLike, output: str | os.PathLike) -> list[Path]:
    """Predict a file (``output`` is a file) or every case of a folder (``output`` is a folder)."""
    source, output = Path(source), Path(output)
    if source.is_file():
        if not is_nifti(output):
            raise DataError(f"{output}: the output of a single scan must end in .nii or .nii.gz")
        return [predict_file(predictor, [source], output)]
    if not source.is_dir():
        raise DataError(f"{source}: input not found (give a .nii/.nii.gz file or a folder of them)")
    if is_nifti(output):
        raise DataError(f"{output}: for an input folder the output must be a folder, not a NIfTI file name")
    written = []
    for case, files in tqdm(group_scans(source, predictor.in_channels).items(), desc="predict", unit="scan"):
        written.append(predict_file(predictor, files, output / f"{case}.nii.gz"))
        logger.info("%s -> %s", case, written[-1])
    return written
