"""``benchmarks/lesions_ensemble.py`` on two hand-built threshold runs: its numbers worked out by hand."""

from __future__ import annotations

import argparse
import json

import pytest

from testkit import threshold_dataset, threshold_image, threshold_run


def test_ensemble_benchmark_scores_the_test_scans_by_hand(le, tmp_path):
    _, _, box2 = threshold_image()
    data = threshold_dataset(tmp_path / "Dataset004_StrokeLesion", extra={"x0": box2.astype("uint8")})
    runs = [threshold_run(tmp_path, n, t, data=data, test=("x0",)) for n, t in (("a", 0.25), ("b", 0.4))]
    args = argparse.Namespace(target="stroke", runs=runs, out=tmp_path / "ens", seed=5, json=None)
    report = le.run(args)
    result = report["results"]["stroke"]
    # Both members mark box 1 (64 voxels), box 2 (100) and the 1-voxel speck; the ensemble's size, tuned on v0
    # (testkit.threshold_dataset: 30 mm³), removes the speck.  On x0 only box 2 is a lesion: Dice 200 / 264,
    # one lesion found, one false component: recall 1, precision 1/2, F1 2/3, 1 false positive per scan.
    assert result["min_component_mm3"] == 30.0
    assert result["dice"] == pytest.approx(200 / 264, abs=1e-6)
    assert result["per_case_dice"] == [0.758]
    assert result["detection_rate"] == 1.0
    assert result["precision"] == 0.5
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["fp_per_case"] == 1.0
    assert result["pass"] is True  # Dice 0.76 >= 0.45 and F1 0.67 >= 0.55
    # the MSSEG rule, reported beside: box 2 covered whole and wholly inside the lesion (found), box 1 outside (false)
    msseg = result["msseg_rule (reported beside, decides nothing)"]
    assert (msseg["found"], msseg["false_positives"], msseg["components"]) == ([1], [1], [2])
    assert msseg["f1"] == pytest.approx(2 / 3)
    assert msseg["lesion_match"].startswith("MSSEG")
    assert report["build"]["seed"] == 5
    assert [m["run"] for m in result["members"]] == [str(r) for r in runs]
    json.dumps(report)  # the report is JSON as it is
    assert le.run(args)["results"]["stroke"]["dice"] == result["dice"]  # the ensemble folder is reused


def test_ensemble_benchmark_refuses_runs_of_other_splits(le, tmp_path):
    data = threshold_dataset(tmp_path / "Dataset004_StrokeLesion", extra={"x0": threshold_image()[2].astype("uint8")})
    a = threshold_run(tmp_path, "a", 0.25, data=data, test=("x0",))
    b = threshold_run(tmp_path, "b", 0.4, data=data, test=("v0",))
    args = argparse.Namespace(target="stroke", runs=[a, b], out=tmp_path / "ens", seed=5, json=None)
    with pytest.raises(le.MedTransferError, match="other test scans"):
        le.run(args)
    args.target = "ms"
    with pytest.raises(le.MedTransferError, match="not the ms dataset"):
        le.run(args)
    assert not (tmp_path / "ens").exists()
