"""``medtransfer finetune --classify``: image-level targets through the command line."""

from __future__ import annotations

import json

import pytest

from medtransfer.cli import main
from testkit import two_domain_blobs as _dataset

TRAIN = ["--epochs", "6", "--steps-per-epoch", "10", "--batch-size", "8", "--lr", "0.01", "--device", "cpu"]


@pytest.mark.slow
def test_classify_lesion_present_per_slice(tmp_path, capsys):
    data = _dataset(tmp_path / "blobs", per_domain=6)
    config = tmp_path / "ft.yaml"
    config.write_text("model_config: {spatial_dims: 2, features: 4, depth: 2}\ntrain: {optimizer: adam}\n")
    out = tmp_path / "run"
    argv = ["finetune", "--init", "none", "--data", str(data), "--target-domain", "a", "--n-labelled", "2"]
    assert main([*argv, "--classify", "lesion", "--config", str(config), "--out", str(out), *TRAIN]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_case"], "test cases are scored"
    for row in summary["per_case"]:
        assert 0 < row["n_positive"] < row["n_slices"]  # blobs cover some slices: both classes present
        assert 0.0 <= row["balanced_accuracy"] <= 1.0
    # slices with and without a blob in noise: a trained classifier is clearly above chance
    assert summary["metrics"]["balanced_accuracy"] > 0.7
    assert [r["epoch"] for r in summary["history"]] == list(range(6))
    assert (out / "model.pt").is_file()
    assert "balanced_accuracy" in capsys.readouterr().out


def test_classify_refuses_pseudo_labels_and_slice_budgets(tmp_path, capsys):
    data = _dataset(tmp_path / "blobs", per_domain=2)
    base = ["finetune", "--init", "none", "--data", str(data), "--out", str(tmp_path / "r"), "--classify", "lesion"]
    assert main([*base, "--unlabelled", str(tmp_path)]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    assert main([*base, "--n-labelled", "1", "--every-kth-slice", "4"]) == 2
    assert "--every-kth-slice" in capsys.readouterr().err


def test_classify_never_resumes_over_a_run(tmp_path, capsys):
    from medtransfer.cli import main

    out = tmp_path / "cls"
    out.mkdir()
    (out / "model.pt").write_bytes(b"an earlier run")
    argv = ["finetune", "--init", "none", "--data", str(tmp_path), "--out", str(out), "--classify", "metadata:vendor"]
    assert main([*argv, "--resume"]) == 2
    assert "--classify runs do not resume (they are short); give another --out" in capsys.readouterr().err
    assert main(argv) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == b"an earlier run"
