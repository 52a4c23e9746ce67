"""``benchmarks/min_component_rules.py``: both rules re-scored from a run's stored curves, worked out by hand."""

from __future__ import annotations

import json

import numpy as np

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
