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
from medtransfer.experiments import collect_rows

GRID = {
    "name": "kill",
    "defaults": {"kind": "dummy", "dummy": {"n_cases": 3, "sleep_s": 0.0}},
    "axes": {"target": "brain", "strategy": ["full", "first_k:2"], "seed": [0, 1]},
}


def _write_grid(tmp_path: Path, **changes) -> Path:
    grid = json.loads(json.dumps(GRID))
    for key, value in changes.items():
        grid[key] = value
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_run_and_status(tmp_path, capsys):
    grid = _write_grid(tmp_path)
    results = tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 0
    assert "4 ran, 0 already done, 0 failed" in capsys.readouterr().out
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 already done" in capsys.readouterr().out
    assert main(["grid", "status", str(grid), "--results", str(results), "--only", "*seed1"]) == 0
    out = capsys.readouterr().out
    assert "brain/none__first_k-2/nall/seed1  done" in out
    assert "2 cells: 2 done" in out


def test_grid_run_reports_failures_with_exit_1(tmp_path, capsys):
    grid = _write_grid(tmp_path, overrides=[{"when": {"strategy": "full"}, "set": {"dummy": {"fail": True}}}])
    assert main(["grid", "run", str(grid), "--results", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    assert "2 ran, 0 already done, 2 failed" in out
    assert "failed brain/none__full/nall/seed0: RuntimeError" in out
    assert main(["grid", "status", str(grid), "--results", str(tmp_path / "r")]) == 0
    assert "4 cells: 2 done, 2 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("defaults", "message"),
    [({"kind": "dumy"}, "did you mean 'dummy'"), ({}, "set defaults.kind")],
)
def test_grid_run_bad_kind_exits_2(tmp_path, capsys, defaults, message):
    grid = _write_grid(tmp_path, defaults=defaults)
    assert main(["grid", "run", str(grid), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert str(grid) in err


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_typo_anywhere_in_the_grid_file_is_one_error_line_before_any_cell(tmp_path, capsys, command):
    grid = _write_grid(tmp_path, defaults={"kind": "dummy", "dummy": {"n_cases": 1}, "eval": {"tolerence_mm": 5}})
    results = tmp_path / "results"
    assert main(["grid", command, str(grid), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {grid}: defaults.eval.tolerence_mm: unknown key 'tolerence_mm'; did you mean ")
    assert "Allowed: checkpoint, lesion_iou, lesions, max_test_cases, save_cases, surface_1mm, tolerance_mm" in err
    assert len(err.strip().splitlines()) == 1
    assert not results.exists()


def test_a_missing_data_root_is_named_before_any_cell_runs(tmp_path, capsys):
    grid = _write_grid(tmp_path, defaults={"kind": "finetune", "data": {"root": str(tmp_path / "brainshift")}})
    results = tmp_path / "results"
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {grid}: data.root: the folder {tmp_path / 'brainshift'} does not exist; ")
    assert "medtransfer data build-benchmark --out" in err
    assert "did you mean" not in err
    assert not results.exists()
    (tmp_path / "brainshift").mkdir()  # the root exists, the target's dataset folder does not
    grid = _write_grid(
        tmp_path,
        defaults={"kind": "finetune", "data": {"root": str(tmp_path / "brainshift"), "datasets": {"brain": "D001"}}},
    )
    assert main(["grid", "run", str(grid), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    expected = f"{tmp_path / 'brainshift' / 'D001'} (data.datasets.brain) does not exist"
    assert err.strip() == f"error: {grid}: target 'brain': its dataset folder {expected}"
    assert not results.exists()


def test_grid_missing_file_exits_2(tmp_path, capsys):
    assert main(["grid", "status", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _summaries(root: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(root)): p.read_text() for p in root.rglob("summary.json")}


def _running(root: Path) -> set[str]:
    """Cells that started (the dummy cell writes attempts.log first) but have no summary."""
    return {str(p.parent.relative_to(root)) for p in root.rglob("attempts.log")} - set(_summaries(root))


def _wait_for_group_exit(pgid: int, timeout: float = 10.0) -> None:
    """Wait until every process of the group is gone (reaped or zombie-free), so the snapshot is final."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_killed_grid_resumes_without_lost_or_duplicated_cells(tmp_path, workers):
    grid = _write_grid(
        tmp_path,
        defaults={"kind": "dummy", "dummy": {"n_cases": 3, "sleep_s": 0.5}},
        axes={"target": "brain", "strategy": ["full", "first_k:2"], "seed": [0, 1, 2, 3]},
    )
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "medtransfer.cli", "grid", "run", str(grid), "--results", str(results)]
    proc = subprocess.Popen([*cmd, "--workers", str(workers)], start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (len(_summaries(results)) >= 3 and _running(results)) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its worker processes, while a cell sleeps
    proc.wait()
    _wait_for_group_exit(proc.pid)  # a dying worker may still finish a system call (e.g. creating a file)
    before = _summaries(results)
    interrupted = _running(results)
    # a cell killed between creating attempts.log and writing its line has an empty log: compare with the snapshot
    logged = {name: (results / name / "attempts.log").read_text().split() for name in interrupted}
    assert 3 <= len(before) < 8
    assert interrupted, "the kill should land while a cell is running"

    assert main(["grid", "run", str(grid), "--results", str(results)]) == 0
    after = _summaries(results)
    assert len(after) == 8
    assert {k: after[k] for k in before} == before  # finished cells were not run again
    for name, text in after.items():
        attempts = (results / name / "attempts.log").read_text().split()
        summary = json.loads(text)
        assert summary["cell_id"] == name.removeprefix("kill/")
        assert attempts == ([*logged[name], "resume"] if name in interrupted else ["start"])
        assert summary["resumed"] is (name in interrupted)
    rows = collect_rows(results)
    assert len(rows) == 8 * 3
    assert len({(r["cell_id"], r["case"]) for r in rows}) == len(rows)
    assert not list(results.rglob("lock.json"))


def _alive(pid: int) -> bool:
    from medtransfer.experiments.state import _pid_alive

    return _pid_alive(pid)


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_workers_die_with_a_killed_grid_run_and_the_rerun_resumes_their_cells(tmp_path):
    """SIGKILL of `grid run --workers 2` alone (not its process group): its workers must not live on."""
    grid = _write_grid(
        tmp_path,
        defaults={"kind": "dummy", "dummy": {"n_cases": 1, "sleep_s": 1.5}},
        axes={"target": "brain", "strategy": ["full", "first_k:2"]},
    )
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "medtransfer.cli", "grid", "run", str(grid), "--results", str(results)]
    proc = subprocess.Popen([*cmd, "--workers", "2"], stderr=subprocess.DEVNULL)
    locks = lambda: [json.loads(p.read_text()) for p in results.rglob("lock.json") if p.stat().st_size]  # noqa: E731
    started = lambda: [p for p in results.rglob("attempts.log") if p.stat().st_size]  # noqa: E731
    assert _wait_until(lambda: len(locks()) == 2 and len(started()) == 2, timeout=60), "both cells should run"
    workers = [lock["pid"] for lock in locks()]
    assert proc.pid not in workers
    proc.kill()  # SIGKILL: no cleanup in the parent
    proc.wait()
    assert _wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=5), "workers outlived the run"
    time.sleep(0.5)
    assert not list(results.rglob("summary.json"))  # killed mid-cell: they did not finish unlogged

    assert main(["grid", "run", str(grid), "--results", str(results)]) == 0
    attempts = sorted(p.read_text().split() for p in results.rglob("attempts.log"))
    assert attempts == [["start", "resume"], ["start", "resume"]]  # each cell ran once more, resumed
    assert len(list(results.rglob("summary.json"))) == 2
    assert not list(results.rglob("lock.json"))


def test_worker_watchdog_ends_an_orphan_without_the_death_signal(tmp_path):
    """The fallback where prctl is not there: a worker whose parent is SIGKILLed exits within a second."""
    child = (
        "import os, sys, time\n"
        "import medtransfer.experiments.executors as ex\n"
        "ex._set_parent_death_signal = lambda: None\n"
        "ex.die_with_parent(os.getppid(), every_s=0.1)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(30)\n"
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    assert _alive(pid)
    proc.kill()
    proc.wait()
    assert _wait_until(lambda: not _alive(pid), timeout=5)
