"""End to end through the command line: `medtransfer grid run` (dummy cells, 2 workers) then `medtransfer report`."""

from __future__ import annotations

import re

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.experiments import collect_rows


@pytest.mark.slow
def test_grid_run_then_report(tmp_path):
    grid = {
        "name": "e2e",
        "defaults": {"kind": "dummy", "dummy": {"n_cases": 6}},
        "axes": {"target": "brain", "strategy": ["full", "last_k:1"], "budget": [1, 3], "domains": ["x", "y"]},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    results = tmp_path / "results"
    assert main(["grid", "run", str(tmp_path / "grid.yaml"), "--results", str(results), "--workers", "2"]) == 0
    assert main(["report", str(results), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    rows = collect_rows(results)
    assert len(rows) == 2 * 2 * 2 * 6
    n1 = [r for r in rows if r["budget"] == "n1"]
    means = {s: sum(r["dice"] for r in n1 if r["strategy"] == s) / 12 for s in ("full", "last_k:1")}
    winner, loser = sorted(means, key=means.get, reverse=True)
    expected = f"<strong>brain, n1</strong>: <strong>{winner}</strong> has the highest mean Dice ({means[winner]:.3f}"
    assert expected in html
    assert f"vs {means[loser]:.3f} for {loser}" in html
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 3  # budget curves + 2 heatmaps
    assert (tmp_path / "report" / "report.md").is_file()
