"""What every dataset layout produces: :class:`Case`, :class:`CaseDataset` and reading :class:`Problem` s.

A reader walks a folder (or a datalist file), pairs images with labels and returns a :class:`CaseDataset`.  It never
stops at the first structural problem (missing label, missing channel file, a path escaping the root, a duplicate
case id): each is recorded as a :class:`Problem` so that ``medtransfer data check`` can list them all, and
:func:`medtransfer.data.layouts.load_dataset` raises one :class:`~medtransfer.errors.DataError` naming every problem
when ``strict``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ...errors import DataError


class Layout(StrEnum):
    """Dataset layouts that :func:`~medtransfer.data.layouts.load_dataset` recognises."""

    NNUNET = "nnunet"
    DATALIST = "datalist"
    CC359 = "cc359"
    FOLDERS = "folders"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        file: the file (or folder) concerned.
        message: what is wrong, what was found and what is allowed.
        outside_root: the file lies outside the dataset root (a ``..`` path, a symlink pointing out): its case is
            left out, so a reader that tolerates other problems (``strict=False``) still refuses this one.
    """

    file: str
    message: str
    outside_root: bool = False

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Case:
    """One scan: its channel files, its label file (or ``None``) and free-form metadata.

    Attributes:
        case_id: unique id within the dataset.
        images: one path per channel (a single 4D file counts as one entry holding every channel).
        label: label map path, or ``None`` for unlabelled cases.
        metadata: e.g. ``subject``, ``domain``, ``vendor`` (from the layout or ``metadata.csv``).

    Example:
        >>> case = Case("CC0001", [Path("CC0001.nii.gz")], None, {"domain": "philips_15"})
        >>> case.subject, case.domain
        ('CC0001', 'philips_15')
    """

    case_id: str
    images: Sequence[Path]
    label: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        if self.label is not None:
            object.__setattr__(self, "label", Path(self.label))

    @property
    def subject(self) -> str:
        """Subject id (defaults to the case id): splits never separate cases of one subject."""
        return str(self.metadata.get("subject") or self.case_id)

    @property
    def domain(self) -> str | None:
        """Acquisition domain (scanner vendor x field strength, site, ...), if known."""
        value = self.metadata.get("domain")
        return None if value in (None, "") else str(value)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of the case: channels then label."""
        return self.images + ((self.label,) if self.label is not None else ())


@dataclass(frozen=True)
class CaseDataset:
    """A collection of cases read from one dataset root.

    Every file stays inside ``root`` after resolving symlinks, whatever the layout: a case with a file elsewhere (a
    symlink pointing out, a ``..`` path) is left out and each such file is recorded in :attr:`problems`, as the
    datalist refuses paths that leave its folder.

    Attributes:
        root: dataset root folder; every path stays inside it.
        layout: which reader produced it.
        cases: labelled (training) cases, in a stable order.
        label_names: label value -> name (``{0: "background", 1: "brain"}``); empty when not declared.
        channel_names: one name per input channel.
        test_cases: held-out cases (nnU-Net's ``imagesTs``, labelled only with ``labelsTs``; datalist ``test``).
        file_ending: image file suffix.
        channels_in_file: True when one file holds every channel as a 4th axis (MSD); False for one file per channel.
        problems: structural problems found while reading (see module docstring).
    """

    root: Path
    layout: Layout
    cases: tuple[Case, ...]
    label_names: dict[int, str] = field(default_factory=dict)
    channel_names: tuple[str, ...] = ("image",)
    test_cases: tuple[Case, ...] = ()
    file_ending: str = ".nii.gz"
    channels_in_file: bool = False
    problems: tuple[Problem, ...] = ()

    def __post_init__(self) -> None:
        problems = list(self.problems)
        object.__setattr__(self, "cases", _inside_root(self.root, self.cases, problems))
        object.__setattr__(self, "test_cases", _inside_root(self.root, self.test_cases, problems))
        object.__setattr__(self, "problems", tuple(problems))

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    @property
    def case_ids(self) -> list[str]:
        return [case.case_id for case in self.cases]

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def get(self, case_id: str) -> Case:
        """The case with this id (training cases first, then test cases)."""
        for case in self.cases + self.test_cases:
            if case.case_id == case_id:
                return case
        raise DataError(f"{self.root}: no case {case_id!r}; there are {len(self.cases)} cases")

    @property
    def domains(self) -> list[str]:
        """Sorted distinct domains of the training cases (cases without one are left out)."""
        return sorted({case.domain for case in self.cases if case.domain is not None})

    def subset(self, case_ids: Sequence[str]) -> list[Case]:
        """The cases with these ids, in the given order (e.g. ``dataset.subset(split.train)``)."""
        return [self.get(case_id) for case_id in case_ids]

    def replace(self, **changes: Any) -> CaseDataset:
        return dataclasses.replace(self, **changes)


def resolve_inside(root: Path, relative: str | os.PathLike, *, source: Path) -> tuple[Path | None, Problem | None]:
    """Resolve ``relative`` against ``root`` and refuse paths that leave it.

    Returns:
        ``(path, None)`` when the path stays inside ``root`` (it need not exist), else ``(None, problem)``.
    """
    text = str(relative)
    candidate = Path(text)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return None, Problem(str(source), f"path {text!r} {_ESCAPES.format(root=root)}", outside_root=True)
    return resolved, None


_ESCAPES = "escapes the dataset root {root}; paths must stay inside it"


def _inside_root(root: Path, cases: Sequence[Case], problems: list[Problem]) -> tuple[Case, ...]:
    """The cases whose files all resolve inside ``root``; one problem per file that does not (symlinks followed)."""
    inside = root.resolve()
    kept = []
    for case in cases:
        resolved = [(path, path.resolve()) for path in case.files]
        outside = [(path, target) for path, target in resolved if not target.is_relative_to(inside)]
        problems += [
            Problem(str(path), f"links to {target}, which {_ESCAPES.format(root=root)}", outside_root=True)
            for path, target in outside
        ]
        if not outside:
            kept.append(case)
    return tuple(kept)


def find_duplicates(cases: Sequence[Case], source: Path) -> list[Problem]:
    """One problem per case id that occurs more than once."""
    seen: dict[str, int] = {}
    for case in cases:
        seen[case.case_id] = seen.get(case.case_id, 0) + 1
    return [
        Problem(str(source), f"duplicate case id {cid!r} ({n} times); case ids must be unique")
        for cid, n in seen.items()
        if n > 1
    ]
