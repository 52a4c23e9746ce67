"""The demo's grid and CLI without running it (the end-to-end run is the slow test in test_demo_quick.py)."""

from __future__ import annotations

from pathlib import Path

from medtransfer.cli import main
from medtransfer.experiments.demo import FULL, QUICK, demo_grid
from medtransfer.experiments.spec import expand_grid, parse_grid


def _cells(size, tmp_path):
    return expand_grid(parse_grid(demo_grid(Path("bench"), size), "demo"), tmp_path)


def test_full_demo_grid_has_four_strategies_two_budgets_two_seeds_two_targets(tmp_path):
    cells = _cells(FULL, tmp_path)
    contenders = [c for c in cells if c.axes["strategy"] not in ("baseline", "oracle")]
    assert {c.axes["strategy"] for c in contenders} == {"scratch", "full", "first_k:1", "last_k:1"}
    assert len(contenders) == 2 * 4 * 2 * 2  # targets x strategies x budgets x seeds
    assert {c.axes["domain_pair"] for c in cells} == {"siemens_3t->philips_15t"}
    # one baseline per target (it does not train), one oracle per target and budget
    assert sum(c.axes["strategy"] == "baseline" for c in cells) == 2
    assert sum(c.axes["strategy"] == "oracle" for c in cells) == 4
    for cell in cells:
        expected = 3 * FULL.epochs if cell.axes["strategy"] == "oracle" else None
        expected = expected or (2 * FULL.epochs if cell.axes["target"] == "stroke_lesion" else FULL.epochs)
        assert cell.config["finetune"]["train"]["epochs"] == expected, cell.id


def test_quick_demo_is_smaller(tmp_path):
    assert len(_cells(QUICK, tmp_path)) < len(_cells(FULL, tmp_path))
    assert QUICK.subjects_per_domain < FULL.subjects_per_domain
    assert QUICK.epochs * QUICK.steps_per_epoch < FULL.epochs * FULL.steps_per_epoch


def test_demo_cli_rejects_bad_workers(tmp_path, capsys):
    assert main(["demo", "--workers", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
