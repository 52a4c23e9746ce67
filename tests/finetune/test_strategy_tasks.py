"""Every registered strategy x {segmentation, classification, teacher-student}: it trains on a tiny problem through
the one fine-tuning path, or the registry refuses it with a clear error before anything is trained."""

from __future__ import annotations

import json

import pytest

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.finetune import ClassificationOptions, FinetuneConfig, run_classification, run_finetune
from medtransfer.models import create_model
from medtransfer.semi import run_teacher_student
from medtransfer.transfer import Task, list_strategies
from medtransfer.transfer import registry as strategy_registry
from testkit import SEMI_MODEL, blob_dataset, semi_datasets, source_checkpoint

TINY = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "lr": 0.01, "device": "cpu", "precision": "fp32"}
MODEL = {"spatial_dims": 2, "features": 4, "depth": 2}
SPECS = {"first_k": "first_k:1", "last_k": "last_k:1", "hybrid_k": "hybrid_k:1", "spottune": "spottune:warmup=1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    labelled, unlabelled = semi_datasets(root / "semi", n=6, n_unlabelled=1)
    return {
        "blobs": blob_dataset(root / "blobs", n=6),
        "labelled": labelled,
        "unlabelled": unlabelled,
        "source": source_checkpoint(root / "src.pt", SEMI_MODEL),
    }


def _config(data, out, strategy, dataset="blobs"):
    return FinetuneConfig.from_dict(
        {
            "data": str(data[dataset]),
            "out": str(out),
            "init": str(data["source"]),
            "strategy": strategy,
            "n_labelled": 1,
            "model_config": MODEL,
            "train": {**TINY, "progress": False},
        }
    )


def _run(task, data, out, strategy):
    if task is Task.SEGMENTATION:
        run = run_finetune(_config(data, out, strategy))
        return load_checkpoint(run / json.loads((run / "summary.json").read_text())["checkpoint"])
    if task is Task.CLASSIFICATION:
        run = run_classification(_config(data, out, strategy), ClassificationOptions("lesion"))
        assert json.loads((run / "summary.json").read_text())["per_case"]
        return load_checkpoint(run / "model.pt")
    ft = _config(data, out / "round0", strategy, "labelled").to_dict()
    run = run_teacher_student({"finetune": ft, "unlabelled": str(data["unlabelled"]), "out": str(out), "rounds": 1})
    assert [r["round"] for r in json.loads((run / "summary.json").read_text())["rounds"]] == [1]
    return load_checkpoint(run / "round1" / "checkpoints" / "checkpoint_last.pt")


@pytest.mark.parametrize("task", list(Task), ids=str)
@pytest.mark.parametrize("name", [e.name for e in list_strategies()])
def test_every_strategy_serves_every_task_or_is_refused(name, task, data, tmp_path):
    entry = strategy_registry.get_strategy_entry(name)
    strategy = SPECS.get(name, name)
    if task not in entry.tasks:
        with pytest.raises(ConfigError, match=f"strategy '{name}' cannot be used for {task.value}"):
            _run(task, data, tmp_path / "run", strategy)
        return
    ckpt = _run(task, data, tmp_path / "run", strategy)
    # whatever the strategy did while training, the saved weights are a plain model of the architecture
    plain = create_model(ckpt["model"]["name"], **ckpt["model"]["config"])
    plain.load_state_dict(ckpt["state_dict"])


@pytest.mark.parametrize("task", [Task.CLASSIFICATION, Task.TEACHER_STUDENT], ids=str)
def test_a_strategy_that_cannot_serve_a_task_is_refused_before_training(task, data, tmp_path, monkeypatch):
    full = strategy_registry.get_strategy_entry("full")
    narrow = strategy_registry.StrategyEntry(
        "seg_only", full.params_cls, full.build, "test", tasks=(Task.SEGMENTATION,)
    )
    monkeypatch.setitem(strategy_registry._REGISTRY, "seg_only", narrow)
    with pytest.raises(ConfigError, match=f"strategy 'seg_only' cannot be used for {task.value} "):
        _run(task, data, tmp_path / "run", "seg_only")
    assert not list((tmp_path / "run").rglob("*.pt"))  # refused before anything was trained


def test_classify_refusal_is_one_error_line(data, tmp_path, monkeypatch, capsys):
    full = strategy_registry.get_strategy_entry("full")
    narrow = strategy_registry.StrategyEntry(
        "seg_only", full.params_cls, full.build, "test", tasks=(Task.SEGMENTATION,)
    )
    monkeypatch.setitem(strategy_registry._REGISTRY, "seg_only", narrow)
    argv = ["finetune", "--init", str(data["source"]), "--strategy", "seg_only", "--data", str(data["blobs"])]
    assert main([*argv, "--out", str(tmp_path / "r"), "--classify", "lesion", "--n-labelled", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: strategy 'seg_only' cannot be used for classification (it serves: segmentation)"


def test_strategies_lists_and_explains_spottune(capsys):
    assert main(["strategies"]) == 0
    listing = capsys.readouterr().out
    assert "\nspottune: SpotTUnet" in listing
    assert main(["strategies", "spottune"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("spottune: SpotTUnet")
    assert "lam (float, default 0.01)" in text
    assert "collapsed to a plain model" in text
    assert main(["strategies", "spottune", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["tasks"] == ["segmentation", "classification", "teacher_student"]


def test_classification_weights_do_not_depend_on_what_ran_before(data, tmp_path):
    """The classification head is drawn after seeding from config.seed, as segmentation models are."""
    import torch

    states = []
    for before, out in ((1, tmp_path / "a"), (2, tmp_path / "b")):
        torch.manual_seed(before)  # another process start, another cell before this one
        run = run_classification(_config(data, out, "full"), ClassificationOptions("lesion"))
        states.append(load_checkpoint(run / "model.pt")["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
