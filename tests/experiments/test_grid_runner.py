from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from medtransfer.errors import ConfigError
from medtransfer.experiments import (
    CellStatus,
    LocalExecutor,
    cell_status,
    create_executor,
    execute_cell,
    expand_grid,
    get_cell_function,
    grid_status,
    parse_grid,
    register_cell_kind,
    run_grid,
)
from medtransfer.experiments.executors import cell_resources
from medtransfer.experiments.state import LOCK, cell_lock, lock_is_stale

CALLS: list[tuple[str, bool]] = []


def recording_cell(config, run_dir, *, resume):
    """A cell function that records its calls and fails when the config asks it to."""
    CALLS.append((config["grid"]["cell_id"], resume))
    assert not (run_dir / "summary.json").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == config
    if (config.get("dummy") or {}).get("fail"):
        raise ValueError(f"bad value in {config['strategy']}")
    return {"metrics": {"dice": 0.5 + config["seed"]}, "per_case": [{"case": "c0", "dice": 0.5}]}


def bad_result_cell(config, run_dir, *, resume):
    return {"obj": object()}


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def _spec(**extra):
    raw = {"name": "g", "defaults": {"kind": "dummy"}, "axes": {"target": "t", "strategy": ["a", "b"], "seed": [0, 1]}}
    raw.update(extra)
    return parse_grid(raw, "g.yaml")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_grid_writes_summaries_and_rerun_skips(tmp_path):
    run = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    assert run.counts == {"ran": 4, "skipped": 0, "failed": 0, "running": 0}
    summary = json.loads((tmp_path / "g/t/none__b/nall/seed1/summary.json").read_text())
    assert summary["cell_id"] == "t/none__b/nall/seed1"
    assert summary["axes"] == {"target": "t", "source": "none", "strategy": "b", "budget": "nall", "seed": 1}
    assert summary["result"]["metrics"] == {"dice": 1.5}
    assert summary["resumed"] is False
    assert not (tmp_path / "g/t/none__b/nall/seed1" / LOCK).exists()
    again = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    assert again.counts["skipped"] == 4
    assert len(CALLS) == 4  # not called again


def test_truncated_summary_is_not_done_and_the_cell_runs_again(tmp_path, caplog):
    run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    cell = expand_grid(_spec(), tmp_path)[1]
    summary = cell.run_dir / "summary.json"
    summary.write_text(summary.read_text()[:40])  # a full disk, a copy cut short
    assert cell_status(cell.run_dir) is CellStatus.PENDING  # the cell wrote nothing else
    row = next(r for r in grid_status(_spec(), tmp_path) if r["cell_id"] == cell.id)
    assert row["status"] == "pending"
    assert row["detail"].startswith(f"{summary} is not valid JSON (truncated?)")
    assert row["detail"].endswith("; the next run reruns it")
    CALLS.clear()
    with caplog.at_level("WARNING", logger="medtransfer.experiments.runner"):
        again = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    assert again.counts == {"ran": 1, "skipped": 3, "failed": 0, "running": 0}
    assert CALLS == [(cell.id, False)]
    assert f"cell {cell.id}: {summary} is not valid JSON (truncated?)" in caplog.text
    assert "running it again" in caplog.text
    assert json.loads(summary.read_text())["cell_id"] == cell.id


def test_failing_cell_is_recorded_and_grid_continues(tmp_path):
    spec = _spec(overrides=[{"when": {"strategy": "a", "seed": 0}, "set": {"dummy": {"fail": True}}}])
    run = run_grid(spec, cell_fn=recording_cell, results_root=tmp_path, progress=False)
    assert run.counts == {"ran": 3, "skipped": 0, "failed": 1, "running": 0}
    assert not run.ok
    run_dir = tmp_path / "g/t/none__a/nall/seed0"
    error = json.loads((run_dir / "error.json").read_text())
    assert error["type"] == "ValueError"
    assert error["message"] == "bad value in a"
    assert "recording_cell" in error["traceback"]
    assert cell_status(run_dir) is CellStatus.FAILED
    assert not (run_dir / "summary.json").exists()
    fixed = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)  # retried, now fine
    assert fixed.counts == {"ran": 1, "skipped": 3, "failed": 0, "running": 0}
    assert cell_status(run_dir) is CellStatus.DONE
    assert not (run_dir / "error.json").exists()


def test_non_json_result_fails_the_cell(tmp_path):
    cell = expand_grid(_spec(), tmp_path)[0]
    outcome = execute_cell(cell, bad_result_cell)
    assert outcome.status is CellStatus.FAILED
    assert "TypeError" in outcome.error
    assert not (cell.run_dir / "summary.json").exists()


def test_partial_outputs_resume(tmp_path):
    cell = expand_grid(_spec(), tmp_path)[0]
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "checkpoint_latest.pt").write_bytes(b"x")
    assert cell_status(cell.run_dir) is CellStatus.INTERRUPTED
    outcome = execute_cell(cell, recording_cell)
    assert outcome.resumed
    assert CALLS == [(cell.id, True)]
    assert json.loads((cell.run_dir / "summary.json").read_text())["resumed"] is True


def test_stale_lock_of_dead_process_is_broken(tmp_path):
    cell = expand_grid(_spec(), tmp_path)[0]
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    (cell.run_dir / "epoch_3.pt").write_bytes(b"x")
    assert cell_status(cell.run_dir) is CellStatus.INTERRUPTED
    outcome = execute_cell(cell, recording_cell)
    assert outcome.status is CellStatus.DONE
    assert outcome.resumed


def test_stale_lock_without_outputs_starts_fresh(tmp_path):
    cell = expand_grid(_spec(), tmp_path)[0]
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    outcome = execute_cell(cell, recording_cell)
    assert outcome.status is CellStatus.DONE
    assert not outcome.resumed  # died before the cell function wrote anything: nothing to resume


def test_finished_cell_with_a_stale_lock_loses_the_lock(tmp_path):
    # killed between writing summary.json and releasing the lock: the next run skips the cell and drops the lock
    cell = expand_grid(_spec(), tmp_path)[0]
    execute_cell(cell, recording_cell)
    (cell.run_dir / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    CALLS.clear()
    run = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    assert not (cell.run_dir / LOCK).exists()
    assert all(cid != cell.id for cid, _ in CALLS)
    assert next(o for o in run.outcomes if o.cell_id == cell.id).skipped


def test_a_lock_is_published_whole(tmp_path):
    with cell_lock(tmp_path):
        info = json.loads((tmp_path / LOCK).read_text())
        assert info["pid"] == os.getpid()
        assert info["host"] == socket.gethostname()
        assert [p.name for p in tmp_path.iterdir()] == [LOCK]  # the temporary file it was linked from is gone
    assert list(tmp_path.iterdir()) == []


def test_live_lock_leaves_the_cell_alone(tmp_path):
    cell = expand_grid(_spec(), tmp_path)[0]
    with cell_lock(cell.run_dir):
        assert cell_status(cell.run_dir) is CellStatus.RUNNING
        outcome = execute_cell(cell, recording_cell)
        rows = grid_status(_spec(), tmp_path)
    assert outcome.status is CellStatus.RUNNING
    assert CALLS == []
    assert rows[0]["status"] == "running"
    assert f"pid {os.getpid()}" in rows[0]["detail"]
    assert not (cell.run_dir / LOCK).exists()  # released


def test_a_cell_held_by_a_live_worker_process_is_left_alone_until_that_process_is_killed(tmp_path):
    """A surviving worker (another process) keeps its cell; once SIGKILLed, its stale lock is reclaimed."""
    cell = expand_grid(_spec(), tmp_path)[0]
    holder_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from medtransfer.experiments.state import cell_lock\n"
        "run_dir = Path(sys.argv[1])\n"
        "with cell_lock(run_dir):\n"
        "    (run_dir / 'epoch_1.pt').write_bytes(b'x')\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", holder_code, str(cell.run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
        assert run.counts == {"ran": 3, "skipped": 0, "failed": 0, "running": 1}
        assert cell.id not in {cid for cid, _ in CALLS}
        assert json.loads((cell.run_dir / LOCK).read_text())["pid"] == holder.pid
    finally:
        holder.kill()  # SIGKILL: the lock stays behind with a dead pid
        holder.wait()
    CALLS.clear()
    again = run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    assert again.counts == {"ran": 1, "skipped": 3, "failed": 0, "running": 0}
    assert CALLS == [(cell.id, True)]  # the stale lock was broken and the cell resumed from its partial output
    assert not (cell.run_dir / LOCK).exists()


def test_lock_of_other_host_is_stale_only_without_heartbeat(tmp_path):
    lock = tmp_path / LOCK
    lock.write_text(json.dumps({"pid": 1, "host": "some-other-node"}))
    assert not lock_is_stale(lock, stale_after_s=60)
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert lock_is_stale(lock, stale_after_s=60)


def test_heartbeat_refreshes_the_lock(tmp_path):
    with cell_lock(tmp_path, heartbeat_s=0.05):
        old = time.time() - 100
        os.utime(tmp_path / LOCK, (old, old))
        time.sleep(0.3)
        assert time.time() - (tmp_path / LOCK).stat().st_mtime < 5


def test_grid_status_rows(tmp_path):
    spec = _spec(overrides=[{"when": {"strategy": "b", "seed": 1}, "set": {"dummy": {"fail": True}}}])
    run_grid(spec, cell_fn=recording_cell, results_root=tmp_path, only="*seed1", progress=False)
    rows = {r["cell_id"]: r for r in grid_status(spec, tmp_path)}
    assert rows["t/none__a/nall/seed1"]["status"] == "done"
    assert rows["t/none__b/nall/seed1"]["status"] == "failed"
    assert rows["t/none__b/nall/seed1"]["detail"].startswith("ValueError: bad value in b")
    assert rows["t/none__a/nall/seed0"]["status"] == "pending"


def test_process_pool_runs_dummy_cells(tmp_path):
    spec = _spec(defaults={"kind": "dummy", "dummy": {"n_cases": 2}})
    run = run_grid(spec, LocalExecutor(workers=2), results_root=tmp_path, progress=False)
    assert run.counts["ran"] == 4
    pids = {json.loads(p.read_text())["pid"] for p in tmp_path.rglob("summary.json")}
    assert os.getpid() not in pids


def test_cell_kinds_registry(tmp_path):
    assert get_cell_function("dummy").__name__ == "run_dummy_cell"
    with pytest.raises(ConfigError, match="did you mean 'dummy'"):
        get_cell_function("dumy", where="g.yaml")
    with pytest.raises(ConfigError, match="set defaults.kind"):
        get_cell_function(None)
    register_cell_kind("test_missing_kind", "medtransfer.no_such_module:run")
    with pytest.raises(ConfigError, match="not available"):
        get_cell_function("test_missing_kind")


def test_executor_factory_and_resources():
    assert create_executor("local", workers=3).workers == 3
    with pytest.raises(ConfigError, match="did you mean 'local'"):
        create_executor("locl")
    with pytest.raises(ConfigError, match="only used with --executor ray"):
        create_executor("local", address="auto")
    with pytest.raises(ConfigError, match="workers"):
        LocalExecutor(0)
    assert cell_resources({}) == {"num_cpus": 1, "num_gpus": 0}
    assert cell_resources({"resources": {"num_gpus": 1}}) == {"num_cpus": 1, "num_gpus": 1}
    with pytest.raises(ConfigError, match="did you mean 'num_gpus'"):
        cell_resources({"resources": {"num_gpu": 1}})
    with pytest.raises(ConfigError, match="num_cpus must be a number"):
        cell_resources({"resources": {"num_cpus": "two"}})


def test_kind_can_differ_per_cell_through_overrides(tmp_path):
    register_cell_kind("test_recording", recording_cell)
    spec = _spec(overrides=[{"when": {"strategy": "b"}, "set": {"kind": "test_recording"}}])
    run = run_grid(spec, results_root=tmp_path, progress=False)
    assert run.counts["ran"] == 4
    assert sorted(c for c, _ in CALLS) == ["t/none__b/nall/seed0", "t/none__b/nall/seed1"]
    assert (tmp_path / "g/t/none__a/nall/seed0/attempts.log").is_file()  # the dummy kind ran the others


def test_unknown_kind_in_an_override_stops_before_running(tmp_path):
    with pytest.raises(
        ConfigError, match=r"overrides\[0\].set.kind: unknown cell kind 'finetun'; did you mean 'finetune'"
    ):
        _spec(overrides=[{"when": {"strategy": "b"}, "set": {"kind": "finetun"}}])


def test_changed_config_starts_over_instead_of_resuming(tmp_path):
    cell = expand_grid(_spec(), tmp_path)[0]
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "checkpoint_latest.pt").write_bytes(b"x")
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump({**cell.config, "train": {"lr": 1.0}}))
    outcome = execute_cell(cell, recording_cell)
    assert not outcome.resumed
    assert CALLS == [(cell.id, False)]


def test_status_flags_done_cells_whose_config_changed(tmp_path):
    run_grid(_spec(), cell_fn=recording_cell, results_root=tmp_path, progress=False)
    edited = _spec(defaults={"kind": "dummy", "dummy": {"n_cases": 5}})
    rows = grid_status(edited, tmp_path)
    assert all(r["status"] == "done" and "config changed" in r["detail"] for r in rows)
    assert not any("config changed" in r["detail"] for r in grid_status(_spec(), tmp_path))


@pytest.mark.slow
def test_crashed_worker_fails_only_its_cell(tmp_path):
    spec = _spec(
        defaults={"kind": "dummy", "dummy": {"n_cases": 1}},
        overrides=[{"when": {"strategy": "b", "seed": 1}, "set": {"dummy": {"crash": True, "sleep_s": 0.5}}}],
    )
    run = run_grid(spec, LocalExecutor(workers=2), results_root=tmp_path, progress=False)
    assert run.counts == {"ran": 3, "skipped": 0, "failed": 1, "running": 0}
    (failed,) = [o for o in run.outcomes if o.status is CellStatus.FAILED]
    assert failed.cell_id == "t/none__b/nall/seed1"
    assert "worker process died" in failed.error
    crashed = tmp_path / "g" / failed.cell_id
    assert (crashed / "attempts.log").read_text().split() == ["start", "resume", "resume"]  # one per pool
    assert cell_status(crashed) is CellStatus.INTERRUPTED
