from __future__ import annotations

import csv
import json

import pytest

from medtransfer.errors import DataError
from medtransfer.experiments import collect_cells, collect_rows, parse_grid, run_grid, write_csv
from medtransfer.experiments.collect import scan_cells

RAW = {
    "name": "shift",
    "defaults": {"kind": "dummy", "dummy": {"n_cases": 2}},
    "axes": {"target": "brain", "strategy": ["full", "first_k:2"], "budget": [3], "domains": ["a", "b"]},
}


@pytest.fixture
def results(tmp_path):
    run_grid(parse_grid(RAW, "shift.yaml"), results_root=tmp_path, progress=False)
    return tmp_path


def test_collect_rows_one_per_cell_and_case(results):
    rows = collect_rows(results)
    assert len(rows) == 4 * 2
    first = rows[0]
    assert first["grid"] == "shift"
    assert first["cell_id"] == "brain/a_to_b/none__first_k-2/n3/seed0"
    assert (first["target"], first["strategy"], first["budget"], first["seed"]) == ("brain", "first_k:2", "n3", 0)
    assert (first["domain_pair"], first["source_domain"], first["target_domain"]) == ("a->b", "a", "b")
    assert first["case"] == "case000"
    summary = json.loads((results / "shift" / first["cell_id"] / "summary.json").read_text())
    assert first["dice"] == summary["result"]["per_case"][0]["dice"]


def test_collect_cells_holds_aggregates_and_ignores_unfinished(results):
    unfinished = results / "shift/brain/a_to_b/none__full/n3/seed0/summary.json"
    unfinished.unlink()
    cells = collect_cells(results / "shift")
    assert len(cells) == 3
    summary = json.loads((results / "shift" / cells[0]["cell_id"] / "summary.json").read_text())
    assert cells[0]["dice"] == pytest.approx(summary["result"]["metrics"]["dice"])
    assert cells[0]["duration_s"] >= 0


def test_write_csv_round_trip(results, tmp_path):
    rows = collect_rows(results)
    rows[1]["extra"] = 1  # a column only some rows have
    path = write_csv(rows, tmp_path / "table.csv")
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert len(back) == len(rows)
    assert list(back[0]) == [*rows[0], "extra"]
    assert float(back[3]["dice"]) == pytest.approx(rows[3]["dice"])
    assert back[1]["extra"] == "1"
    assert back[0]["extra"] == ""


def test_collect_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        collect_rows(tmp_path / "nope")


def test_collect_ignores_other_summary_files(results):
    nested = results / "shift/brain/a_to_b/none__full/n3/seed0/validation/summary.json"
    nested.parent.mkdir()
    nested.write_text('{"mean": {"dice": 0.5}}')  # e.g. a cell function's own nnU-Net-style summary
    assert len(collect_cells(results)) == 4


def _truncate(path):
    text = path.read_text()
    path.write_text(text[: len(text) // 2])


def test_scan_names_skipped_and_failed_cells(results):
    grid = results / "shift"
    _truncate(grid / "brain/a_to_b/none__full/n3/seed0/summary.json")
    failed = grid / "brain/b_to_a/none__full/n3/seed0"
    (failed / "summary.json").unlink()
    (failed / "error.json").write_text(json.dumps({"type": "RuntimeError", "message": "out of memory"}))
    running = grid / "brain/b_to_a/none__first_k-2/n3/seed0"
    (running / "summary.json").unlink()  # started (attempts.log, config.yaml), not finished, no lock: interrupted
    scan = scan_cells(grid)
    assert [s["cell_id"] for s in scan.summaries] == ["brain/a_to_b/none__first_k-2/n3/seed0"]
    assert [cell for cell, _ in scan.skipped] == [
        "brain/a_to_b/none__full/n3/seed0",
        "brain/b_to_a/none__first_k-2/n3/seed0",
    ]
    assert "summary.json is not valid JSON (truncated?)" in scan.skipped[0][1]
    assert scan.skipped[1][1] == "not finished (interrupted)"
    assert scan.failed == (("brain/b_to_a/none__full/n3/seed0", "RuntimeError: out of memory"),)
    assert len(collect_cells(results)) == 1
