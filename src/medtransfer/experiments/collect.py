"""Collect finished cells from a results folder into tidy tables (lists of flat dict rows; CSV without pandas).

Only finished cells count: a cell is read from its ``summary.json`` (see
:mod:`medtransfer.experiments.runner`), which holds the cell's axis labels and the cell function's result.

Columns of both tables start with ``grid, cell_id, target, source, strategy, budget, seed`` and, for grids
with a domain axis, ``domain_pair, source_domain, target_domain``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..utils import write_text_atomic
from .state import SUMMARY

log = logging.getLogger(__name__)


def iter_summaries(results_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every ``summary.json`` under ``results_dir`` (a results root or one grid's folder), in path order.

    Raises:
        DataError: ``results_dir`` is not a folder.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"results folder {root} does not exist")
    for path in sorted(root.rglob(SUMMARY)):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable %s: %s", path, err)
            continue
        if not isinstance(summary, dict) or "cell_id" not in summary or "result" not in summary:
            continue  # a cell function's own summary.json in a sub-folder, not a runner's
        summary["run_dir"] = str(path.parent)
        yield summary


def cell_columns(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The identifying columns of a cell: grid, cell id and its axis labels (domain pair split in two)."""
    row = {"grid": summary.get("grid"), "cell_id": summary.get("cell_id")}
    row.update(summary.get("axes") or {})
    if "domain_pair" in row and "->" in str(row["domain_pair"]):
        row["source_domain"], row["target_domain"] = str(row["domain_pair"]).split("->", 1)
    return row


def collect_cells(results_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished cell: its columns, ``duration_s`` and its aggregate ``result["metrics"]``."""
    rows = []
    for summary in iter_summaries(results_dir):
        row = cell_columns(summary)
        row["duration_s"] = summary.get("duration_s")
        row.update((summary.get("result") or {}).get("metrics") or {})
        rows.append(row)
    return rows


def collect_rows(results_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished cell x case: the cell's columns plus the case's ``result["per_case"]`` entries.

    Cells without per-case rows contribute nothing here (see :func:`collect_cells` for their aggregates).
    """
    rows = []
    for summary in iter_summaries(results_dir):
        columns = cell_columns(summary)
        for case in (summary.get("result") or {}).get("per_case") or []:
            rows.append({**columns, **case})
    return rows


def write_csv(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows to CSV atomically; the header is the union of the rows' keys in first-seen order."""
    rows = list(rows)
    header: dict[str, None] = {}
    for row in rows:
        header.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)
