"""nnU-Net raw layout: ``dataset.json``, ``imagesTr/{case}_{XXXX}.nii.gz``, ``labelsTr/{case}.nii.gz``, ``imagesTs``.

Follows nnU-Net v2's ``documentation/reference/dataset-format.md``: one file per channel with a four-digit channel
suffix, ``labels`` as ``{name: value}`` and ``channel_names`` as ``{"0": name}``.  The v1 spellings (``modality``,
``labels`` as ``{"0": name}``) and v2's explicit ``"dataset"`` mapping (``{case: {"images": [...], "label": ...}}``,
paths relative to the root) are read too.  ``imagesTs`` cases are labelled when a ``labelsTs`` folder exists.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...utils import write_json_atomic
from ..io import NIFTI_SUFFIXES, is_nifti
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

logger = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"


def write_dataset_json(
    root: str | os.PathLike,
    labels: Mapping[str, int],
    channel_names: Mapping[str | int, str] | Sequence[str],
    num_training: int,
    file_ending: str = ".nii.gz",
    **extra: Any,
) -> Path:
    """Write an nnU-Net v2 ``dataset.json`` into ``root`` (atomically).

    Args:
        root: dataset folder (created if needed).
        labels: label name -> value, must contain ``background: 0`` (nnU-Net convention).
        channel_names: channel names as a list (``["T1"]``) or nnU-Net's ``{"0": "T1"}``.
        num_training: number of training cases (files in ``labelsTr``).
        file_ending: image file suffix.
        **extra: further keys (``name``, ``description``, ``licence``, ``reference``, ...), JSON-serialisable.

    Returns:
        Path of the written file.

    Example:
        >>> write_dataset_json("/tmp/ds", {"background": 0, "brain": 1}, ["T1"], 10)  # doctest: +SKIP
    """
    check_file_ending(file_ending, Path(root) / DATASET_JSON)
    labels = {str(name): int(value) for name, value in labels.items()}
    if labels.get("background") != 0:
        raise DataError(f"{root}: labels must map 'background' to 0 (nnU-Net convention), got {labels}")
    if len(set(labels.values())) != len(labels):
        raise DataError(f"{root}: label values must be unique, got {labels}")
    if isinstance(channel_names, Mapping):
        channels = {str(int(k)): str(v) for k, v in channel_names.items()}
    else:
        channels = {str(i): str(name) for i, name in enumerate(channel_names)}
    if not channels:
        raise DataError(f"{root}: at least one channel name is required")
    content = {
        "channel_names": channels,
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }
    path = Path(root) / DATASET_JSON
    write_json_atomic(path, content)
    return path


def read_json(path: Path) -> dict[str, Any]:
    """Load a JSON object, raising :class:`DataError` that names the file on any problem."""
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, got {type(content).__name__}")
    return content


def parse_labels(raw: Any, source: Path) -> dict[int, str]:
    """nnU-Net v2 ``{name: value}`` or v1/MSD ``{"value": name}`` -> ``{value: name}``.

    Region-based entries (``name: [1, 2]``, nnU-Net's region training) declare the values they list; a value only
    listed in regions is named after the first region listing it.

    Raises:
        DataError: a value that is not an integer in 0..255 or is given to two labels, or no ``0`` (background).
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError(f"{source}: 'labels' must be an object, got {type(raw).__name__}")
    if raw and all(_is_int_text(k) and isinstance(v, str) for k, v in raw.items()):
        names = {}
        for key, name in raw.items():
            _check_label_value(int(key), name, source)
            if int(key) in names:
                raise DataError(f"{source}: 'labels' lists value {int(key)} twice; each value needs one name")
            names[int(key)] = name
        return _with_background(dict(sorted(names.items())), source)
    names = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | list):
            raise DataError(f"{source}: label {name!r} has value {value!r}; expected an integer")
        if isinstance(value, int):
            _check_label_value(value, name, source)
            if value in names:
                raise DataError(
                    f"{source}: labels {names[value]!r} and {name!r} both have value {value}; "
                    "each label needs its own value"
                )
            names[value] = str(name)
    for name, value in raw.items():
        for v in value if isinstance(value, list) else []:
            if isinstance(v, bool) or not isinstance(v, int):
                raise DataError(f"{source}: region {name!r} lists {v!r}; expected integers")
            _check_label_value(v, name, source)
            names.setdefault(v, str(name))
    return _with_background(dict(sorted(names.items())), source)


MAX_LABEL = 255
"""Largest label value: label maps are stored as uint8 for training (the preprocessing cache, the classes)."""


def _check_label_value(value: int, name: Any, source: Path) -> None:
    if not 0 <= value <= MAX_LABEL:
        raise DataError(
            f"{source}: label {name!r} has value {value}; label values must be integers 0..{MAX_LABEL} (0 = background)"
        )


def _with_background(names: dict[int, str], source: Path) -> dict[int, str]:
    if names and 0 not in names:
        declared = ", ".join(f"{v}={n}" for v, n in names.items())
        raise DataError(f"{source}: 'labels' ({declared}) has no value 0; declare the background as \"background\": 0")
    return names


def check_file_ending(raw: Any, source: Path) -> str:
    """nnU-Net's ``file_ending``, one of the NIfTI endings the readers support.

    Raises:
        DataError: anything else (``None``, a number, ``"nii.gz"`` without the dot, ``".png"``, ...).
    """
    if raw not in NIFTI_SUFFIXES:
        allowed = " or ".join(repr(suffix) for suffix in NIFTI_SUFFIXES)
        raise DataError(f"{source}: 'file_ending' is {raw!r}; allowed: {allowed} (medtransfer reads NIfTI images)")
    return raw


def parse_channels(raw: Any, source: Path) -> tuple[str, ...]:
    """``{"0": "T1", "1": "FLAIR"}`` -> ``("T1", "FLAIR")`` (ordered by channel index)."""
    if raw is None:
        return ("image",)
    if isinstance(raw, list):
        return tuple(str(v) for v in raw)
    if not isinstance(raw, dict) or not all(_is_int_text(k) for k in raw):
        raise DataError(f"{source}: 'channel_names' must map channel indices to names, got {raw!r}")
    return tuple(str(raw[k]) for k in sorted(raw, key=int))


def _is_int_text(text: Any) -> bool:
    return isinstance(text, str) and text.strip().lstrip("-").isdigit()


def is_nnunet(path: Path) -> bool:
    """A folder with ``dataset.json`` and ``imagesTr/`` (not an MSD task), or a ``dataset.json`` with a mapping."""
    if not (path / DATASET_JSON).is_file():
        return False
    try:
        meta = read_json(path / DATASET_JSON)
    except DataError:
        return (path / "imagesTr").is_dir()  # let the reader report the broken dataset.json
    if "dataset" in meta:
        return True
    return (path / "imagesTr").is_dir() and not _is_msd(path, meta)


def _is_msd(path: Path, meta: dict[str, Any]) -> bool:
    """MSD ``dataset.json``: ``training`` entries name existing files without a channel suffix (4D images)."""
    training = meta.get("training")
    if not isinstance(training, list) or not training or not isinstance(training[0], dict):
        return False
    image = training[0].get("image")
    return isinstance(image, str) and (path / image).is_file()


_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<ending>\.nii(\.gz)?)$")


def read_nnunet(root: str | os.PathLike) -> CaseDataset:
    """Read an nnU-Net raw dataset folder.

    Raises:
        DataError: ``dataset.json`` is missing or not valid JSON.
    """
    root = Path(root)
    source = root / DATASET_JSON
    check_index_inside(source, root)
    meta = read_json(source)
    labels = parse_labels(meta.get("labels"), source)
    channels = parse_channels(meta.get("channel_names", meta.get("modality")), source)
    ending = check_file_ending(meta.get("file_ending", ".nii.gz"), source)
    problems: list[Problem] = []
    if "dataset" in meta:
        cases = _explicit_cases(root, meta["dataset"], source, problems)
    else:
        cases = _scan_cases(root, "imagesTr", "labelsTr", channels, ending, problems)
    tests = []
    if (root / "imagesTs").is_dir():
        test_labels = "labelsTs" if (root / "labelsTs").is_dir() else None
        tests = _scan_cases(root, "imagesTs", test_labels, channels, ending, problems)
    problems += find_duplicates(cases, source)
    problems += _num_training_problems(meta.get("numTraining"), len(cases), source)
    return CaseDataset(
        root,
        Layout.NNUNET,
        tuple(cases),
        labels,
        channels,
        tuple(tests),
        ending,
        problems=tuple(problems),
        index_file=source,
    )


def _num_training_problems(declared: Any, found: int, source: Path) -> list[Problem]:
    """dataset.json's ``numTraining`` (optional) must be a whole number equal to the training cases found."""
    if declared is None:
        return []
    whole = isinstance(declared, int) or (isinstance(declared, float) and declared.is_integer())
    if isinstance(declared, bool) or not whole:
        return [
            Problem(
                str(source),
                f"numTraining is {declared!r} ({type(declared).__name__}); it must be a whole number, the number of "
                f"training cases ({found} found)",
            )
        ]
    if int(declared) != found:
        return [Problem(str(source), f"numTraining is {int(declared)} but {found} training cases were found")]
    return []


def _scan_cases(
    root: Path, images_dir: str, labels_dir: str | None, channels: Sequence[str], ending: str, problems: list[Problem]
) -> list[Case]:
    channel_files = _group_channels(root / images_dir, ending, problems)
    label_files = _label_files(root / labels_dir, ending, problems) if labels_dir else {}
    cases = []
    for case_id in sorted(channel_files):
        files = channel_files[case_id]
        missing = [i for i in range(len(channels)) if i not in files]
        for i in missing:
            name = f"{case_id}_{i:04d}{ending}"
            problems.append(Problem(str(root / images_dir / name), f"channel file missing for case {case_id!r}"))
        extra = sorted(set(files) - set(range(len(channels))))
        for i in extra:
            problems.append(
                Problem(str(files[i]), f"channel {i} is not declared; dataset.json has {len(channels)} channel(s)")
            )
        label = label_files.pop(case_id, None)
        if labels_dir and label is None:
            expected = root / labels_dir / f"{case_id}{ending}"
            problems.append(Problem(str(expected), f"label missing for case {case_id!r}"))
        images = [files[i] for i in range(len(channels)) if i in files]
        cases.append(Case(case_id, images, label))
    for case_id, path in sorted(label_files.items()):
        problems.append(Problem(str(path), f"label has no image: expected {images_dir}/{case_id}_0000{ending}"))
    return cases


def _group_channels(folder: Path, ending: str, problems: list[Problem]) -> dict[str, dict[int, Path]]:
    groups: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        problems.append(Problem(str(folder), "folder missing"))
        return groups
    other_ending, ignored = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir() or not is_nifti(path):  # README.txt, Thumbs.db, a backup folder: nnU-Net ignores them too
            ignored.append(path.name)
            continue
        match = _CHANNEL_RE.match(path.name)
        if match and match["ending"] != ending:
            other_ending.append(path)
            continue
        if not match:
            problems.append(Problem(str(path), f"not named {{case}}_{{XXXX}}{ending} (nnU-Net channel file)"))
            continue
        groups.setdefault(match["case"], {})[int(match["channel"])] = path
    problems += _ending_problems(folder, other_ending, ending)
    _warn_ignored(folder, ignored)
    return groups


_WARNED: set[tuple[str, tuple[str, ...]]] = set()


def _warn_ignored(folder: Path, ignored: Sequence[str]) -> None:
    """Warn that ``folder``'s entries ``ignored`` (not NIfTI) are left out -- once per process for the same entries,
    not on every load of the dataset (a grid loads it once per cell)."""
    key = (str(folder.resolve()), tuple(ignored))
    if not ignored or key in _WARNED:
        return
    _WARNED.add(key)
    shown = ", ".join(ignored[:3]) + (f" and {len(ignored) - 3} more" if len(ignored) > 3 else "")
    logger.warning(
        "%s: ignoring %d entr%s that %s not NIfTI: %s",
        folder,
        len(ignored),
        "y" if len(ignored) == 1 else "ies",
        "is" if len(ignored) == 1 else "are",
        shown,
    )


def _label_files(folder: Path, ending: str, problems: list[Problem]) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files, ignored = [], []
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            (files if path.is_file() and is_nifti(path) else ignored).append(path)
    _warn_ignored(folder, [p.name for p in ignored])
    other = [p for p in files if not p.name.endswith(ending) and p.name.endswith(NIFTI_SUFFIXES)]
    problems += _ending_problems(folder, other, ending)
    return {p.name[: -len(ending)]: p for p in files if p.name.endswith(ending)}


def _ending_problems(folder: Path, files: Sequence[Path], ending: str) -> list[Problem]:
    """One problem for the NIfTI files of ``folder`` whose ending is not dataset.json's ``file_ending``."""
    if not files:
        return []
    found = sorted({".nii.gz" if p.name.endswith(".nii.gz") else ".nii" for p in files})
    return [
        Problem(
            str(folder),
            f"{len(files)} file(s) end in {' and '.join(found)} (e.g. {files[0].name}) but dataset.json's "
            f"'file_ending' is {ending!r}; every file must end in 'file_ending' (rename the files or set "
            f'"file_ending": "{found[0]}")',
        )
    ]


def _explicit_cases(root: Path, mapping: Any, source: Path, problems: list[Problem]) -> list[Case]:
    if not isinstance(mapping, dict):
        raise DataError(f"{source}: 'dataset' must map case ids to {{'images': [...], 'label': ...}}")
    cases = []
    for case_id, entry in mapping.items():
        bad_id = case_id_problem(case_id, source, "'dataset': ")
        if bad_id is not None:
            problems.append(bad_id)
            continue
        if not isinstance(entry, dict) or "images" not in entry:
            problems.append(Problem(str(source), f"case {case_id!r}: entry must have 'images' (and 'label')"))
            continue
        where = f"case {case_id!r}: "
        images = [resolve_inside(root, p, source=source, where=where) for p in _as_list(entry["images"])]
        label = resolve_inside(root, entry["label"], source=source, where=where) if entry.get("label") else (None, None)
        problems.extend(p for _, p in [*images, label] if p is not None)
        paths = [p for p, _ in images if p is not None]
        if label[0] is not None and label[0] in paths:
            problems.append(
                Problem(
                    str(source), f"{where}'label' {entry['label']!r} is an image file; the label must be its own file"
                )
            )
            continue
        cases.append(Case(str(case_id), paths, label[0]))
    return cases


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
