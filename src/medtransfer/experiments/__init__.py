"""Experiment grids: grid files (spec), resumable runner, executors (local, Ray), result collection.

The top of the pipeline: nothing below ``experiments`` imports it.  Typical use::

    spec = load_grid("grid.yaml")
    run_grid(spec, LocalExecutor(workers=2), results_root="results")
    rows = collect_rows("results/" + spec.name)
"""

from __future__ import annotations

from .collect import collect_cells, collect_rows, write_csv
from .executors import LocalExecutor, RayExecutor, create_executor
from .kinds import get_cell_function, list_cell_kinds, register_cell_kind
from .runner import CellFunction, CellOutcome, GridRun, execute_cell, grid_status, run_grid
from .spec import Cell, GridSpec, expand_grid, load_grid, parse_grid, select_cells
from .state import CellStatus, cell_status

__all__ = [
    "Cell",
    "CellFunction",
    "CellOutcome",
    "CellStatus",
    "GridRun",
    "GridSpec",
    "LocalExecutor",
    "RayExecutor",
    "cell_status",
    "collect_cells",
    "collect_rows",
    "create_executor",
    "execute_cell",
    "expand_grid",
    "get_cell_function",
    "grid_status",
    "list_cell_kinds",
    "load_grid",
    "parse_grid",
    "register_cell_kind",
    "run_grid",
    "select_cells",
    "write_csv",
]
