"""``benchmarks/min_component_rules.py``: both rules re-scored from a run's stored curves, worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtransfer.infer.postprocess import CANDIDATE_VOXELS
from testkit import threshold_dataset


def _lesions_json(path, build_root, val, test, recorded):
    report = {
        "build": {"seed": 3, "spacing_mm": 1.0, "path": str(build_root)},
        "results": {
            "ms": {
                "min_component_mm3": recorded,
                "val_lesion_f1_by_min_mm3": val,
                "test_lesion_f1_by_min_mm3 (diagnostic, not used to choose)": test,
                "train_cases": ["t0"],
            }
        },
    }
    path.write_text(json.dumps(report))
    return path


def test_rules_are_rescored_from_the_stored_curves(mcr, tmp_path, capsys):
    threshold_dataset(tmp_path / "build" / "Dataset003_MSLesion")  # t0: one 64-voxel lesion at 1 mm³ a voxel
    # free size: half the 5th percentile of {64} = 32 mm³; evidence cap: its 20th percentile, 64 mm³
    val = {"0": 0.5, "20": 0.6, "30": 0.6, "50": 0.8, "60": 0.8, "80": 0.9}
    test = {"0": 0.4, "20": 0.55, "30": 0.5, "50": 0.7, "60": 0.65, "80": 0.2}
    # old rule: best free F1 0.6 at 20 and 30, the larger (30) -> test 0.5; evidence rule: 50 and 60 beat 0.6
    # (0.8 both, the smaller: 50) -> test 0.7; 80 (0.9) is above the evidence cap
    a = _lesions_json(tmp_path / "a.json", tmp_path / "build", val, test, 30.0)
    # a run whose curve gives the evidence nothing strictly better: both rules keep 30
    flat = {"0": 0.5, "20": 0.6, "30": 0.6, "50": 0.6, "60": 0.5, "80": 0.9}
    b = _lesions_json(tmp_path / "b.json", tmp_path / "build", flat, test, 20.0)  # recorded 20: a mismatch
    assert mcr.main([str(a), str(b), "--work", str(tmp_path / "work")]) == 0
    out = json.loads(capsys.readouterr().out)["targets"]["ms"]
    first, second = out["runs"]
    assert (first["free_mm3"], first["evidence_cap_mm3"]) == (32.0, 64.0)
    assert first["old_rule"] == {"min_component_mm3": 30.0, "test_lesion_f1": 0.5}
    assert first["evidence_rule"] == {"min_component_mm3": 50.0, "test_lesion_f1": 0.7}
    assert "warning" not in first
    assert second["old_rule"] == second["evidence_rule"] == {"min_component_mm3": 30.0, "test_lesion_f1": 0.5}
    assert "recorded 20.0" in second["warning"]
    assert (out["n_runs"], out["changed"], out["better"], out["worse"]) == (2, 1, 1, 0)
    assert out["mean_test_lesion_f1_old_rule"] == 0.5
    assert out["mean_test_lesion_f1_evidence_rule"] == np.round((0.7 + 0.5) / 2, 4)
    assert not (tmp_path / "work").exists()  # the recorded build was used, nothing rebuilt


def test_candidate_lists_pair_the_short_and_the_current_list_scan_by_scan(mcr, tmp_path, capsys, monkeypatch):
    threshold_dataset(tmp_path / "build" / "Dataset004_StrokeLesion")
    monkeypatch.setattr(mcr, "training_lesion_caps", lambda dataset, ids: (1000.0, 5000.0))  # free, evidence caps
    keys = [f"{v:g}" for v in CANDIDATE_VOXELS]  # 1 mm voxels: keys are voxel counts
    val = dict.fromkeys(keys, 0.5) | {"120": 0.6, "200": 0.6, "500": 0.8, "800": 0.8, "1200": 0.8, "2000": 0.9}
    # short list (to 120): best 0.6 at 120.  Current list: under the free size (1000) 0.8 at 500 and 800; above it,
    # up to the evidence cap (5000), 1200 ties (0.8, not enough) and 2000 is strictly better (0.9) -> 2000
    blank = {"dice": [0.0, 0.0], "false_positives": [0, 0], "found": [0, 0], "lesions": [2, 1], "components": [0, 0]}
    scores = dict.fromkeys(keys, blank) | {
        "120": {
            "dice": [0.5, 0.7],
            "false_positives": [2, 1],
            "found": [1, 1],
            "lesions": [2, 1],
            "components": [3, 2],
        },
        "2000": {
            "dice": [0.6, 0.9],
            "false_positives": [0, 0],
            "found": [1, 1],
            "lesions": [2, 1],
            "components": [1, 1],
        },
    }
    report = {
        "build": {"seed": 3, "spacing_mm": 1.0, "path": str(tmp_path / "build")},
        "results": {
            "stroke": {
                "min_component_mm3": 120.0,
                "val_lesion_f1_by_min_mm3": val,
                "test_lesion_f1_by_min_mm3 (diagnostic, not used to choose)": dict.fromkeys(keys, 0.5),
                mcr.SCORES_KEY: scores,
                "train_cases": ["t0"],
                "test_cases": ["a", "b"],
            }
        },
    }
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert mcr.main([str(tmp_path / "r.json"), "--work", str(tmp_path / "work")]) == 0
    lists = json.loads(capsys.readouterr().out)["targets"]["stroke"]["candidate_lists"]
    assert lists["sizes_mm3"] == {"r": [120.0, 2000.0]}
    # short: Dice 0.5, 0.7; 2 of 3 lesions found, 3 false positives (precision 2/5 pooled) -> F1 0.5
    # current: Dice 0.6, 0.9; 2 of 3 found, no false positive -> F1 0.8
    assert lists["a"]["dice"] == pytest.approx(0.6)
    assert lists["b"]["dice"] == pytest.approx(0.75)
    assert (lists["a"]["detected"], lists["a"]["false_positives"], lists["b"]["false_positives"]) == (2, 3, 0)
    assert lists["a"]["f1"] == pytest.approx(0.5)
    assert lists["b"]["f1"] == pytest.approx(0.8)
    assert lists["f1_per_seed"]["r"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.8)}
    assert (lists["dice_b_minus_a"]["paired_scans"], lists["dice_b_minus_a"]["b_better"]) == (2, 2)
