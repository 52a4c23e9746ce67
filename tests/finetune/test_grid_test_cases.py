"""A grid cell scores exactly the test cases its run held out (read from the run's summary.json), whatever the
split settings: the grid never derives the split a second time."""

from __future__ import annotations

import json

import pytest

import medtransfer.experiments.evaluate_cell as evaluate_cell
import medtransfer.finetune as finetune
from medtransfer.data.layouts import load_dataset
from medtransfer.experiments.cells import finetune_config, run_finetune_cell
from medtransfer.finetune import select_cases
from testkit import two_domain_blobs

TINY = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "device": "cpu", "precision": "fp32", "progress": False}
SPLITS = [
    {},  # the defaults
    {"test_fraction": 0.6, "val_fraction": 0.0, "split_seed": 3},
    {"test_fraction": 0.2, "val_fraction": 0.4, "split_seed": 1},
    {"test_fraction": 0.4, "val_fraction": 0.2, "split_seed": 7, "max_val_cases": 1},
]


def _cell(data, split, **extra):
    return {
        "target": "blob",
        "strategy": "scratch",
        "budget": {"n_labelled": 1},
        "seed": 2,
        "data": {"root": str(data.parent), "datasets": {"blob": data.name}},
        "domain": {"target": "b"},
        "finetune": {"model_config": {"spatial_dims": 2, "features": 4, "depth": 2}, "train": TINY, **split},
        "grid": {"cell_id": "blob/b/scratch/n1/seed2"},
        **extra,
    }


@pytest.fixture
def scored(monkeypatch):
    """The case ids each evaluation was asked to score (the evaluation itself is skipped)."""
    calls = []

    def fake_evaluate(model, dataset, case_ids, run_dir, options):
        calls.append(list(case_ids))
        return [{"case": c, "dice": 1.0} for c in case_ids]

    monkeypatch.setattr(evaluate_cell, "evaluate_test_cases", fake_evaluate)
    return calls


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults")
def test_cell_scores_exactly_the_runs_held_out_cases(tmp_path, split, scored):
    data = two_domain_blobs(tmp_path / "data" / "blobs", per_domain=6)
    result = run_finetune_cell(_cell(data, split), tmp_path / "cell", resume=False)
    held_out = json.loads((tmp_path / "cell" / "train" / "summary.json").read_text())["test_cases"]
    assert scored == [held_out]
    assert [r["case"] for r in result["per_case"]] == held_out
    ft = finetune_config(_cell(data, split), str(data), "b", None, tmp_path / "cell" / "train")
    assert held_out == select_cases(ft, load_dataset(data)).test_ids  # the run's own selection
    assert all(c.startswith("b") for c in held_out)


def test_cell_reads_the_test_cases_from_the_run_not_from_a_recomputed_split(tmp_path, scored, monkeypatch):
    """Whatever rule made the run's split (another version's defaults, say), the cell scores what the run wrote."""
    data = two_domain_blobs(tmp_path / "data" / "blobs", per_domain=6)
    real = finetune.run_finetune

    def run_with_other_split(config, resume=False):
        out = real(config, resume=resume)
        summary = json.loads((out / "summary.json").read_text())
        (out / "summary.json").write_text(json.dumps({**summary, "test_cases": ["b5", "b0"]}))
        return out

    monkeypatch.setattr(finetune, "run_finetune", run_with_other_split)
    result = run_finetune_cell(_cell(data, {}, eval={"max_test_cases": 1}), tmp_path / "cell", resume=False)
    assert scored == [["b5"]]  # the run's first test case (eval.max_test_cases caps the run's list)
    assert [r["case"] for r in result["per_case"]] == ["b5"]
