"""MSD-style datalists: a JSON file listing ``{"image": ..., "label": ...}`` entries with paths relative to its folder.

This is the Medical Segmentation Decathlon ``dataset.json`` (4D images, one file holding every channel) and MONAI's
``load_decathlon_datalist`` format.  ``image`` may also be a list (one file per channel).  Sections: ``training``
and ``validation`` (labelled; ``metadata["split"]`` says which), ``test``/``testing`` (images only).  Paths that
leave the file's folder are refused, and so is a folder's ``datalist.json`` that is a symlink pointing out of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..io import is_nifti, strip_nifti_suffix
from .base import (
    Case,
    CaseDataset,
    Layout,
    Problem,
    case_id_problem,
    check_index_inside,
    find_duplicates,
    resolve_inside,
)
from .nnunet import DATASET_JSON, parse_channels, parse_labels, read_json

DATALIST_NAMES = ("datalist.json", DATASET_JSON)
LABELLED_SECTIONS = ("training", "validation")
TEST_SECTIONS = ("test", "testing")


def find_datalist(path: Path) -> Path | None:
    """The datalist file for ``path`` (the file itself, or ``datalist.json``/``dataset.json`` in a folder)."""
    candidates = [path] if path.is_file() else [path / name for name in DATALIST_NAMES]
    for candidate in candidates:
        if candidate.suffix == ".json" and candidate.is_file():
            try:
                content = read_json(candidate)
            except DataError:
                return candidate if path.is_file() else None
            if any(isinstance(content.get(s), list) for s in LABELLED_SECTIONS):
                return candidate
    return None


def is_datalist(path: Path) -> bool:
    return find_datalist(path) is not None


def read_datalist(path: str | os.PathLike) -> CaseDataset:
    """Read a datalist JSON (or a folder holding ``datalist.json`` / an MSD ``dataset.json``)."""
    path = Path(path)
    source = find_datalist(path)
    if source is None:
        raise DataError(f"{path}: no datalist JSON with a 'training' list")
    root = source.parent
    if not path.is_file():  # the folder's own index, like its metadata.csv, stays inside it
        check_index_inside(source, root)
    content = read_json(source)
    channels = parse_channels(content.get("channel_names", content.get("modality")), source)
    problems: list[Problem] = []
    cases: list[Case] = []
    for section in LABELLED_SECTIONS:
        cases += _read_section(root, source, content.get(section), section, True, problems)
    tests: list[Case] = []
    for section in TEST_SECTIONS:
        tests += _read_section(root, source, content.get(section), section, False, problems)
    problems += find_duplicates(cases + tests, source)
    single_file = all(len(c.images) == 1 for c in cases + tests)
    return CaseDataset(
        root,
        Layout.DATALIST,
        tuple(cases),
        parse_labels(content.get("labels"), source),
        channels,
        tuple(tests),
        channels_in_file=single_file and len(channels) > 1,
        problems=tuple(problems),
        index_file=source,
    )


def _read_section(
    root: Path, source: Path, entries: Any, section: str, labelled: bool, problems: list[Problem]
) -> list[Case]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        problems.append(Problem(str(source), f"'{section}' must be a list, got {type(entries).__name__}"))
        return []
    cases = []
    for index, entry in enumerate(entries):
        entry = {"image": entry} if isinstance(entry, str | list) else entry
        if not isinstance(entry, dict) or "image" not in entry:
            problems.append(Problem(str(source), f"'{section}'[{index}] has no 'image'"))
            continue
        case = _entry_case(root, source, entry, labelled, f"{section}[{index}]", problems)
        if case is not None:
            cases.append(Case(case.case_id, case.images, case.label, {**case.metadata, "split": section}))
    return cases


def _entry_case(
    root: Path, source: Path, entry: dict, labelled: bool, where: str, problems: list[Problem]
) -> Case | None:
    raw_images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    if not raw_images:
        problems.append(Problem(str(source), f"{where}: 'image' is an empty list; give one file path per channel"))
        return None
    images = []
    for raw in raw_images:
        resolved = _entry_path(root, source, raw, f"{where}: 'image'", problems)
        if resolved is not None:
            images.append(resolved)
    label = None
    if labelled:
        if entry.get("label") is None or entry.get("label") == "":
            problems.append(Problem(str(source), f"{where}: label missing for image {raw_images[0]!r}"))
        else:
            label = _entry_path(root, source, entry["label"], f"{where}: 'label'", problems)
    if not images or len(images) != len(raw_images):
        return None
    if label is not None and label in images:
        problems.append(
            Problem(
                str(source),
                f"{where}: 'label' {entry['label']!r} is the image file itself; the label must be its own file",
            )
        )
        return None
    case_id = _entry_case_id(entry, label or images[0])
    bad_id = case_id_problem(case_id, source, f"{where}: ")
    if bad_id is not None:
        problems.append(bad_id)
        return None
    extra = {k: v for k, v in entry.items() if k not in ("image", "label", "case", "id") and _plain(v)}
    return Case(case_id, images, label, extra)


def _entry_path(root: Path, source: Path, raw: Any, where: str, problems: list[Problem]) -> Path | None:
    """One path of an entry, resolved inside ``root``; a problem (and ``None``) when it is no usable path."""
    if not isinstance(raw, str):
        problems.append(
            Problem(str(source), f"{where} is {raw!r} ({type(raw).__name__}); expected a file path (a string)")
        )
        return None
    if not raw.strip():
        problems.append(Problem(str(source), f"{where} is empty; give a file path relative to {root}"))
        return None
    resolved, problem = resolve_inside(root, raw, source=source, where=f"{where}: ")
    if problem:
        problems.append(problem)
    return resolved


def _entry_case_id(entry: dict, named_after: Path) -> str:
    """The entry's ``case`` (or ``id``), else the file name of its label (or first image) without the suffix."""
    given = entry.get("case") or entry.get("id")
    return str(given) if given is not None else _case_id(named_after)


def _case_id(path: Path) -> str:
    return strip_nifti_suffix(path.name) if is_nifti(path) else path.stem


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)
