"""Dataset layouts: read nnU-Net raw, MSD datalists, CC359 and plain image/label folders into one model.

Public API:
    - :class:`Case`, :class:`CaseDataset`, :class:`Problem`, :class:`Layout`
    - :func:`load_dataset` (auto-detects the layout), the readers ``read_nnunet``, ``read_datalist``,
      ``read_cc359``, ``read_folders``
    - :func:`write_dataset_json` (nnU-Net v2 ``dataset.json``), :func:`attach_metadata` (``metadata.csv``)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ...errors import DataError
from .base import REFERENCE_1MM, Case, CaseDataset, Layout, Problem, reference_labels
from .cc359 import is_cc359, read_cc359
from .datalist import is_datalist, read_datalist
from .folders import is_folders, read_folders
from .metadata import METADATA_CSV, attach_metadata, read_metadata_csv
from .nnunet import DATASET_JSON, is_nnunet, read_nnunet, write_dataset_json

__all__ = [
    "DATASET_JSON",
    "METADATA_CSV",
    "REFERENCE_1MM",
    "Case",
    "CaseDataset",
    "Layout",
    "Problem",
    "attach_metadata",
    "detect_layout",
    "load_dataset",
    "known_layouts",
    "read_cc359",
    "read_datalist",
    "read_folders",
    "read_metadata_csv",
    "read_nnunet",
    "reference_labels",
    "write_dataset_json",
]

_DETECTORS: list[tuple[Layout, Callable[[Path], bool], Callable[[Path], CaseDataset], str]] = [
    (Layout.NNUNET, is_nnunet, read_nnunet, "nnU-Net raw: dataset.json + imagesTr/{case}_0000.nii.gz + labelsTr/"),
    (Layout.DATALIST, is_datalist, read_datalist, "MSD-style datalist JSON with 'training': [{image, label}]"),
    (Layout.CC359, is_cc359, read_cc359, "CC359: Original/CC0001_philips_15_55_M.nii.gz + Silver-standard*/..._ss"),
    (Layout.FOLDERS, is_folders, read_folders, "plain folders: images/ + labels/ with matching file names"),
]


def known_layouts() -> list[str]:
    """One line per layout describing what it looks like on disk."""
    return [f"{layout.value} ({description})" for layout, _, _, description in _DETECTORS]


def detect_layout(path: str | os.PathLike) -> Layout:
    """Which layout ``path`` (a folder or a datalist JSON file) is in.

    Raises:
        DataError: the path does not exist or matches no known layout (the message lists them).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    for layout, matches, _, _ in _DETECTORS:
        try:
            if matches(path):
                return layout
        except OSError as err:
            raise DataError(f"{path}: cannot be read ({err})") from err
    listing = "\n  - ".join(known_layouts())
    hint = _missing_dataset_json(path) or _nested_datasets(path)
    raise DataError(f"{path}: not a dataset in any known layout.{hint} Known layouts:\n  - {listing}")


def _missing_dataset_json(path: Path) -> str:
    """A hint when ``path`` looks like an nnU-Net raw folder (``imagesTr/``) but lacks its ``dataset.json``."""
    if path.is_dir() and (path / "imagesTr").is_dir() and not (path / "dataset.json").exists():
        return (
            " It has imagesTr/ but no dataset.json: an nnU-Net raw dataset needs one, e.g. "
            '{"channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1}, "numTraining": N, '
            '"file_ending": ".nii.gz"}.'
        )
    return ""


def _nested_datasets(path: Path) -> str:
    """A hint naming dataset folders one level down (e.g. the benchmark root holding several datasets)."""
    if not path.is_dir():
        return ""
    try:
        found = [p.name for p in sorted(path.iterdir()) if p.is_dir() and any(m(p) for _, m, _, _ in _DETECTORS)]
    except OSError:
        return ""
    return f" It contains dataset folder(s): {', '.join(found)}; pass one of them." if found else ""


def load_dataset(path: str | os.PathLike, *, strict: bool = True) -> CaseDataset:
    """Read a dataset in any known layout, with ``metadata.csv`` attached.

    Args:
        path: dataset folder, or a datalist JSON file.
        strict: raise when the reader found structural problems (missing labels, escaping paths, ...);
            ``False`` returns them in :attr:`CaseDataset.problems` (what ``medtransfer data check`` does).

    Raises:
        DataError: unknown layout, unreadable index files, or (``strict``) any structural problem, all listed.
    """
    layout = detect_layout(path)
    reader = next(read for lay, _, read, _ in _DETECTORS if lay == layout)
    try:
        dataset = attach_metadata(reader(Path(path)))
        dataset = dataset.replace(problems=dataset.problems + tuple(reference_labels(dataset)[1]))
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err})") from err
    if strict and dataset.problems:
        listing = "\n  ".join(str(p) for p in dataset.problems)
        raise DataError(f"{path}: {len(dataset.problems)} problem(s) in the {layout} dataset:\n  {listing}")
    return dataset
