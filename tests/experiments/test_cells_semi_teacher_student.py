"""The ``teacher_student`` cell kind: its unlabelled pool, its leak guard, and a tiny grid run with the report."""

from __future__ import annotations

import json

import pytest

from medtransfer.data.layouts import load_dataset
from medtransfer.errors import ConfigError, DataError
from medtransfer.experiments.cells import finetune_config
from medtransfer.experiments.cells_semi import base_strategy, link_unlabelled, unlabelled_pool
from medtransfer.experiments.kinds import get_cell_function
from medtransfer.experiments.runner import run_grid
from medtransfer.experiments.spec import expand_grid, parse_grid
from medtransfer.finetune import select_cases
from medtransfer.semi import check_no_leak, held_out_cases
from testkit import GRID_TRAIN as TRAIN
from testkit import two_domain_blobs as _dataset


def test_the_kind_is_registered():
    from medtransfer.experiments.cells_semi import run_teacher_student_cell

    assert get_cell_function("teacher_student") is run_teacher_student_cell


def _config(data, **extra):
    return {
        "target": "blob",
        "data": {"root": str(data.parent), "datasets": {"blob": data.name}},
        "finetune": {"test_fraction": 0.4, "val_fraction": 0.2},
        "seed": 0,
        **extra,
    }


def test_base_strategy():
    assert base_strategy({"strategy": "teacher_student"}) == "full"
    assert base_strategy({"strategy": "teacher_student:first_k:2"}) == "first_k:2"
    assert base_strategy({"strategy": "teacher_student", "teacher_student": {"strategy": "last_k:1"}}) == "last_k:1"
    assert base_strategy({"strategy": "mean_var"}) == "mean_var"
    with pytest.raises(ConfigError, match="trainable base strategy"):
        base_strategy({"strategy": "teacher_student:oracle"})


@pytest.mark.parametrize("seed", [0, 1])
def test_pool_is_the_unlabelled_training_cases_never_validation_or_test(tmp_path, seed):
    data = _dataset(tmp_path / "blobs", per_domain=8)
    dataset = load_dataset(data)
    config = _config(data, seed=seed, budget={"n_labelled": 1})
    ft = finetune_config(config, str(data), "b", None, tmp_path / "run")
    selection = select_cases(ft, dataset)
    split, labelled = selection.split, selection.labelled_ids
    pool = unlabelled_pool(config, dataset, ft)
    assert len(labelled) == 1
    assert set(pool) == set(split.train) - set(labelled)
    assert not set(pool) & {*split.test, *split.val}
    assert all(dataset.get(c).domain == "b" for c in pool)
    every = finetune_config({**config, "budget": {"n_labelled": "all"}}, str(data), "b", None, tmp_path / "run")
    with pytest.raises(ConfigError, match="no unlabelled training case left"):
        unlabelled_pool(config, dataset, every)


def test_linked_pool_keeps_subjects_and_a_planted_test_scan_is_caught(tmp_path):
    data = _dataset(tmp_path / "blobs")
    dataset = load_dataset(data)
    split = select_cases(finetune_config(_config(data), str(data), "b", None, tmp_path / "run"), dataset).split
    folder = link_unlabelled(dataset, list(split.train), tmp_path / "unl")
    linked = load_dataset(folder, strict=False)
    assert sorted(c.case_id for c in linked.cases) == sorted(split.train)
    assert {c.case_id: c.subject for c in linked.cases} == {c: dataset.get(c).subject for c in split.train}
    held = held_out_cases(dataset.cases, [*split.test, *split.val])
    check_no_leak(list(linked.cases), held)  # the training pool is clean
    test_id = split.test[0]
    bad = link_unlabelled(dataset, [*split.train, test_id], tmp_path / "bad")
    with pytest.raises(DataError, match=f"{test_id} \\(subject"):
        check_no_leak(list(load_dataset(bad, strict=False).cases), held)


@pytest.mark.slow
def test_grid_runs_teacher_student_next_to_full_and_the_report_shows_it(tmp_path):
    data = _dataset(tmp_path / "blobs", per_domain=6)
    spec = parse_grid(
        {
            "name": "tiny",
            "defaults": {
                "kind": "finetune",
                "data": {"root": str(data.parent), "datasets": {"blob": data.name}},
                "finetune": {
                    "model_config": {"spatial_dims": 2, "features": 4, "depth": 2},
                    "test_fraction": 0.4,
                    "val_fraction": 0.2,
                    "train": TRAIN,
                },
                "sources": {"src": {"domain": "{source_domain}", "finetune": {"train": {**TRAIN, "epochs": 4}}}},
                "teacher_student": {"rounds": 2, "pseudo": {"threshold": 0.6}},
                "eval": {"save_cases": 1},
                "threads": 1,
            },
            "axes": {
                "target": ["blob"],
                "source": ["src"],
                "strategy": ["full", "teacher_student:full"],
                "budget": [{"n_labelled": 1, "every_kth_slice": 2}],
                "domain_pairs": ["a->b"],
            },
            "overrides": [{"when": {"strategy": "teacher_student*"}, "set": {"kind": "teacher_student"}}],
        },
        "tiny.yaml",
    )
    run = run_grid(spec, results_root=tmp_path / "results", progress=False)
    assert run.ok, [o.error for o in run.outcomes]
    cells = {c.config["strategy"]: c for c in expand_grid(spec, tmp_path / "results")}
    ts = json.loads((cells["teacher_student:full"].run_dir / "summary.json").read_text())["result"]
    full = json.loads((cells["full"].run_dir / "summary.json").read_text())["result"]
    assert [r["round"] for r in ts["rounds"]] == [1, 2]
    for row in ts["rounds"]:
        assert 0 <= row["teacher_val_dice"] <= 1
        assert 0 <= row["student_val_dice"] <= 1
    assert ts["rounds"][1]["teacher_val_dice"] == pytest.approx(ts["rounds"][0]["student_val_dice"])
    # round 0 is the full cell's run (same source, budget, seed): its test Dice is the teacher_dice column
    assert [r["case"] for r in ts["per_case"]] == [r["case"] for r in full["per_case"]]
    for row, ref in zip(ts["per_case"], full["per_case"], strict=True):
        assert row["teacher_dice"] == pytest.approx(ref["dice"], abs=1e-6)
        assert 0 <= row["dice"] <= 1
    assert {r["round"] for r in ts["history"]} == {0, 1, 2}
    assert ts["checkpoint"].endswith("round2")  # the last student run folder; eval.checkpoint picks inside
    pool = json.loads((cells["teacher_student:full"].run_dir / "rounds.json").read_text())["unlabelled_cases"]
    assert pool
    assert not set(pool) & set(c["case"] for c in ts["per_case"])

    from medtransfer.cli import main

    assert main(["report", str(tmp_path / "results" / "tiny"), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "teacher_student:full" in text
    assert "full" in text


def test_linked_pool_metadata_quotes_a_subject_with_a_comma(tmp_path):
    """metadata.csv was joined by hand: a subject "doe, jane" split into two columns."""
    from types import SimpleNamespace

    data = _dataset(tmp_path / "blobs")
    dataset = load_dataset(data)
    first = dataset.cases[0]

    class Renamed:
        root = dataset.root

        def get(self, case_id):
            return SimpleNamespace(images=first.images, subject="doe, jane", domain="site 1")

    folder = link_unlabelled(Renamed(), [first.case_id], tmp_path / "unl")
    linked = load_dataset(folder, strict=False)
    assert [(c.case_id, c.subject, c.domain) for c in linked.cases] == [(first.case_id, "doe, jane", "site 1")]
