"""Optional ``metadata.csv`` next to the data: one row per case (``case``, ``subject``, ``domain``, ...).

Every column becomes an entry of :attr:`Case.metadata`; ``subject`` defaults to the case id.  Values that the layout
already knows (e.g. CC359's domain parsed from file names) are overridden by the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import unicodedata
from pathlib import Path

from ...errors import DataError
from .base import Case, CaseDataset, Problem, outside_root_problem

METADATA_CSV = "metadata.csv"

logger = logging.getLogger(__name__)


def read_metadata_csv(path: Path) -> dict[str, dict[str, str]]:
    """``{case_id: {column: value}}`` from a CSV with a ``case`` column.

    Raises:
        DataError: unreadable file, no ``case`` column, or a case listed twice.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's "CSV UTF-8" starts with a BOM
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable CSV ({err})") from err
    if rows and "case" not in rows[0]:
        raise DataError(f"{path}: needs a 'case' column; columns are {list(rows[0])}")
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        case_id = (row.pop("case") or "").strip()
        if case_id in table:
            raise DataError(f"{path}: case {case_id!r} is listed twice")
        table[case_id] = {k: (v or "").strip() for k, v in row.items() if k is not None}
    return table


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def attach_metadata(dataset: CaseDataset, path: Path | None = None) -> CaseDataset:
    """Return ``dataset`` with ``metadata.csv`` rows merged into each case and ``subject`` always set.

    The dataset's own ``metadata.csv`` must lie inside its root (a symlink pointing out is a problem, and it is not
    read), and at least one of its rows must name a case of the dataset (else a problem: the ``case`` column holds
    something else, e.g. file names).
    """
    problems: list[Problem] = []
    if path is None:
        path = dataset.root / METADATA_CSV
        outside = outside_root_problem(path, dataset.root) if path.is_symlink() else None
        if outside is not None:
            problems.append(outside)
    table = read_metadata_csv(path) if path.is_file() and not problems else {}
    # one spelling of accented ids: macOS stores file names decomposed (NFD), a spreadsheet writes composed (NFC)
    table = {_nfc(case_id): row for case_id, row in table.items()}
    known = {_nfc(case.case_id) for case in dataset.cases + dataset.test_cases}
    extra = sorted(set(table) - known)
    if extra and known and len(extra) == len(table):
        problems.append(
            Problem(
                str(path),
                f"none of its {len(table)} row(s) names a case of the dataset (its 'case' column has e.g. "
                f"{', '.join(repr(c) for c in extra[:3])}; the dataset's case ids are e.g. "
                f"{', '.join(repr(c) for c in sorted(known)[:3])}); the 'case' column must hold case ids",
            )
        )
    elif extra:  # harmless (e.g. a subset of a larger dataset): a warning, not a problem
        logger.warning("%s: %d listed case(s) are not in the dataset, e.g. %s", path, len(extra), extra[:3])

    def merge(case: Case) -> Case:
        metadata = {**case.metadata, **table.get(_nfc(case.case_id), {})}
        metadata["subject"] = metadata.get("subject") or case.case_id
        return dataclasses.replace(case, metadata=metadata)

    return dataset.replace(
        cases=tuple(merge(c) for c in dataset.cases),
        test_cases=tuple(merge(c) for c in dataset.test_cases),
        problems=dataset.problems + tuple(problems),
    )
