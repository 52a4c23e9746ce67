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
import unicodedata
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
        outside_root: the file lies outside the dataset root (a ``..`` path, a symlink pointing out), or a case id
            would name one (``../x``, see :func:`case_id_problem`): its case is left out, so a reader that tolerates
            other problems (``strict=False``) still refuses this one.
        bad_case_id: a case id that cannot name a file (:func:`case_id_problem`); its case is left out.
    """

    file: str
    message: str
    outside_root: bool = False
    bad_case_id: bool = False

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
    datalist refuses paths that leave its folder.  Likewise every case id is a safe file name stem (see
    :func:`case_id_problem`): later stages name files after it (``predictions/{case}.nii.gz``).

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
        index_file: the JSON file that declares (or would declare) ``labels`` and ``channel_names``
            (``dataset.json``, the datalist); ``None`` when the layout fixes them (CC359).
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
    index_file: Path | None = None

    def __post_init__(self) -> None:
        problems = list(self.problems)
        for name in ("cases", "test_cases"):
            kept = _inside_root(self.root, _safe_ids(self.root, getattr(self, name), problems), problems)
            object.__setattr__(self, name, kept)
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


def resolve_inside(
    root: Path, relative: str | os.PathLike, *, source: Path, where: str = ""
) -> tuple[Path | None, Problem | None]:
    """Resolve ``relative`` against ``root`` and refuse paths that leave it.

    Args:
        where: prefix of the problem message (e.g. ``"training[3]: "``) saying which entry holds the path.

    Returns:
        ``(path, None)`` when the path stays inside ``root`` (it need not exist), else ``(None, problem)``; an empty
        path or one with a NUL character is a problem too.
    """
    text = str(relative)
    if not text.strip():
        return None, Problem(str(source), f"{where}the path is empty; give a file path relative to {root}")
    if "\0" in text:
        return None, Problem(
            str(source), f"{where}path {text!r} contains a NUL character (\\u0000); give a plain file path"
        )
    candidate = Path(text)
    unresolved = candidate if candidate.is_absolute() else root / candidate
    try:
        resolved = unresolved.resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, an over-long name, ...
        return None, Problem(str(source), f"{where}path {text!r} cannot be resolved ({err})")
    if not resolved.is_relative_to(root.resolve()):
        if _lexically_inside(unresolved, root):
            message = f"{where}path {text!r} links to {resolved}, which {ESCAPES.format(root=root)}"
        else:
            message = f"{where}path {text!r} {ESCAPES.format(root=root)}"
        return None, Problem(str(source), message, outside_root=True)
    return resolved, None


CASE_ID_MAX_BYTES = 200
"""Longest case id (UTF-8 bytes): files named after it add up to ~25 characters (``{case}-<hash>_image.npy``,
``{case}_0000.nii.gz``) and a file name may hold 255 bytes."""

CASE_ID_ALLOWED = (
    "may hold only letters and digits (any script, accents included), '_', '-', '.', '+' and inner spaces, may not "
    f"start with '.' or hold '..', and must fit in {CASE_ID_MAX_BYTES} bytes"
)

_CASE_ID_PUNCTUATION = frozenset("_-.+ ")  # '+': names such as T1+C; safe in file names and CSV


def case_id_error(case_id: str) -> str | None:
    """Why ``case_id`` cannot be a case id, or ``None`` when it can.

    Later stages build file names from case ids (``predictions/{case}.nii.gz``, the cache's ``{case}_image.npy``,
    links ``images/{case}.nii.gz``) and write them into CSV files, so an id must be a plain file name stem: letters
    and digits of any script (with their accents: macOS stores them decomposed), ``_``, ``-``, ``.`` and spaces
    inside; not empty, not starting with ``.`` (hidden files, ``..``), no ``..``, no leading or trailing space, and
    at most :data:`CASE_ID_MAX_BYTES` bytes.  Every id the layouts derive from ordinary file names passes
    (``case_0000``, ``BRATS_001``, ``CC0001``, ``siemens_3_007``, ``café``).

    Example:
        >>> case_id_error("BRATS_001") is None
        True
        >>> case_id_error("../x")
        "contains '/'"
    """
    if not case_id:
        return "is empty"
    bad = sorted({c for c in case_id if c not in _CASE_ID_PUNCTUATION and unicodedata.category(c)[0] not in "LNM"})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        return f"contains {shown}"
    if case_id.startswith("."):
        return "starts with '.'"
    if ".." in case_id:
        return "contains '..'"
    if case_id != case_id.strip():
        return "starts or ends with a space"
    if len(case_id.encode("utf-8")) > CASE_ID_MAX_BYTES:
        return f"is {len(case_id.encode('utf-8'))} bytes long"
    return None


def case_id_problem(case_id: str, source: str | os.PathLike, where: str = "") -> Problem | None:
    """A :class:`Problem` naming ``source`` when ``case_id`` is not allowed (see :func:`case_id_error`), else ``None``.

    An id that could lead out of a folder (``/``, ``\\``, ``..``) is marked :attr:`Problem.outside_root`.

    Args:
        source: the file the id comes from (``dataset.json``, the datalist, the image it is named after).
        where: prefix of the message saying which entry holds the id (e.g. ``"training[3]: "``).
    """
    reason = case_id_error(case_id)
    if reason is None:
        return None
    escapes = "/" in case_id or "\\" in case_id or ".." in case_id
    return Problem(
        str(source),
        f"{where}case id {case_id!r} {reason}; case ids name files (predictions/{{case}}.nii.gz), so a case id "
        f"{CASE_ID_ALLOWED}",
        outside_root=escapes,
        bad_case_id=True,
    )


def _safe_ids(root: Path, cases: Sequence[Case], problems: list[Problem]) -> tuple[Case, ...]:
    """The cases whose ids are allowed; one problem (naming the case's first file) per case that is not."""
    kept = []
    for case in cases:
        problem = case_id_problem(case.case_id, case.files[0] if case.files else root)
        if problem is None:
            kept.append(case)
        else:
            problems.append(problem)
    return tuple(kept)


def _lexically_inside(path: Path, root: Path) -> bool:
    """``path`` lies inside ``root`` by its name alone (no ``..`` leaving it), so only a symlink can take it out."""
    return Path(os.path.normpath(path.absolute())).is_relative_to(Path(os.path.normpath(root.absolute())))


ESCAPES = "escapes the dataset root {root}; paths must stay inside it"


def _inside_root(root: Path, cases: Sequence[Case], problems: list[Problem]) -> tuple[Case, ...]:
    """The cases whose files all resolve inside ``root``; one problem per file that does not (symlinks followed)."""
    inside = root.resolve()
    kept = []
    for case in cases:
        found = [outside_root_problem(path, root, inside) for path in case.files]
        bad = [problem for problem in found if problem is not None]
        problems += bad
        if not bad:
            kept.append(case)
    return tuple(kept)


def outside_root_problem(path: Path, root: Path, inside: Path | None = None) -> Problem | None:
    """A problem when ``path`` resolves (symlinks followed) outside ``root``, or cannot be resolved (a link loop)."""
    inside = root.resolve() if inside is None else inside
    try:
        target = path.resolve()
    except (OSError, RuntimeError, ValueError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        return Problem(str(path), f"cannot be resolved ({err}); give a file or a symlink to one", outside_root=True)
    if target.is_relative_to(inside):
        return None
    return Problem(str(path), f"links to {target}, which {ESCAPES.format(root=root)}", outside_root=True)


def check_index_inside(path: Path, root: Path) -> None:
    """Refuse a dataset's own index file (``dataset.json``) that is a symlink leading out of ``root``: like every
    file of a dataset, it must lie inside the dataset folder.

    Raises:
        DataError: naming the link and where it leads.
    """
    outside = outside_root_problem(path, root) if path.is_symlink() else None
    if outside is not None:
        raise DataError(f"{outside.file}: {outside.message}")


REFERENCE_1MM = "labelsTr_1mm"
"""Optional folder of reference labels on a 1 mm grid, ``labelsTr_1mm/{case}.nii.gz`` (surface Dice at 1 mm)."""


def reference_labels(dataset: CaseDataset) -> tuple[dict[str, Path], list[Problem]]:
    """The 1 mm reference labels of ``dataset`` (``labelsTr_1mm/{case}.nii.gz``) that lie inside its root.

    Returns:
        ``({case id: file}, problems)``: a file that links out of the root, names no case of the dataset or is not
        named ``{case}.nii.gz`` (how the evaluation looks it up) is a problem, not a reference.
    """
    folder = dataset.root / REFERENCE_1MM
    if not folder.is_dir():
        return {}, []
    known = {case.case_id for case in dataset.cases + dataset.test_cases}
    inside = dataset.root.resolve()
    found: dict[str, Path] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        outside = outside_root_problem(path, dataset.root, inside)
        if outside is not None:
            problems.append(outside)
        elif not path.name.endswith(".nii.gz"):
            problems.append(
                Problem(str(path), f"not named {{case}}.nii.gz; {REFERENCE_1MM} holds one {{case}}.nii.gz per case")
            )
        elif path.name[: -len(".nii.gz")] not in known:
            problems.append(
                Problem(str(path), f"no case {path.name[: -len('.nii.gz')]!r} in the dataset for this 1 mm reference")
            )
        else:
            found[path.name[: -len(".nii.gz")]] = path
    return found, problems


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


def duplicate_files(entries: Sequence[tuple[str, Path]]) -> tuple[dict[str, Path], list[Problem]]:
    """Index ``(case id, file)`` pairs by case id; the first file of an id is kept.

    Returns:
        ``({case id: first file}, problems)``, one problem per further file of an id, naming both files.
    """
    kept: dict[str, Path] = {}
    problems = []
    for case_id, path in entries:
        if case_id in kept:
            problems.append(
                Problem(
                    str(path),
                    f"case id {case_id!r} is also the case id of {kept[case_id]}; case ids must be unique "
                    "(rename or remove one of the two files)",
                )
            )
        else:
            kept[case_id] = path
    return kept, problems
