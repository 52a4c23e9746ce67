"""Plain folders: ``images/`` and ``labels/`` (or ``masks/``) holding files with matching names.

An optional ``dataset.json`` next to them declares label names and channel names (nnU-Net v2 or v1 spelling).
Without a ``labels/`` folder every case is unlabelled (``label`` is ``None``).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io import is_nifti, strip_nifti_suffix
from .base import Case, CaseDataset, Layout, Problem, check_index_inside, duplicate_files
from .nnunet import DATASET_JSON, parse_channels, parse_labels, read_json

LABEL_FOLDERS = ("labels", "masks")


def is_folders(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir()


def read_folders(root: str | os.PathLike) -> CaseDataset:
    """Pair ``images/{name}`` with ``labels/{name}`` by file name."""
    root = Path(root)
    label_dir = next((root / n for n in LABEL_FOLDERS if (root / n).is_dir()), None)
    problems: list[Problem] = []
    images = _nifti_files(root / "images", problems)
    labels = _nifti_files(label_dir, problems) if label_dir else {}
    cases = []
    for case_id, path in images.items():
        label = labels.pop(case_id, None)
        if label_dir and label is None:
            problems.append(Problem(str(label_dir / path.name), f"label missing for image {path.name}"))
        cases.append(Case(case_id, [path], label))
    for path in labels.values():
        problems.append(Problem(str(path), f"label has no image: expected images/{path.name}"))
    source = root / DATASET_JSON
    check_index_inside(source, root)
    meta = read_json(source) if source.is_file() else {}
    channels = parse_channels(meta.get("channel_names", meta.get("modality")), source)
    return CaseDataset(
        root,
        Layout.FOLDERS,
        tuple(cases),
        parse_labels(meta.get("labels"), source),
        channels,
        channels_in_file=len(channels) > 1,
        problems=tuple(problems),
        index_file=source,
    )


def _nifti_files(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    """``{case id: file}``; a second file of one case id (``case0.nii`` and ``case0.nii.gz``) is a problem."""
    files = [p for p in sorted(folder.iterdir()) if is_nifti(p) and not p.name.startswith(".")]
    kept, duplicates = duplicate_files([(strip_nifti_suffix(p.name), p) for p in files])
    problems += duplicates
    return kept
