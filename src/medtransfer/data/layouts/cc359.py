"""CC359 (Calgary-Campinas-359): T1 scans and brain masks, domain = vendor x field strength from the file names.

On disk (as distributed): ``Original/CC0001_philips_15_55_M.nii.gz`` (id, vendor, field strength x10 or 3,
age, sex) and masks ``Silver-standard*/CC0001_philips_15_55_M_ss.nii.gz`` (also ``_staple``/``_manual`` suffixes, or
a ``masks/`` folder).  The scans may also sit directly in the root.  Domains: ``{siemens,philips,ge}_{15,3}``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..io import strip_nifti_suffix
from .base import Case, CaseDataset, Layout, Problem, duplicate_files

NAME_RE = re.compile(
    r"^(?P<case>CC\d{4})_(?P<vendor>[a-z]+)_(?P<field>\d+)_(?P<age>\d+)_(?P<sex>[MF])\.nii(\.gz)?$", re.IGNORECASE
)
MASK_SUFFIXES = ("_ss", "_staple", "_manual", "_mask", "")
MASK_FOLDERS = ("Silver-standard-machine-learning", "Silver-standard", "Silver-standard-STAPLE", "masks", "Manual")


def _image_folder(path: Path) -> Path | None:
    for folder in (path / "Original", path):
        if folder.is_dir() and any(NAME_RE.match(p.name) for p in folder.iterdir()):
            return folder
    return None


def is_cc359(path: Path) -> bool:
    return path.is_dir() and _image_folder(path) is not None


def _mask_index(root: Path, image_folder: Path) -> dict[str, Path]:
    """stem -> mask path, the first mask folder (in :data:`MASK_FOLDERS` order) that has one wins."""
    index: dict[str, Path] = {}
    for name in reversed(MASK_FOLDERS):
        folder = root / name
        if not folder.is_dir() or folder == image_folder:
            continue
        for path in folder.iterdir():
            stem = strip_nifti_suffix(path.name)
            base = _strip_mask_suffix(stem)
            if base is not None:
                index[base] = path
    return index


def _strip_mask_suffix(stem: str) -> str | None:
    """``CC0001_philips_15_55_M_ss`` -> ``CC0001_philips_15_55_M``; ``None`` when it is no CC359 mask name."""
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix):
            base = stem[: len(stem) - len(suffix)]
            if NAME_RE.match(base + ".nii.gz"):
                return base
    return None


def read_cc359(root: str | os.PathLike) -> CaseDataset:
    """Read a CC359 folder: one case per scan, ``metadata`` holding vendor, field strength, age, sex and domain."""
    root = Path(root)
    image_folder = _image_folder(root)
    masks = _mask_index(root, image_folder) if image_folder else {}
    cases, problems = [], []
    for path in sorted(image_folder.iterdir()) if image_folder else []:
        match = NAME_RE.match(path.name)
        if not match:
            continue
        stem = strip_nifti_suffix(path.name)
        vendor, field = match["vendor"].lower(), match["field"]
        metadata = {
            "vendor": vendor,
            "field_strength": "1.5" if field == "15" else field,
            "age": int(match["age"]),
            "sex": match["sex"].upper(),
            "domain": f"{vendor}_{field}",
        }
        label = masks.get(stem)
        if label is None:
            problems.append(Problem(str(path), f"no brain mask found (looked for {stem}_ss.nii.gz in {MASK_FOLDERS})"))
        cases.append(Case(match["case"].upper(), [path], label, metadata))
    kept, duplicates = duplicate_files([(case.case_id, case.images[0]) for case in cases])
    problems += duplicates  # e.g. CC0001_ge_3_... and CC0001_siemens_3_...: the id alone must name one scan
    cases = [case for case in cases if kept[case.case_id] == case.images[0]]
    return CaseDataset(
        root, Layout.CC359, tuple(cases), {0: "background", 1: "brain"}, ("T1",), problems=tuple(problems)
    )
