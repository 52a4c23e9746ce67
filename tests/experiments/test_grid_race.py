"""`grid run --race` on dummy grids: the planted best arm wins, losers' later cells are skipped, kill -9 resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.experiments import LocalExecutor, parse_grid, run_grid
from medtransfer.experiments.race import load_state
from medtransfer.report.build import ReportOptions, create_report
from medtransfer.report.results import load_results

SRC = Path(__file__).resolve().parents[2] / "src"
# full is best; first_k:1 is close (dropped after a few rounds); last_k:1 is far behind (dropped at once)
GRID = {
    "name": "race",
    "defaults": {"kind": "dummy", "dummy": {"n_cases": 10, "noise": 0.02, "case_sd": 0.1, "level": 0.8}},
    "axes": {"target": "brain", "strategy": ["baseline", "full", "first_k:1", "last_k:1"], "seed": [0, 1, 2, 3]},
    "overrides": [
        {"when": {"strategy": "last_k:1"}, "set": {"dummy": {"level": 0.6}}},
        {"when": {"strategy": "first_k:1"}, "set": {"dummy": {"level": 0.79}}},
    ],
    "exclude": [{"strategy": "baseline", "seed": "!0"}],
    "race": {"metric": "dice", "alpha": 0.05},
}
STATE = "race/_race/brain/nall.json"


def _write_grid(tmp_path: Path, **changes) -> Path:
    grid = {**json.loads(json.dumps(GRID)), **changes}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _cells_run(results: Path) -> set[str]:
    return {str(p.parent.relative_to(results / "race")) for p in results.rglob("summary.json")}


def _status_rows(out: str) -> dict[str, list[str]]:
    """``grid status`` output: cell id -> [status, detail]."""
    return {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines()[1:-1]}


def _drops(state) -> dict[str, int]:
    return {d.arm: d.round for r in state.rounds for d in r.dropped}


def test_a_race_finds_the_planted_best_arm_and_skips_the_losers_later_cells(tmp_path, capsys):
    grid, results = _write_grid(tmp_path), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    out = capsys.readouterr().out
    state = load_state(results / STATE)
    assert state.status == "winner"
    assert state.alive == ["full"]
    assert _drops(state) == {"last_k:1": 1, "first_k:1": 2}
    assert state.meta["round_seeds"] == [0, 1, 2, 3]
    assert state.meta["metric"] == "dice"
    assert state.cells_spent == 3 + 2
    assert state.cells_full == 12
    assert _cells_run(results) == {
        "brain/none__baseline/nall/seed0",  # the reference: once, outside the race
        "brain/none__full/nall/seed0",
        "brain/none__first_k-1/nall/seed0",
        "brain/none__last_k-1/nall/seed0",
        "brain/none__full/nall/seed1",
        "brain/none__first_k-1/nall/seed1",
    }
    assert not (results / "race/brain/none__last_k-1/nall/seed1").exists()  # never started
    assert "grid race: 6 ran, 0 already done, 0 failed" in out
    assert "race: 6 of the 13 cells of the full grid done (46%); not run: 5 dropped, 2 skipped" in out
    assert "race brain, nall: full won the race after 2 rounds: +0.016 Dice over first_k:1" in out
    # round 2 pairs the 10 held-out scans (seeds 0 and 1 averaged per scan), not 20 (scan, seed) keys: two arms
    # left, exact two-sided Wilcoxon p = 4 / 2**10 (W = 1), race-adjusted x 4 rounds = 0.016
    assert "Dropped: last_k:1 in round 1 (p = 0.016); first_k:1 in round 2 (p = 0.016)." in out

    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0  # a rerun runs nothing
    out = capsys.readouterr().out
    assert "grid race: 0 ran, 6 already done, 0 failed" in out
    assert "race: 6 of the 13 cells of the full grid done (46%); not run: 5 dropped, 2 skipped" in out
    assert load_state(results / STATE).to_dict() == state.to_dict()


def test_grid_status_shows_the_cells_a_race_did_not_run(tmp_path, capsys):
    grid, results = _write_grid(tmp_path), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    capsys.readouterr()
    assert main(["grid", "status", str(grid), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    rows = _status_rows(out)
    assert rows["brain/none__last_k-1/nall/seed1"] == ["dropped", "dropped by race at round 1 (p = 0.016)"]
    assert rows["brain/none__first_k-1/nall/seed3"] == ["dropped", "dropped by race at round 2 (p = 0.016)"]
    assert rows["brain/none__full/nall/seed2"] == ["skipped", "race over at round 2: full won"]
    assert rows["brain/none__first_k-1/nall/seed1"][0] == "done"
    assert out.strip().endswith("13 cells: 6 done, 5 dropped, 2 skipped")
    assert main(["grid", "status", str(grid), "--results", str(results), "--only", "*seed3"]) == 0
    out = capsys.readouterr().out
    assert _status_rows(out)["brain/none__last_k-1/nall/seed3"] == ["dropped", "dropped by race at round 1 (p = 0.016)"]
    assert out.strip().endswith("\n3 cells: 2 dropped, 1 skipped")


def test_the_report_has_the_race_table_and_says_who_won_first(tmp_path):
    grid, results = _write_grid(tmp_path), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    report = create_report(load_results(results / "race"), ReportOptions())
    assert report.headline[0].startswith("Race of **brain, nall**: **full** won the race after 2 rounds: +0.016 Dice")
    section = next(s for s in report.sections if s.title == "Race")
    (table,) = section.tables
    assert table.rows == (
        (
            "brain, nall",
            "winner",
            "full",
            "+0.016 [+0.008, +0.023] vs first_k:1 (n = 10)",  # 10 held-out scans, seeds averaged
            "0.016",
            "last_k:1: 1 (p = 0.016); first_k:1: 2 (p = 0.016)",
            "2 of 4",
            "5 / 12 (42%)",
        ),
    )
    assert "The races did not run 7 of 12 cells: 5 cells of dropped arms" in section.paragraphs[1]
    assert "2 cells of rounds after a race was decided; none of them failed" in section.paragraphs[1]
    # the same report from the results root finds the grid's races too
    assert create_report(load_results(results), ReportOptions()).headline[0] == report.headline[0]


def test_equivalent_arms_stop_the_race_and_the_rest_is_skipped(tmp_path, capsys):
    grid = _write_grid(
        tmp_path,
        overrides=[],
        exclude=[{"strategy": "baseline"}],
        race={"margin": 0.05, "max_rounds": 3},
        defaults={"kind": "dummy", "dummy": {"n_cases": 12, "noise": 0.005, "case_sd": 0.1, "level": 0.8}},
    )
    results = tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    state = load_state(results / STATE)
    assert state.status == "equivalent"
    assert state.rounds_done == 1
    assert not _drops(state)
    assert state.cells_full == 9  # max_rounds 3 of the 4 seeds
    capsys.readouterr()
    assert main(["grid", "status", str(grid), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    rows = _status_rows(out)
    assert rows["brain/none__full/nall/seed1"] == [
        "skipped",
        "race over at round 1: full, first_k:1, last_k:1 equivalent",
    ]
    assert rows["brain/none__last_k-1/nall/seed3"] == [
        "skipped",
        "past race.max_rounds: the race's rounds are seeds 0, 1, 2",
    ]
    assert out.strip().endswith("12 cells: 3 done, 9 skipped")


def test_a_failed_cell_holds_its_race_until_a_rerun_retries_it(tmp_path, capsys):
    overrides = [*GRID["overrides"], {"when": {"strategy": "full", "seed": "1"}, "set": {"dummy": {"fail": True}}}]
    grid, results = _write_grid(tmp_path, overrides=overrides), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out
    assert "stopped in this run: cell brain/none__full/nall/seed1 did not finish; the next run retries it" in out
    assert load_state(results / STATE).rounds_done == 1
    grid = _write_grid(tmp_path)  # the failure is fixed
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    assert "grid race: 1 ran, 5 already done, 0 failed" in capsys.readouterr().out  # only the failed cell ran
    assert _drops(load_state(results / STATE)) == {"last_k:1": 1, "first_k:1": 2}


@pytest.mark.parametrize(
    ("race", "message"),
    [
        ({"margn": 0.01}, "race.margn: unknown key 'margn'; did you mean 'margin' or 'max_rounds'? Allowed: alpha, "),
        ({"alpha": 0.7}, "race.alpha must be a number in (0, 0.5), got 0.7"),
        ({"margin": "small"}, "race.margin must be a number > 0 in the metric's units (0.01 Dice), got 'small'"),
        ({"max_rounds": 5}, "race.max_rounds is 5, but a round is one seed and axes.seed has 4 (0, 1, 2, 3); give"),
        ({"round_axis": "cases"}, "race.round_axis: unknown round axis 'cases'. Allowed: seed"),
        # the race drops arms with the lower values: it would drop the best arms by HD95
        ({"metric": "hd95"}, "race.metric 'hd95' is lower is better; a race keeps the arms with the higher values"),
        ({"metric": "lesion_count_error"}, "race.metric 'lesion_count_error' is a signed error (0 is best); a race"),
        ("fast", "race must be a mapping with keys metric, margin, alpha, max_rounds, round_axis; got 'fast'"),
    ],
)
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_bad_race_section_is_one_error_line_before_any_cell(tmp_path, capsys, race, message, command):
    grid, results = _write_grid(tmp_path, race=race), tmp_path / "results"
    assert main(["grid", command, str(grid), "--results", str(results), *(["--race"] if command == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {grid}: {message}")
    assert len(err.strip().splitlines()) == 1
    assert not results.exists()


def test_a_metric_the_cells_do_not_have_is_one_error_line(tmp_path, capsys):
    grid, results = _write_grid(tmp_path, race={"metric": "dise"}), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 2
    err = capsys.readouterr().err  # when the grid loads: before any round ran
    assert err.strip().splitlines() == [
        f"error: {grid}: race.metric: unknown per-case metric of dummy cells 'dise'; did you mean 'dice'? Allowed: dice"
    ]
    assert not results.exists()


def test_a_saved_race_of_other_arms_is_not_mixed_with_the_grid_now(tmp_path, capsys):
    grid, results = _write_grid(tmp_path), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    capsys.readouterr()
    axes = {**GRID["axes"], "strategy": ["full", "first_k:1", "last_k:1", "scratch"]}
    grid = _write_grid(tmp_path, axes=axes)
    before = (results / STATE).read_text()
    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {results / STATE}: the race of brain, nall was started with arms ['full', 'first_k:1', 'last_k:1'], "
        "the grid now gives ['full', 'first_k:1', 'last_k:1', 'scratch']; delete this file to start that race again"
    )
    assert (results / STATE).read_text() == before


def test_without_race_the_grid_runs_every_cell(tmp_path, capsys):
    grid, results = _write_grid(tmp_path), tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 0
    assert "13 ran" in capsys.readouterr().out
    assert not (results / "race/_race").exists()


# --- executors and kill -9 ---------------------------------------------------------------------------------------


def test_a_race_with_worker_processes_takes_the_same_decisions(tmp_path):
    spec = parse_grid(GRID, "grid.yaml")
    run_grid(spec, results_root=tmp_path / "one", progress=False, race=True)
    run = run_grid(spec, LocalExecutor(workers=2), results_root=tmp_path / "two", progress=False, race=True)
    assert run.ok
    assert run.counts["ran"] == 6
    assert dict(run.not_run)["brain/none__last_k-1/nall/seed3"] == ("dropped", "dropped by race at round 1 (p = 0.016)")
    one, two = load_state(tmp_path / "one" / STATE), load_state(tmp_path / "two" / STATE)
    assert two.to_dict() == one.to_dict()


@pytest.mark.slow
def test_a_race_on_the_ray_executor_takes_the_same_decisions(tmp_path):
    ray = pytest.importorskip("ray")
    from medtransfer.experiments import RayExecutor

    spec = parse_grid(GRID, "grid.yaml")
    run_grid(spec, results_root=tmp_path / "local", progress=False, race=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run = run_grid(spec, RayExecutor(), results_root=tmp_path / "ray", progress=False, race=True)
    finally:
        ray.shutdown()
    assert run.ok
    assert run.counts["ran"] == 6
    assert len(run.not_run) == 7
    assert load_state(tmp_path / "ray" / STATE).to_dict() == load_state(tmp_path / "local" / STATE).to_dict()


def _summaries(results: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(results)): p.read_text() for p in results.rglob("summary.json")}


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _round_saved(path: Path) -> bool:
    try:
        return json.loads(path.read_text())["rounds"] != []
    except (OSError, ValueError):
        return False


def test_a_race_killed_with_sigkill_resumes_with_the_same_decisions_without_rerunning_cells(tmp_path):
    straight = tmp_path / "straight"  # the same grid without sleeping (the dummy's values do not depend on it)
    assert main(["grid", "run", str(_write_grid(tmp_path)), "--results", str(straight), "--race"]) == 0
    defaults = {**GRID["defaults"], "dummy": {**GRID["defaults"]["dummy"], "sleep_s": 0.3}}
    grid = _write_grid(tmp_path, defaults=defaults)

    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medtransfer.cli", "grid", "run", str(grid), "--results", str(results), "--race"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    in_round_2 = results / "race/brain/none__full/nall/seed1/attempts.log"
    ok = _wait_until(lambda: _round_saved(results / STATE) and in_round_2.exists(), timeout=60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ok, "the kill should land in round 2"
    before = _summaries(results)
    assert load_state(results / STATE).rounds_done == 1
    assert "race/brain/none__full/nall/seed1" not in before

    assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    after = _summaries(results)
    assert {k: after[k] for k in before} == before  # finished cells were not run again
    assert set(after) == set(_summaries(straight))
    for name in before:
        assert (results / name / "attempts.log").read_text().split() == ["start"]
    resumed, reference = load_state(results / STATE), load_state(straight / STATE)
    assert resumed.to_dict() == reference.to_dict()
    assert not list(results.rglob("lock.json"))


def test_a_case_with_several_labels_counts_once_with_the_mean_over_its_labels():
    from medtransfer.experiments import expand_grid
    from medtransfer.experiments.racing import _case_values

    cell = expand_grid(parse_grid(GRID, "grid.yaml"), "results")[1]
    rows = [
        {"case": "c1", "label": "wm", "dice": 0.8},
        {"case": "c1", "label": "gm", "dice": 0.6},
        {"case": "c2", "label": "wm", "dice": None},  # undefined for one label: the other counts
        {"case": "c2", "label": "gm", "dice": 0.5},
    ]
    values = _case_values(cell, {"result": {"per_case": rows}}, "dice", "grid.yaml")
    assert values == pytest.approx({"c1/seed0": 0.7, "c2/seed0": 0.5})


def test_a_race_that_cannot_drop_an_arm_says_so_after_its_first_round(tmp_path, capsys, caplog):
    """5 test scans and 3 racing arms: the smallest Holm-corrected Wilcoxon p is 2 * 2 / 2**5 = 0.125, above any
    round level, so however far behind last_k:1 is, nothing can be dropped; rounds of new seeds keep 5 scans."""
    from medtransfer.experiments.race import smallest_drop_pvalue

    assert smallest_drop_pvalue(5, 3) == pytest.approx(0.125)
    assert smallest_drop_pvalue(10, 3) == pytest.approx(2 * 2 / 2**10)
    assert smallest_drop_pvalue(10, 1) == 1.0
    small = {**GRID["defaults"], "dummy": {**GRID["defaults"]["dummy"], "n_cases": 5}}
    grid, results = _write_grid(tmp_path, defaults=small), tmp_path / "results"
    with caplog.at_level("WARNING"):
        assert main(["grid", "run", str(grid), "--results", str(results), "--race"]) == 0
    warned = [r.getMessage() for r in caplog.records if "no arm can be dropped" in r.getMessage()]
    assert warned
    assert (
        "with 5 paired scans and 3 arms no arm can be dropped (the smallest Holm-corrected Wilcoxon p is 0.125"
        in (warned[0])
    )
    assert not _drops(load_state(results / STATE))
