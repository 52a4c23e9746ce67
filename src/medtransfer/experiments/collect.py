"""Collect finished cells from a results folder into tidy tables (lists of flat dict rows; CSV without pandas).

Only finished cells count: a cell is read from its ``summary.json`` (see
:mod:`medtransfer.experiments.runner`), which holds the cell's axis labels and the cell function's result.
:func:`scan_cells` also says which cells it skipped and why (not finished, a summary that does not parse, a cell
its grid no longer has: :data:`~medtransfer.experiments.state.GRID_CELLS`) and which failed, so that nothing is
dropped without a word.

Columns of both tables start with ``grid, cell_id, target, source, strategy, budget, seed`` and, for grids
with a domain axis, ``domain_pair, source_domain, target_domain``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..utils import write_text_atomic
from .state import (
    CONFIG,
    ERROR,
    GRID_CELLS,
    SUMMARY,
    CellStatus,
    cell_status,
    read_json,
    read_summary,
    summary_problem,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellScan:
    """The cells of a results folder.

    Attributes:
        summaries: the runner summaries of the finished cells (with ``run_dir`` added), in path order.
        skipped: ``(run folder, why)`` of the cells that are not read: not finished (running, interrupted,
            pending) or with a ``summary.json`` that does not parse; run folders relative to the scanned one.
        failed: ``(run folder, error)`` of the cells whose last attempt failed (their ``error.json``).
    """

    summaries: tuple[dict[str, Any], ...]
    skipped: tuple[tuple[str, str], ...] = ()
    failed: tuple[tuple[str, str], ...] = ()


def scan_cells(results_dir: str | Path) -> CellScan:
    """Every cell under ``results_dir`` (a results root or one grid's folder): read, skipped or failed.

    A cell's run folder is one with a runner ``summary.json`` or a runner ``config.yaml`` (it names the cell
    under ``grid.cell_id``); the run folders that cell functions nest inside (``train/``, ...) are not cells.

    Raises:
        DataError: ``results_dir`` is not a folder.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"results folder {root} does not exist")
    summaries, skipped, failed = [], [], []
    folders = sorted({p.parent for name in (SUMMARY, CONFIG) for p in root.rglob(name)})
    # hidden folders are work in progress (a rerun's staging folder, ``.seed0.rerun``), not results
    folders = [f for f in folders if not any(part.startswith(".") for part in f.relative_to(root).parts)]
    grids: dict[Path, dict[str, Any] | None] = {}
    for run_dir in folders:
        summary = read_summary(run_dir)
        name = run_dir.relative_to(root).as_posix()
        if summary is None and not _is_cell_folder(run_dir):
            continue
        config = _read_yaml(run_dir / CONFIG) if summary is None else None
        cell_id = summary.get("cell_id") if summary is not None else ((config or {}).get("grid") or {}).get("cell_id")
        if orphan := _not_in_grid(run_dir, str(cell_id), grids):
            skipped.append((name, orphan))
        elif summary is not None:
            summaries.append({**summary, "run_dir": str(run_dir)})
        else:
            _sort_unfinished(run_dir, name, skipped, failed)
    for cell, why in skipped:
        log.warning("skipped cell %s: %s", cell, why)
    return CellScan(tuple(summaries), tuple(skipped), tuple(failed))


def _not_in_grid(run_dir: Path, cell_id: str, grids: dict[Path, dict[str, Any] | None]) -> str | None:
    """Why a cell's run folder is left out when its grid no longer has the cell (the grid's :data:`GRID_CELLS`, as
    its last ``grid run`` wrote it, does not list it); None when it does, or when the grid wrote no such list."""
    depth = len([p for p in cell_id.split("/") if p])
    if depth == 0 or len(run_dir.parents) < depth:
        return None
    folder = run_dir.parents[depth - 1]
    if folder not in grids:
        listing = read_json(folder / GRID_CELLS)
        grids[folder] = listing if isinstance(listing, dict) and isinstance(listing.get("cells"), list) else None
    listing = grids[folder]
    if listing is None or cell_id in listing["cells"]:
        return None
    return (
        f"not a cell of grid {listing.get('grid')} at its last grid run (excluded or no longer on its axes): left "
        "out; delete the folder, or put the cell back in the grid"
    )


def _is_cell_folder(run_dir: Path) -> bool:
    config = _read_yaml(run_dir / CONFIG)
    return isinstance(config, dict) and isinstance(config.get("grid"), dict) and "cell_id" in config["grid"]


def _sort_unfinished(run_dir: Path, name: str, skipped: list, failed: list) -> None:
    problem = summary_problem(run_dir)
    if problem:
        skipped.append((name, problem))
        return
    status = cell_status(run_dir)
    if status is CellStatus.FAILED:
        error = read_json(run_dir / ERROR) or {}
        failed.append((name, f"{error.get('type', '?')}: {error.get('message', '')}"))
    else:
        skipped.append((name, f"not finished ({status.value})"))


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def iter_summaries(results_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every finished cell's ``summary.json`` under ``results_dir``, in path order (see :func:`scan_cells`).

    Raises:
        DataError: ``results_dir`` is not a folder.
    """
    yield from scan_cells(results_dir).summaries


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
