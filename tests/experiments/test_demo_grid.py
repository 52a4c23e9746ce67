"""The demo's grid and CLI without running it (the end-to-end run is the slow test in test_demo_quick.py)."""

from __future__ import annotations

from pathlib import Path

from medtransfer.cli import main
from medtransfer.experiments.demo import (
    FULL,
    LESION_FULL,
    LESION_QUICK,
    LESION_RECIPE,
    QUICK,
    demo_grid,
    lesion_demo_grid,
)
from medtransfer.experiments.spec import expand_grid, parse_grid


def _cells(size, tmp_path):
    return expand_grid(parse_grid(demo_grid(Path("bench"), size), "demo"), tmp_path)


def test_full_demo_grid_has_four_strategies_two_budgets_four_seeds_two_targets(tmp_path):
    cells = _cells(FULL, tmp_path)
    contenders = [c for c in cells if c.axes["strategy"] not in ("baseline", "oracle")]
    assert {c.axes["strategy"] for c in contenders} == {"scratch", "full", "first_k:1", "last_k:1"}
    assert len(contenders) == 2 * 4 * 2 * 4  # targets x strategies x budgets x seeds
    assert FULL.seeds == (0, 1, 2, 3)  # two seeds left a verdict that flipped between CPU kernels (demo.py)
    by_target = {t: {c.axes["budget"] for c in contenders if c.axes["target"] == t} for t in ("brain", "anatomy")}
    assert by_target == {"brain": {"n1_k4", "n1"}, "anatomy": {"n1", "n3"}}
    # a domain shift for brain extraction, a task shift (same scanner) for anatomy; no lesion target (see LESIONS_NOTE)
    pairs = {(c.axes["target"], c.axes["domain_pair"]) for c in cells}
    assert pairs == {("brain", "siemens_3t->philips_15t"), ("anatomy", "siemens_3t->siemens_3t")}
    # one baseline for brain (the brain source has no anatomy classes) and one oracle (every label) per target
    assert [c.id.split("/")[0] for c in cells if c.axes["strategy"] == "baseline"] == ["brain"]
    assert sorted(c.axes["budget"] for c in cells if c.axes["strategy"] == "oracle") == ["n1", "n3"]
    for cell in cells:
        train, task = cell.config["finetune"]["train"], cell.axes["target"] == "anatomy"
        epochs = FULL.task_epochs if task else FULL.epochs
        assert train["epochs"] == (3 * epochs if cell.axes["strategy"] == "oracle" else epochs), cell.id
    # every held-out scan is scored (24 per target), so that the paired tests can decide
    assert all("max_test_cases" not in c.config["eval"] for c in cells)
    assert {c.config["finetune"]["test_fraction"] for c in cells} == {0.75}
    assert round(FULL.subjects_per_domain * FULL.test_fraction) == 24
    assert "lesion targets are not in this demo" in demo_grid(Path("bench"), FULL)["description"]


def test_quick_demo_is_smaller(tmp_path):
    assert len(_cells(QUICK, tmp_path)) < len(_cells(FULL, tmp_path))
    assert QUICK.subjects_per_domain < FULL.subjects_per_domain
    assert QUICK.epochs * QUICK.steps_per_epoch < FULL.epochs * FULL.steps_per_epoch


def test_demo_cli_rejects_bad_workers(tmp_path, capsys):
    assert main(["demo", "--workers", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_lesion_demo_grid_runs_the_ms_recipe_for_every_trained_arm(tmp_path):
    cells = expand_grid(parse_grid(lesion_demo_grid(Path("bench"), LESION_FULL), "demo_lesions"), tmp_path)
    assert sorted(c.axes["strategy"] for c in cells) == sorted(["baseline", "scratch", "full", "first_k:1", "last_k:1"])
    assert {c.axes["target"] for c in cells} == {"ms_lesion"}
    assert {c.axes["domain_pair"] for c in cells} == {"siemens_3t->siemens_3t"}
    for cell in cells:
        finetune = cell.config["finetune"]
        assert finetune["train"] == LESION_RECIPE["train"], cell.id
        assert {k: v for k, v in finetune.items() if k in LESION_RECIPE} == LESION_RECIPE, cell.id
        assert cell.axes["budget"] == "nall"  # every training scan of the split
    source = cells[0].config["sources"]["source_domain"]
    assert source["target"] == "brain"  # brain extraction from the same scanner, the recipe's network and spacing
    assert source["finetune"]["min_component_mm3"] is None
    assert round(LESION_FULL.subjects * LESION_RECIPE["test_fraction"]) == 8  # the recipe's 8 test scans


def test_quick_lesion_demo_is_smaller():
    assert LESION_QUICK.subjects < LESION_FULL.subjects
    assert LESION_QUICK.epochs * LESION_QUICK.steps_per_epoch < LESION_FULL.epochs * LESION_FULL.steps_per_epoch


def test_lesion_demo_refuses_a_folder_holding_the_other_demo(tmp_path, capsys):
    out = tmp_path / "demo-output"
    out.mkdir()
    grid = out / "grid.yaml"
    grid.write_text("name: demo\n")
    assert main(["demo", "--lesions", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml" in err
    assert "another --out" in err
    assert grid.read_text() == "name: demo\n"  # nothing of the other run is touched
    assert sorted(p.name for p in out.iterdir()) == ["grid.yaml"]


def test_demo_refuses_a_build_of_another_size(tmp_path, capsys):
    out = tmp_path / "d"
    (out / "brainshift-lesions").mkdir(parents=True)
    (out / "brainshift-lesions" / ".demo-lesions-built").write_text(f"{LESION_QUICK}\n")
    assert main(["demo", "--lesions", "--out", str(out)]) == 2  # the full demo must not report the quick build
    assert "another size" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "brainshift-lesions").iterdir()) == [".demo-lesions-built"]
    assert not (out / "grid.yaml").exists()


def test_demo_grids_load_without_warnings(tmp_path, caplog):
    """Every exclude of the demo's grids matches a cell: the quick demo, with one seed, used to log that its
    'references on the first seed only' exclude matched nothing."""
    import logging

    with caplog.at_level(logging.WARNING):
        assert len(_cells(QUICK, tmp_path)) == 19
        assert len(_cells(FULL, tmp_path)) == 67
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_demo_refuses_a_build_of_another_simulator(tmp_path, capsys):
    """A build made before simulator 2 (its marker names no simulator) would be reported as the current one's."""
    out = tmp_path / "d"
    (out / "brainshift-lesions").mkdir(parents=True)
    (out / "brainshift-lesions" / ".demo-lesions-built").write_text(f"{LESION_QUICK}\n")  # simulator 1's marker
    assert main(["demo", "--lesions", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "brainshift simulator 2" in err
    assert sorted(p.name for p in (out / "brainshift-lesions").iterdir()) == [".demo-lesions-built"]
