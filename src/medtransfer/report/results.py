"""Read a results folder (as :mod:`medtransfer.experiments` writes it) into what the report needs.

A finished cell is a run folder with the runner's ``summary.json`` (one that parses; the cells skipped and failed
are listed in :attr:`Results.skipped` and :attr:`Results.failed`).  From it the report takes the per-case
metric rows (``result["per_case"]``; a cell without them contributes one row of its aggregate
``result["metrics"]``), and, anywhere under the run folder, the trainer's ``history.jsonl`` (one JSON record
per epoch), the ``env.json`` provenance file, ``predictions/`` + ``reference/`` NIfTI folders (with optional
``images/``) and an ``overlays/`` folder of ready-made PNG overlays.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..experiments.collect import cell_columns, scan_cells

log = logging.getLogger(__name__)

ID_COLUMNS = (
    "grid",
    "cell_id",
    "target",
    "source",
    "strategy",
    "budget",
    "seed",
    "domain_pair",
    "source_domain",
    "target_domain",
    "case",
    "label",
    "run_dir",
    "duration_s",
)
AGGREGATE_CASE = "(cell mean)"
HISTORY_FILE = "history.jsonl"
ENV_FILE = "env.json"


@dataclass(frozen=True)
class CellRecord:
    """One finished cell: its identifying columns (axes), run folder and timing."""

    cell_id: str
    grid: str
    columns: dict[str, Any]
    run_dir: Path
    started: float | None = None
    finished: float | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class Results:
    """The finished cells of a results folder and their per-case rows (one row per cell x case).

    ``skipped`` and ``failed`` hold ``(cell folder, why)`` of the cells that are not in ``cells``: not finished
    or with an unreadable summary, and failed (see :func:`~medtransfer.experiments.collect.scan_cells`).  A metric
    written as ``null`` (strict JSON has no NaN or infinity) is NaN in ``rows``.
    """

    root: Path
    cells: tuple[CellRecord, ...]
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    skipped: tuple[tuple[str, str], ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def metrics(self) -> list[str]:
        """Numeric per-case metric columns, in first-seen order (lesion tallies such as counts are not metrics)."""
        from ..metrics.lesions import is_lesion_tally

        names: dict[str, None] = {}
        for row in self.rows:
            for key, value in row.items():
                if key not in ID_COLUMNS and _is_number(value) and not is_lesion_tally(key):
                    names[key] = None
        return list(names)

    def has_column(self, name: str) -> bool:
        return any(row.get(name) is not None for row in self.rows)


def load_results(results_dir: str | Path) -> Results:
    """Every finished cell under ``results_dir`` (a results root or one grid's folder).

    Raises:
        DataError: the folder does not exist or holds no finished cell.
    """
    root = Path(results_dir)
    cells, rows = [], []
    scan = scan_cells(root)
    for summary in scan.summaries:
        columns = cell_columns(summary)
        run_dir = Path(summary["run_dir"])
        cells.append(
            CellRecord(
                str(summary["cell_id"]),
                str(summary.get("grid")),
                columns,
                run_dir,
                summary.get("started"),
                summary.get("finished"),
                summary.get("duration_s"),
            )
        )
        rows.extend({**columns, **case, "run_dir": str(run_dir)} for case in _case_rows(summary.get("result") or {}))
    if not cells:
        unfinished = f" ({len(scan.skipped)} skipped, {len(scan.failed)} failed)" if scan.skipped or scan.failed else ""
        raise DataError(f"{root}: no finished cell (no runner summary.json) to report{unfinished}; run the grid first")
    return Results(root, tuple(cells), tuple(_nan_for_null(rows)), scan.skipped, scan.failed)


def _nan_for_null(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``null`` metric values (NaN or infinity in the cell, see :func:`medtransfer.utils.to_json`) as NaN."""
    metrics = {k for row in rows for k, v in row.items() if k not in ID_COLUMNS and _is_number(v)}
    return [{k: math.nan if v is None and k in metrics else v for k, v in row.items()} for row in rows]


def _case_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    per_case = [dict(case) for case in result.get("per_case") or [] if isinstance(case, dict)]
    if per_case:
        return per_case
    metrics = {k: v for k, v in (result.get("metrics") or {}).items() if _is_number(v)}
    return [{"case": AGGREGATE_CASE, **metrics}] if metrics else []


def find_file(run_dir: Path, name: str) -> Path | None:
    """``run_dir/name`` or else the first ``name`` below it (cell functions may nest their own run folder)."""
    direct = run_dir / name
    if direct.is_file():
        return direct
    return next(iter(sorted(run_dir.rglob(name))), None)


def find_dir(run_dir: Path, name: str) -> Path | None:
    """``run_dir/name`` or else the first folder called ``name`` below it."""
    direct = run_dir / name
    if direct.is_dir():
        return direct
    return next((p for p in sorted(run_dir.rglob(name)) if p.is_dir()), None)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``history.jsonl`` (empty when absent; unreadable lines skipped)."""
    path = find_file(run_dir, HISTORY_FILE)
    if path is None:
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("%s:%d: not a JSON record; skipped", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_env(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``env.json`` (versions, git commit, device, seed, time), or None."""
    path = find_file(run_dir, ENV_FILE)
    if path is None:
        return None
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("skipping unreadable %s: %s", path, err)
        return None
    return env if isinstance(env, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
