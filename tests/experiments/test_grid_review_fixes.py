"""Review fixes of the grid, report and strategies commands: changed configs, value checks at load, YAML errors,
report folders, --only, strategies specs."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.experiments import load_grid

DUMMY = {
    "name": "g",
    "defaults": {"kind": "dummy", "dummy": {"n_cases": 3}},
    "axes": {"target": "brain", "strategy": ["scratch", "full"], "seed": [0, 1]},
}
FINETUNE = {
    "name": "ft",
    "defaults": {
        "kind": "finetune",
        "data": {"root": "nowhere", "datasets": {"brain": "Dataset001"}},
        "finetune": {"model": "unet", "train": {"epochs": 1, "optimizer": "adam"}},
    },
    "axes": {"target": "brain", "strategy": ["scratch", "full", "first_k:1"], "seed": [0]},
}


def _write(tmp_path: Path, grid: dict, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid))
    return path


def _error(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 2: a finished cell whose config changed -----------------------------------------------------------------


def test_a_changed_finished_cell_is_refused_before_any_work(tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["grid", "run", str(_write(tmp_path, DUMMY)), "--results", str(results)]) == 0
    before = _tree(results)
    changed = {**DUMMY, "defaults": {"kind": "dummy", "dummy": {"n_cases": 3, "level": 0.9}}}
    changed["axes"] = {**DUMMY["axes"], "seed": [0, 1, 2]}  # new cells too: none of them may run
    grid = _write(tmp_path, changed)
    capsys.readouterr()
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 2
    assert _error(capsys) == [
        f"error: {grid}: cell brain/none__scratch/nall/seed0 finished with another config (dummy.level changed "
        "since) (and 3 more finished cells); nothing was run: rerun with --rerun-changed to replace their results, "
        "or write to another --results folder"
    ]
    assert _tree(results) == before  # nothing run, nothing touched
    assert main(["grid", "status", str(grid), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "dummy.level; grid run --rerun-changed reruns it" in out


def test_rerun_changed_replaces_the_changed_cells_results(tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["grid", "run", str(_write(tmp_path, DUMMY)), "--results", str(results)]) == 0
    changed = {**DUMMY, "overrides": [{"when": {"strategy": "full"}, "set": {"dummy": {"level": 0.9}}}]}
    grid = _write(tmp_path, changed)
    capsys.readouterr()
    assert main(["grid", "run", str(grid), "--results", str(results), "--rerun-changed"]) == 0
    assert "grid g: 2 ran, 2 already done, 0 failed" in capsys.readouterr().out
    cell = results / "g" / "brain" / "none__full" / "nall" / "seed0"
    assert yaml.safe_load((cell / "config.yaml").read_text())["dummy"]["level"] == 0.9
    assert (cell / "attempts.log").read_text() == "start\n"  # a fresh folder, not the old one resumed
    assert json.loads((cell / "summary.json").read_text())["result"]["metrics"]["dice"] > 0.8
    assert not [p for p in results.rglob("*") if p.name.startswith(".") and "rerun" in p.name]  # no staging left
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 0  # now consistent: nothing to do
    assert "grid g: 0 ran, 4 already done" in capsys.readouterr().out


def test_a_rerun_another_process_moved_in_meanwhile_is_not_run_again(tmp_path, capsys):
    """Process B found the cell changed when it started; process A reran it and moved it in before B got to it."""
    import dataclasses

    from medtransfer.experiments.runner import execute_cell, staging_dir
    from medtransfer.experiments.spec import expand_grid

    results = tmp_path / "res"
    assert main(["grid", "run", str(_write(tmp_path, DUMMY)), "--results", str(results)]) == 0
    changed = {**DUMMY, "overrides": [{"when": {"strategy": "full"}, "set": {"dummy": {"level": 0.9}}}]}
    grid = _write(tmp_path, changed)
    cell = next(c for c in expand_grid(load_grid(grid), results) if c.id.endswith("none__full/nall/seed0"))
    staged_by_b = dataclasses.replace(cell, run_dir=staging_dir(cell), replaces=cell.run_dir)
    assert main(["grid", "run", str(grid), "--results", str(results), "--rerun-changed"]) == 0  # process A
    before = _tree(cell.run_dir)
    calls = []
    outcome = execute_cell(staged_by_b, lambda *a, **k: calls.append(a) or {})
    assert (outcome.status, outcome.skipped, calls) == ("done", True, [])
    assert _tree(cell.run_dir) == before
    assert not staging_dir(cell).exists()


def test_a_failed_rerun_leaves_the_old_results_untouched(tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["grid", "run", str(_write(tmp_path, DUMMY)), "--results", str(results)]) == 0
    cell = results / "g" / "brain" / "none__full" / "nall" / "seed1"
    before = _tree(cell)
    failing = {**DUMMY, "overrides": [{"when": {"strategy": "full", "seed": "1"}, "set": {"dummy": {"fail": True}}}]}
    grid = _write(tmp_path, failing)
    assert main(["grid", "run", str(grid), "--results", str(results), "--rerun-changed"]) == 1
    assert _tree(cell) == before  # the old, finished run is still there, unchanged


# --- 6 and 12: values checked when the grid loads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"strategy": ["scratch", "ful"]},
            "axes.strategy: unknown strategy 'ful'; did you mean 'full'? Allowed: bn_only, discriminative, first_k, "
            "frozen_encoder, full, gradual_unfreeze, hybrid_k, last_k, mean_var, reinit_head, scratch, spottune",
        ),
        (
            {"strategy": ["first_k:abc"]},
            "axes.strategy: 'first_k:abc': strategy 'first_k': parameter k must be int, got 'abc'",
        ),
        (
            {"strategy": ["first_k:k=1,bn_mod=adapt"]},
            "axes.strategy: 'first_k:k=1,bn_mod=adapt': unknown parameter of strategy 'first_k' 'bn_mod'; did you "
            "mean 'bn_mode'? Allowed: bn_mode, k",
        ),
        ({"strategy": ["first_k:0"]}, "axes.strategy: 'first_k:0': strategy parameter k must be > 0, got 0"),
    ],
)
def test_bad_strategy_values_are_one_line_at_load(tmp_path, capsys, change, message):
    grid = _write(tmp_path, {**FINETUNE, "axes": {**FINETUNE["axes"], **change}})
    assert main(["grid", "status", str(grid), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [f"error: {grid}: {message}"]


@pytest.mark.parametrize(
    ("finetune", "message"),
    [
        (
            {"train": {"optimizer": "adamm"}},
            "finetune.train (cell brain/none__scratch/nall/seed0): unknown optimizer 'adamm'; did you mean 'adam' or "
            "'adamw'? Allowed: adam, adamw, sgd",
        ),
        ({"model": "unett"}, "finetune.model (cell brain/none__scratch/nall/seed0): unknown model 'unett'; did you"),
    ],
)
def test_bad_finetune_values_are_one_line_at_load(tmp_path, capsys, finetune, message):
    grid = _write(tmp_path, {**FINETUNE, "defaults": {**FINETUNE["defaults"], "finetune": finetune}})
    assert main(["grid", "run", str(grid), "--results", str(tmp_path / "res")]) == 2
    (line,) = _error(capsys)
    assert line.startswith(f"error: {grid}: {message}")
    assert not (tmp_path / "res").exists()  # not a single cell ran


def test_a_valid_finetune_grid_loads(tmp_path):
    spec = load_grid(_write(tmp_path, {**FINETUNE, "axes": {**FINETUNE["axes"], "strategy": ["baseline", "oracle"]}}))
    assert spec.axes["strategy"] == ("baseline", "oracle")


def test_override_and_exclude_matching_no_cell_are_errors(tmp_path):
    grid = _write(tmp_path, {**DUMMY, "overrides": [{"when": {"strategy": "ful*"}, "set": {"dummy": {"level": 0.5}}}]})
    load_grid(grid)  # a glob that matches: fine
    grid = _write(tmp_path, {**DUMMY, "overrides": [{"when": {"strategy": "fulll"}, "set": {"dummy": {"level": 1}}}]})
    with pytest.raises(ConfigError) as err:
        load_grid(grid)
    assert str(err.value) == (
        f"{grid}: overrides[0].when matches no cell: strategy 'fulll' matches none of the grid's values (scratch, "
        "full); did you mean 'full'?"
    )
    grid = _write(tmp_path, {**DUMMY, "exclude": [{"strategy": "scratch", "seed": 7}]})
    load_grid(grid)  # 7 resembles no seed: a warning only (generated grids exclude what small variants lack)
    grid = _write(tmp_path, {**DUMMY, "exclude": [{"strategy": "scrach"}]})
    with pytest.raises(ConfigError, match=r"exclude\[0\] matches no cell: strategy 'scrach' .*did you mean 'scratch'"):
        load_grid(grid)
    grid = _write(tmp_path, {**DUMMY, "exclude": [{"domain_pair": "a->b"}]})
    with pytest.raises(ConfigError, match=r"exclude\[0\] matches no cell: the grid has no domain_pair axis$"):
        load_grid(grid)


def test_a_race_metric_typo_is_caught_at_load(tmp_path, capsys):
    grid = _write(tmp_path, {**DUMMY, "race": {"metric": "dcie"}})
    assert main(["grid", "run", str(grid), "--race", "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [
        f"error: {grid}: race.metric: unknown per-case metric of dummy cells 'dcie'; did you mean 'dice'? Allowed: dice"
    ]
    assert not (tmp_path / "res").exists()


# --- 10: files that are not YAML ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe bad", "not a UTF-8 text file (byte 0xff at offset 0); a YAML file of grid settings"),
        (b"a: [1,\n", "cannot read YAML (line 2, column 1): while parsing a flow node: expected the node content"),
        (b"# nothing\n", "the file is empty (or only comments); expected a mapping of grid settings"),
    ],
)
def test_a_grid_file_that_is_not_yaml_is_one_line(tmp_path, capsys, content, message):
    grid = tmp_path / "g.yaml"
    grid.write_bytes(content)
    assert main(["grid", "status", str(grid)]) == 2
    (line,) = _error(capsys)
    assert line.startswith(f"error: {grid}: {message}")


def test_a_folder_given_as_grid_file(tmp_path, capsys):
    (tmp_path / "adir.yaml").mkdir()
    assert main(["grid", "status", str(tmp_path / "adir.yaml")]) == 2
    assert _error(capsys) == [
        f"error: {tmp_path / 'adir.yaml'}: is a folder, not a YAML file of grid settings (axes, defaults, ...)"
    ]


def test_finetune_config_files_that_are_empty_or_binary(tmp_path):
    from medtransfer.finetune import FinetuneConfig

    empty, binary = tmp_path / "empty.yaml", tmp_path / "binary.yaml"
    empty.write_text("")
    binary.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ConfigError) as err:
        FinetuneConfig.from_yaml(empty)
    assert str(err.value) == f"{empty}: the file is empty (or only comments); expected a mapping of finetune options"
    with pytest.raises(ConfigError, match=r"binary.yaml: not a UTF-8 text file \(byte 0x89 at offset 0\)"):
        FinetuneConfig.from_yaml(binary)


# --- 11: the report folder ----------------------------------------------------------------------------------


def _results(tmp_path: Path, grid: dict, name: str) -> Path:
    results = tmp_path / name
    assert main(["grid", "run", str(_write(tmp_path, grid, f"{name}.yaml")), "--results", str(results)]) == 0
    return results / grid["name"]


def test_report_refuses_a_folder_of_the_users_files(tmp_path, capsys):
    results = _results(tmp_path, DUMMY, "res")
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "report.md").write_text("my notes")
    capsys.readouterr()
    assert main(["report", str(results), "--out", str(user)]) == 2
    assert _error(capsys) == [
        f"error: {user}: holds files a medtransfer report did not write (report.md); nothing was written: give "
        "--out a new or empty folder (an earlier report there is replaced)"
    ]
    assert _tree(user) == {"report.md": b"my notes"}


def test_a_second_report_replaces_the_first_wholly(tmp_path, capsys):
    first = _results(tmp_path, {**DUMMY, "axes": {**DUMMY["axes"], "target": ["brain", "anatomy"]}}, "r1")
    second = _results(tmp_path, {**DUMMY, "name": "h"}, "r2")
    out = tmp_path / "rep"
    assert main(["report", str(first), "--out", str(out)]) == 0
    old_figures = set((out / "figures").iterdir())
    assert len(old_figures) > 1
    assert main(["report", str(second), "--out", str(out)]) == 0
    marker = json.loads((out / ".medtransfer-report").read_text())
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {".medtransfer-report"}
    assert on_disk == set(marker["files"])  # no stale figure of the first report
    assert len(list((out / "figures").iterdir())) < len(old_figures)
    assert not [p for p in out.iterdir() if p.name.startswith(".report-")]  # no staging folder left
    (out / "figures" / "mine.png").write_bytes(b"x")  # a file the report did not write: refused
    assert main(["report", str(second), "--out", str(out)]) == 2
    assert "(figures/mine.png)" in capsys.readouterr().err


def test_report_of_a_file_says_it_is_a_file(tmp_path, capsys):
    grid = _write(tmp_path, DUMMY)
    assert main(["report", str(grid), "--out", str(tmp_path / "rep")]) == 2
    assert _error(capsys) == [
        f"error: {grid}: is a file, not a results folder; for the grid file g.yaml, give the folder grid run wrote "
        "(RESULTS/<grid name>, e.g. results/<name>)"
    ]


# --- 13: --only and strategies --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "status"])
def test_only_matching_no_cell_is_an_error(tmp_path, capsys, command):
    grid = _write(tmp_path, DUMMY)
    assert main(["grid", command, str(grid), "--results", str(tmp_path / "res"), "--only", "zzz*"]) == 2
    assert _error(capsys) == [
        "error: --only 'zzz*' matches none of the 4 cells of grid g (a glob on the cell id, e.g. 'brain/*first_k*'); "
        "its cells are: brain/none__scratch/nall/seed0, brain/none__scratch/nall/seed1, brain/none__full/nall/seed0, "
        "..."
    ]


def test_strategies_lists_references_and_reads_specs(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    assert "\nbaseline: grid reference (kind finetune)" in out
    assert "\noracle: grid reference (kind finetune)" in out
    assert main(["strategies", "first_k:2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "first_k: pretrained; train only the first k stages (DART 'first layers': k=1)"
    assert lines[1] == "    k (int, default 1) = 2 (given): number of stages (counted in model.stage_names() order)"
    assert main(["strategies", "first_k:0"]) == 2
    assert _error(capsys) == ["error: strategy 'first_k:0': strategy parameter k must be > 0, got 0"]


def test_a_staged_rerun_finds_the_grids_folder_as_its_run_folder_does(tmp_path):
    from medtransfer.experiments.runner import staging_dir
    from medtransfer.experiments.sources import grid_folder
    from medtransfer.experiments.spec import expand_grid

    cell = expand_grid(load_grid(_write(tmp_path, DUMMY)), tmp_path / "res")[0]
    staged = staging_dir(cell)
    assert staged.name == f".{cell.run_dir.name}.rerun"
    assert grid_folder(staged, cell.config) == grid_folder(cell.run_dir, cell.config) == tmp_path / "res" / "g"


def test_changes_to_where_or_how_a_cell_runs_do_not_make_it_stale(tmp_path, capsys):
    results = tmp_path / "res"
    grid = {**DUMMY, "defaults": {**DUMMY["defaults"], "resources": {"num_cpus": 1}}}
    assert main(["grid", "run", str(_write(tmp_path, grid)), "--results", str(results)]) == 0
    moved = {**DUMMY, "defaults": {**DUMMY["defaults"], "resources": {"num_cpus": 2}}}
    capsys.readouterr()
    assert main(["grid", "run", str(_write(tmp_path, moved)), "--results", str(results)]) == 0
    assert "0 ran, 4 already done" in capsys.readouterr().out


def test_a_rerun_records_paths_of_its_final_folder(tmp_path):
    from medtransfer.experiments.runner import replace_run_dir

    run_dir, staging = tmp_path / "g" / "seed0", tmp_path / "g" / ".seed0.rerun"
    run_dir.mkdir(parents=True)
    (run_dir / "old.txt").write_text("old")
    staging.mkdir()
    summary = {"cell_id": "c", "result": {"checkpoint": str(staging / "train"), "other": str(tmp_path / "elsewhere")}}
    (staging / "summary.json").write_text(json.dumps(summary))
    replace_run_dir(staging, run_dir)
    assert json.loads((run_dir / "summary.json").read_text())["result"] == {
        "checkpoint": str(run_dir / "train"),
        "other": str(tmp_path / "elsewhere"),
    }
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["seed0"]


def test_a_rerun_moved_in_by_another_process_is_left_alone(tmp_path):
    import subprocess
    import sys

    from medtransfer.experiments.runner import replace_run_dir
    from medtransfer.experiments.state import short_lock

    run_dir, staging = tmp_path / "g" / "seed0", tmp_path / "g" / ".seed0.rerun"
    run_dir.mkdir(parents=True)
    (run_dir / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "summary.json").write_text(json.dumps({"cell_id": "c", "result": {}}))
    lock = tmp_path / "g" / ".seed0.rerun.move"
    with short_lock(lock):  # another live process is moving it in: this one neither moves nor fails
        replace_run_dir(staging, run_dir)
    assert (run_dir / "old.txt").is_file()
    assert staging.is_dir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": time.time()}))
    (tmp_path / "g" / ".seed0.rerun.old").mkdir()  # and the old run folder a kill between its renames left
    (tmp_path / "g" / ".seed0.rerun.old" / "older.txt").write_text("older")
    replace_run_dir(staging, run_dir)  # a lock left by a killed mover is broken
    assert sorted(p.name for p in run_dir.iterdir()) == ["summary.json"]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["seed0"]
    replace_run_dir(staging, run_dir)  # the other process of the two: nothing left to move
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["seed0"]


def test_report_out_in_missing_parents_keeps_an_existing_folders_mode_and_takes_dot(tmp_path, capsys, monkeypatch):
    results = _results(tmp_path, DUMMY, "res")
    deep = tmp_path / "reports" / "2026" / "run1"
    assert main(["report", str(results), "--out", str(deep)]) == 0
    assert (deep / "report.html").is_file()
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o2775)
    assert main(["report", str(results), "--out", str(shared)]) == 0
    assert main(["report", str(results), "--out", str(shared)]) == 0  # over itself
    assert shared.stat().st_mode & 0o7777 == 0o2775
    monkeypatch.chdir(shared)
    assert main(["report", str(results), "--out", "."]) == 0
    assert sorted(p.name for p in shared.iterdir()) == [".medtransfer-report", "figures", "report.html", "report.md"]


def test_a_report_without_figures_can_be_written_over_itself(tmp_path):
    from medtransfer.report.build import check_report_folder

    out = tmp_path / "rep"
    (out / "figures").mkdir(parents=True)
    (out / "report.html").write_text("x")
    (out / ".medtransfer-report").write_text(json.dumps({"files": ["report.html"]}))
    check_report_folder(out)  # an empty figures/ of a report with no figure is the report's own


def test_strategies_json_tells_references_from_strategies(capsys):
    assert main(["strategies", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kinds = {row["name"]: row["kind"] for row in rows}
    assert kinds["baseline"] == kinds["oracle"] == "reference"
    assert kinds["full"] == kinds["first_k"] == "strategy"


def test_a_missing_best_checkpoint_names_the_runs_last_one(tmp_path):
    from medtransfer.errors import ConfigError
    from medtransfer.experiments.sources import resolve_source

    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "checkpoint_last.pt").write_bytes(b"")
    best = run / "checkpoint_best.pt"
    config = {"source": {"name": "mine", "checkpoint": str(best)}, "data": {"root": str(tmp_path)}}
    with pytest.raises(ConfigError) as err:
        resolve_source(config, tmp_path / "cell")
    assert str(err.value) == (
        f"source checkpoint {best} does not exist (relative paths: cwd or data.root); that run wrote only "
        f"{run / 'checkpoint_last.pt'} (it had no validation scans): name that file"
    )
    config["source"]["checkpoint"] = str(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"other.pt does not exist \(relative paths: cwd or data.root\)$"):
        resolve_source(config, tmp_path / "cell")
