from __future__ import annotations

import json

import pytest

from medtransfer.experiments import RayExecutor, parse_grid, run_grid

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_runs_each_cell_as_a_task(tmp_path, local_ray):
    raw = {
        "name": "r",
        "defaults": {"kind": "dummy", "dummy": {"n_cases": 2}, "resources": {"num_cpus": 1}},
        "axes": {"target": "t", "strategy": ["full", "last_k:1"], "seed": [0, 1]},
        "overrides": [{"when": {"strategy": "full", "seed": 1}, "set": {"dummy": {"fail": True}}}],
    }
    run = run_grid(parse_grid(raw, "r.yaml"), RayExecutor(), results_root=tmp_path, progress=False)
    assert run.counts == {"ran": 3, "skipped": 0, "failed": 1, "running": 0}
    summaries = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert sorted(s["cell_id"] for s in summaries) == [
        "t/none__full/nall/seed0",
        "t/none__last_k-1/nall/seed0",
        "t/none__last_k-1/nall/seed1",
    ]
    assert json.loads((tmp_path / "r/t/none__full/nall/seed1/error.json").read_text())["type"] == "RuntimeError"
    again = run_grid(parse_grid(raw, "r.yaml"), RayExecutor(), results_root=tmp_path, progress=False)
    assert again.counts == {"ran": 0, "skipped": 3, "failed": 1, "running": 0}
