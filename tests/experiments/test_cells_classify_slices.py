"""The ``classification`` cell kind: slice targets, per-case accuracy / balanced accuracy / AUC, curves, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medtransfer.data.layouts import load_dataset
from medtransfer.errors import ConfigError, DataError
from medtransfer.experiments.kinds import get_cell_function
from medtransfer.experiments.runner import run_grid
from medtransfer.experiments.spec import expand_grid, parse_grid
from medtransfer.finetune.classify import ClassificationOptions, case_classes, score_case, target_classes
from medtransfer.metrics.classification import classification_metrics
from testkit import GRID_TRAIN as TRAIN
from testkit import two_domain_blobs as _dataset


def test_the_kind_is_registered():
    from medtransfer.experiments.cells_classify import run_classification_cell

    assert get_cell_function("classification") is run_classification_cell


def test_options_are_validated():
    assert ClassificationOptions.from_dict({}, where="cell x").target == "lesion"
    assert ClassificationOptions.from_dict({"target": "metadata:cohort"}, where="cell x").column == "cohort"
    with pytest.raises(ConfigError, match="cell x: unknown classification option"):
        ClassificationOptions.from_dict({"treshold": 1}, where="cell x")
    with pytest.raises(ConfigError, match="'lesion' or 'metadata:COLUMN'"):
        ClassificationOptions.from_dict({"target": "metadata:"}, where="cell x")


def test_metadata_classes(tmp_path):
    dataset = load_dataset(_dataset(tmp_path / "blobs", per_domain=2))
    by_domain = ClassificationOptions("metadata:domain")
    classes = target_classes(by_domain, dataset)
    assert classes == ["a", "b"]
    assert case_classes(by_domain, dataset, classes) == {"a0": 0, "a1": 0, "b0": 1, "b1": 1}
    assert case_classes(ClassificationOptions("lesion"), dataset, ["absent", "present"]) is None
    with pytest.raises(DataError, match=r"unknown metadata column .*'nothing'.*Allowed: domain, subject"):
        target_classes(ClassificationOptions("metadata:nothing"), dataset)  # a column no case has
    one_domain = load_dataset(_dataset(tmp_path / "one", per_domain=2), strict=False)
    for case in one_domain.cases:
        case.metadata["site"] = "same"  # a column every case has, with one value
    with pytest.raises(DataError, match=r"metadata column 'site' needs at least two classes, found \['same'\]"):
        target_classes(ClassificationOptions("metadata:site"), one_domain)


def test_score_case_matches_the_metrics_on_the_case_slices():
    """A stub model scoring each slice by its image mean: the row equals the metrics of those scores."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    label = np.zeros((8, 8, 6), np.int64)
    label[2:5, 2:5, 1:4] = 1
    image = (label + rng.normal(0, 0.6, label.shape)).astype(np.float32)[None]
    case = SimpleNamespace(case_id="c0", image=image, label=label)

    class MeanModel(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([-m, m], 1) * 20

    row = score_case(MeanModel(), case, ClassificationOptions("lesion", min_voxels=1), None, 2)
    means = image[0].mean(axis=(0, 1)) * 64 / 256  # zero padding to 16 x 16 divides the mean
    probs = torch.softmax(torch.tensor(np.stack([-means, means], 1) * 20), 1).numpy()
    expected = classification_metrics(np.array([0, 1, 1, 1, 0, 0]), probs)
    assert row["n_slices"] == 6
    assert row["n_positive"] == 3
    for key in ("accuracy", "balanced_accuracy", "auc"):
        assert row[key] == pytest.approx(expected[key])


@pytest.mark.slow
def test_grid_compares_inits_on_lesion_present_and_the_report_uses_balanced_accuracy(tmp_path):
    data = _dataset(tmp_path / "blobs", per_domain=6)
    spec = parse_grid(
        {
            "name": "cls",
            "defaults": {
                "kind": "classification",
                "data": {"root": str(data.parent), "datasets": {"blob": data.name}},
                "finetune": {
                    "model_config": {"spatial_dims": 2, "features": 4, "depth": 2},
                    "test_fraction": 0.4,
                    "val_fraction": 0.2,
                    "train": TRAIN,
                },
                "sources": {"src": {"domain": "{source_domain}", "finetune": {"train": {**TRAIN, "epochs": 2}}}},
                "threads": 1,
            },
            "axes": {
                "target": ["blob"],
                "source": ["src"],
                "strategy": ["mean_var", "hybrid_k:1", "full", "scratch"],
                "budget": [2],
                "domain_pairs": ["a->b"],
            },
        },
        "cls.yaml",
    )
    run = run_grid(spec, results_root=tmp_path / "results", progress=False)
    assert run.ok, [o.error for o in run.outcomes]
    for cell in expand_grid(spec, tmp_path / "results"):
        result = json.loads((cell.run_dir / "summary.json").read_text())["result"]
        assert result["per_case"]
        for row in result["per_case"]:
            assert 0 <= row["accuracy"] <= 1
            assert 0 <= row["balanced_accuracy"] <= 1
            assert 0 < row["n_positive"] < row["n_slices"]  # blobs span some slices: both classes present
            assert 0 <= row["auc"] <= 1
        assert [r["epoch"] for r in result["history"]] == [0, 1, 2]
        assert all({"val_accuracy", "val_balanced_accuracy", "val_auc"} <= set(r) for r in result["history"])
        assert 0 <= result["metrics"]["val_balanced_accuracy_auc"] <= 1
        assert (cell.run_dir / "train" / "history.jsonl").read_text().count("\n") == 3

    from medtransfer.cli import main

    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "results" / "cls"), "--out", str(out), "--metric", "balanced_accuracy"]) == 0
    text = (out / "report.md").read_text()
    assert "balanced_accuracy" in text or "balanced accuracy" in text
    for strategy in ("mean_var", "hybrid_k:1", "scratch"):
        assert strategy in text
