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
    by_target = {t: {c.axes["budget"] for c in contenders if c.axes["target"] == t} for t in ("brain", "stroke_lesion")}
    assert by_target == {"brain": {"n1_k4", "n1"}, "stroke_lesion": {"n3", "nall"}}
    # a domain shift for brain extraction, a task shift (same scanner) for stroke lesions
    pairs = {(c.axes["target"], c.axes["domain_pair"]) for c in cells}
    assert pairs == {("brain", "siemens_3t->philips_15t"), ("stroke_lesion", "siemens_3t->siemens_3t")}
    # one baseline (it does not train) and one oracle (every label) per target
    assert sorted(c.axes["budget"] for c in cells if c.axes["strategy"] == "baseline") == ["n1_k4", "n3"]
    assert sorted(c.axes["budget"] for c in cells if c.axes["strategy"] == "oracle") == ["n1", "nall"]
    for cell in cells:
        train, lesion = cell.config["finetune"]["train"], cell.axes["target"] == "stroke_lesion"
        expected = FULL.lesion_epochs if lesion else 3 * FULL.epochs if cell.axes["strategy"] == "oracle" else None
        assert train["epochs"] == (expected or FULL.epochs), cell.id
        assert cell.config["finetune"].get("augment", "none") == ("spatial" if lesion else "none")
    # eight test scans per target: a paired test over them can reach p < 0.05 after Holm correction
    assert {c.config["eval"]["max_test_cases"] for c in cells} == {8}
    assert {c.config["finetune"]["test_fraction"] for c in cells} == {0.5}


def test_quick_demo_is_smaller(tmp_path):
    assert len(_cells(QUICK, tmp_path)) < len(_cells(FULL, tmp_path))
    assert QUICK.subjects_per_domain < FULL.subjects_per_domain
    assert QUICK.epochs * QUICK.steps_per_epoch < FULL.epochs * FULL.steps_per_epoch


def test_demo_cli_rejects_bad_workers(tmp_path, capsys):
    assert main(["demo", "--workers", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
