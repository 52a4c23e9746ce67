from __future__ import annotations

import logging

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.experiments import parse_grid, run_grid
from medtransfer.experiments.tracking import MlflowTracker, flatten, numeric

RAW = {
    "name": "tracked",
    "defaults": {"kind": "dummy", "dummy": {"n_cases": 2, "sleep_s": 0.01}},
    "axes": {"target": "brain", "strategy": ["full", "first_k:2"]},
}


def test_flatten_and_numeric():
    assert dict(flatten({"train": {"lr": 0.1, "sched": {"step": 3}}, "tags": [1, 2], "empty": {}})) == {
        "train.lr": 0.1,
        "train.sched.step": 3,
        "tags": [1, 2],
        "empty": {},
    }
    assert numeric({"dice": 0.5, "n": 3, "bad": float("nan"), "name": "x", "flag": True}) == {"dice": 0.5, "n": 3.0}


@pytest.mark.slow
def test_mlflow_file_store_gets_one_run_per_finished_cell(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # restored after the test
    uri = (tmp_path / "mlruns").as_uri()
    tracker = MlflowTracker(uri, experiment="tracked")
    spec = parse_grid(RAW, "t.yaml")
    run_grid(spec, results_root=tmp_path / "r", tracker=tracker, only="*full*", progress=False)
    grid = tmp_path / "t.yaml"
    grid.write_text(yaml.safe_dump(RAW))
    assert main(["grid", "run", str(grid), "--results", str(tmp_path / "r"), "--mlflow", uri]) == 0  # the other
    run_grid(spec, results_root=tmp_path / "r", tracker=tracker, progress=False)  # all done: nothing logged again
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["medtransfer.cell_id"] for r in runs) == [
        "brain/none__first_k-2/nall/seed0",
        "brain/none__full/nall/seed0",
    ]
    run = next(r for r in runs if r.data.tags["medtransfer.cell_id"].endswith("first_k-2/nall/seed0"))
    assert run.data.params["axis.strategy"] == "first_k:2"
    assert run.data.params["dummy.sleep_s"] == "0.01"
    assert 0.0 <= run.data.metrics["dice"] <= 1.0


@pytest.mark.slow
def test_tracking_failure_does_not_fail_the_cell(tmp_path, caplog):
    pytest.importorskip("mlflow")

    class Broken(MlflowTracker):
        def _log(self, cell, summary):
            raise OSError("tracking server down")

    with caplog.at_level(logging.WARNING):
        run = run_grid(parse_grid(RAW, "t.yaml"), results_root=tmp_path, tracker=Broken("x", "e"), progress=False)
    assert run.ok
    assert len(list(tmp_path.rglob("summary.json"))) == 2
    assert "tracking server down" in caplog.text
