"""``benchmarks/min_component_rules.py``: the rules re-scored from a run's stored curves, worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtransfer.infer.postprocess import CANDIDATE_VOXELS, SHORT_CANDIDATE_VOXELS
from testkit import threshold_dataset


def _build(root):
    """t0: two 64-voxel lesions, t1: one of 8 voxels (training volumes 8, 64, 64 mm³); test cases v0 (lesions of 64
    and 100 voxels) and s0 (5 and 20 voxels), 1 mm³ voxels."""
    t1 = np.zeros((16, 16, 8), np.uint8)
    t1[2:4, 2:4, 2:4] = 1
    s0 = np.zeros((16, 16, 8), np.uint8)
    s0[1, 1, 1:6] = 1
    s0[8:13, 8:12, 6] = 1
    return threshold_dataset(root, extra={"t1": t1, "s0": s0})


def _lesions_json(path, build_root, val, test, scores=None):
    result = {
        "min_component_mm3": 5.0,
        "val_lesion_f1_by_min_mm3": val,
        "test_lesion_f1_by_min_mm3 (diagnostic, not used to choose)": test,
        "train_cases": ["t0", "t1"],
        "test_cases": ["v0", "s0"],
    }
    if scores is not None:
        result["test_scores_by_min_mm3 (diagnostic, not used to choose)"] = scores
    report = {"build": {"seed": 3, "spacing_mm": 1.0, "path": str(build_root)}, "results": {"stroke": result}}
    path.write_text(json.dumps(report))
    return path


def test_rules_and_test_lesions_under_the_caps_from_a_short_curve(mcr, tmp_path, capsys):
    _build(tmp_path / "build" / "Dataset004_StrokeLesion")
    # training volumes 8, 64, 64.  Percentile caps: half the 5th percentile (linear: 8 + 0.1 * 56 = 13.6) = 6.8, the
    # 20th percentile 8 + 0.4 * 56 = 30.4.  Prediction caps: log volumes 2.079, 4.159, 4.159 (mean 3.466, sd 1.201),
    # n = 3, sqrt(4/3) = 1.1547, t_{2, 0.95} = 2.920, t_{2, 0.80} = 1.061: free 0.5 exp(3.466 - 4.048) = 0.279,
    # evidence exp(3.466 - 1.471) = 7.35
    keys = [f"{v:g}" for v in SHORT_CANDIDATE_VOXELS]  # a curve that stops at 120 voxels (before 2026-12-07)
    val = dict.fromkeys(keys, 0.5) | {"20": 0.6, "30": 0.6, "80": 0.4, "120": 0.4}
    test = dict.fromkeys(keys, 0.3) | {"20": 0.45}
    path = _lesions_json(tmp_path / "r.json", tmp_path / "build", val, test)
    assert mcr.main([str(path), "--work", str(tmp_path / "work")]) == 0
    out = json.loads(capsys.readouterr().out)["targets"]["stroke"]
    (row,) = out["runs"]
    assert row["training_lesions"] == 3
    assert row["caps_mm3"]["percentile"] == {"free": 6.8, "evidence": 30.4}
    assert row["caps_mm3"]["prediction"] == {"free": pytest.approx(0.279), "evidence": pytest.approx(7.355)}
    # test lesions 64, 100, 5, 20: under 6.8 one (5), under 30.4 two (5, 20); under 0.279 none, under 7.35 one
    assert row["test_lesions"] == 4
    assert row["test_lesions_under"] == {
        "percentile": {"free": 1, "evidence": 2},
        "prediction": {"free": 0, "evidence": 1},
    }
    # session 21: 0-5 tie at 0.5 under the free size -> 5; above it, 20 and 30 (0.6) are strictly better -> 20.
    # prediction caps: only 0 is free; 2, 3, 5 (up to 7.35) are not strictly better -> 0.  Long lists: no curve
    assert row["rules"] == {
        "session21": {"min_component_mm3": 20.0, "test_lesion_f1": 0.45},
        "short_prediction": {"min_component_mm3": 0.0, "test_lesion_f1": 0.3},
    }
    assert out["test_lesions_under"]["percentile"]["evidence"] == {"builds": 1, "lesions": 4, "under": 2, "share": 0.5}
    assert out["mean_test_lesion_f1"] == {
        "session21": {"runs": 1, "mean": 0.45, "with_baseline": {"runs": 1, "mean": 0.45, "baseline_mean": 0.45}},
        "short_prediction": {"runs": 1, "mean": 0.3, "with_baseline": {"runs": 1, "mean": 0.3, "baseline_mean": 0.45}},
    }
    assert out["paired_vs_baseline"] == {"baseline": "session21"}  # no per-scan scores
    assert row["source_lesions"] is None  # no lesion source: no source rule
    assert not (tmp_path / "work").exists()  # the recorded build was used, nothing rebuilt


def test_long_curves_pair_every_rule_with_session21_scan_by_scan(mcr, tmp_path, capsys, monkeypatch):
    _build(tmp_path / "build" / "Dataset004_StrokeLesion")
    designed = {"percentile": (1000.0, 5000.0), "prediction": (100.0, 300.0)}  # (free, evidence) in mm³
    monkeypatch.setattr(mcr, "caps", lambda volumes, kind, source=None: designed[kind])
    keys = [f"{v:g}" for v in CANDIDATE_VOXELS]  # 1 mm voxels: keys are voxel counts
    val = dict.fromkeys(keys, 0.5) | {"120": 0.6, "200": 0.6, "500": 0.8, "800": 0.8, "1200": 0.8, "2000": 0.9}
    # session21 (to 120, free 1000): 0.6 at 120.  short_prediction (free 100, evidence 300): 0-80 tie (0.5) -> 80,
    # then 120 (0.6) is strictly better -> 120.  long_percentile: 0.8 at 500 and 800 under 1000 -> 800, then 2000
    # (0.9, under 5000) is strictly better -> 2000.  target_prior (free 100, evidence 300): 120 and 200 (0.6) -> 120
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
    path = _lesions_json(tmp_path / "r.json", tmp_path / "build", val, dict.fromkeys(keys, 0.5), scores)
    assert mcr.main([str(path), "--work", str(tmp_path / "work")]) == 0
    out = json.loads(capsys.readouterr().out)["targets"]["stroke"]
    sizes = {rule: r["min_component_mm3"] for rule, r in out["runs"][0]["rules"].items()}
    assert sizes == {"session21": 120.0, "short_prediction": 120.0, "long_percentile": 2000.0, "target_prior": 120.0}
    paired = out["paired_vs_baseline"]
    assert paired["target_prior"]["sizes_mm3"] == {"r stroke": [120.0, 120.0]}
    assert paired["target_prior"]["dice_b_minus_a"]["tied"] == 2
    longer = paired["long_percentile"]
    # session21: Dice 0.5, 0.7; 2 of 3 lesions found, 3 false positives (pooled precision 2/5) -> F1 0.5
    # long_percentile: Dice 0.6, 0.9; 2 of 3 found, no false positive -> F1 0.8
    assert longer["a"]["dice"] == pytest.approx(0.6)
    assert longer["b"]["dice"] == pytest.approx(0.75)
    assert (longer["a"]["detected"], longer["a"]["false_positives"], longer["b"]["false_positives"]) == (2, 3, 0)
    assert longer["a"]["f1"] == pytest.approx(0.5)
    assert longer["b"]["f1"] == pytest.approx(0.8)
    assert longer["f1_per_seed"]["r stroke"] == {"a": pytest.approx(0.5), "b": pytest.approx(0.8)}
    assert (longer["dice_b_minus_a"]["paired_scans"], longer["dice_b_minus_a"]["b_better"]) == (2, 2)


def test_results_without_test_scans_or_curves_are_rescored_as_far_as_they_go(mcr, tmp_path, capsys):
    _build(tmp_path / "build" / "Dataset004_StrokeLesion")
    keys = [f"{v:g}" for v in SHORT_CANDIDATE_VOXELS]
    old = _lesions_json(tmp_path / "old.json", tmp_path / "build", dict.fromkeys(keys, 0.5), dict.fromkeys(keys, 0.4))
    report = json.loads(old.read_text())
    del report["results"]["stroke"]["test_cases"]  # early lesions.py results name no test scans
    del report["build"]["spacing_mm"]  # nor (ensembles) a spacing
    report["results"]["ms"] = {"val_lesion_f1_by_min_mm3": None, "per_case_dice": [0.5]}  # every scan trained
    old.write_text(json.dumps(report))
    assert mcr.main([str(old), "--work", str(tmp_path / "work")]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)["targets"]
    assert list(out) == ["stroke"]
    assert "old.json ms: no validation or test curve (nothing tuned), skipped" in captured.err
    (row,) = out["stroke"]["runs"]
    assert row["test_lesions"] is None
    assert row["test_lesions_under"] is None
    assert out["stroke"]["test_lesions_under"]["prediction"]["free"] == {
        "builds": 0,
        "lesions": 0,
        "under": 0,
        "share": None,
    }
    # session 21's rule: all tie at 0.5; free size 6.8 -> the largest tie under it, 5
    assert row["rules"]["session21"] == {"min_component_mm3": 5.0, "test_lesion_f1": 0.4}


def test_source_rules_pool_the_lesion_source_s_training_lesions(mcr, tmp_path, capsys):
    _build(tmp_path / "build" / "Dataset004_StrokeLesion")
    # the source build: other scans u0 (two 64-voxel lesions) and u1 (one of 8) train; t0 validated, v0 held out
    u0 = np.zeros((16, 16, 8), np.uint8)
    u0[1:5, 1:5, 1:5] = 1
    u0[9:13, 9:13, 1:5] = 1
    u1 = np.zeros((16, 16, 8), np.uint8)
    u1[12:14, 2:4, 5:7] = 1
    threshold_dataset(tmp_path / "source" / "Dataset004_StrokeLesion", extra={"u0": u0, "u1": u1})
    source = {
        "seed": 101,
        "path": str(tmp_path / "source"),
        "val_cases": ["t0"],
        "held_out_cases": ["v0"],
        "train_cases": 2,
        "checkpoint": str(tmp_path / "gone" / "checkpoint_last.pt"),
    }
    keys = [f"{v:g}" for v in CANDIDATE_VOXELS]
    val = dict.fromkeys(keys, 0.5) | {"2": 0.7, "8": 0.8}
    path = _lesions_json(tmp_path / "r.json", tmp_path / "build", val, dict.fromkeys(keys, 0.4) | {"8": 0.6})
    report = json.loads(path.read_text())
    report["results"]["stroke"]["source"] = source
    path.write_text(json.dumps(report))
    assert mcr.main([str(path), "--work", str(tmp_path / "work"), "--baseline", "target_prior"]) == 0
    out = json.loads(capsys.readouterr().out)["targets"]["stroke"]
    (row,) = out["runs"]
    assert row["source_lesions"] == 3
    # pooled 8, 64, 64, 8, 64, 64: log mean 3.466, SD 1.0743, n = 6, t_{5, 0.95} = 2.015, t_{5, 0.80} = 0.9195,
    # sqrt(7/6): free 0.5 exp(3.466 - 2.338) = 1.546, evidence exp(3.466 - 1.067) = 11.01.  Target alone (first
    # test): free 0.279, evidence 7.35.  `auto` (the source kind) cannot test 3 lesions against 3 (complete
    # separation gives p = 2 / C(6, 3) = 0.1), so it keeps the target's own
    assert row["caps_mm3"]["pooled"] == {"free": pytest.approx(1.546, abs=1e-3), "evidence": pytest.approx(11.01, 0.01)}
    assert row["caps_mm3"]["source"] == row["caps_mm3"]["prediction"]
    assert row["source_prior"]["source_pooled"] is False
    assert row["source_prior"]["why"].startswith("3 training and 3 source lesion(s): too few")
    # target_prior / current: only 0 is free (0.5); 2 (0.7) is strictly better under 7.35, 8 (0.8) is not under it
    # -> 2.  pooled_prior: 0 free; 2 and 8 (0.8, under 11.01) strictly better -> 8
    sizes = {rule: r["min_component_mm3"] for rule, r in row["rules"].items()}
    assert sizes["target_prior"] == sizes["current"] == sizes["short_source_prior"] == 2.0
    assert sizes["pooled_prior"] == 8.0
    assert row["rules"]["pooled_prior"]["test_lesion_f1"] == 0.6
    assert out["test_lesions_under"]["pooled"]["free"]["under"] == 0  # test lesions 5, 20, 64, 100
    assert out["test_lesions_under"]["pooled"]["evidence"]["under"] == 1
    assert out["mean_test_lesion_f1"]["pooled_prior"]["with_baseline"] == {"runs": 1, "mean": 0.6, "baseline_mean": 0.4}
    assert out["paired_vs_baseline"] == {"baseline": "target_prior"}  # no per-scan scores to pair
    # a source build whose scans do not add up to what the source trained on is refused
    report["results"]["stroke"]["source"]["train_cases"] = 46
    path.write_text(json.dumps(report))
    with pytest.raises(SystemExit, match="2 training scans, the source trained on 46"):
        mcr.main([str(path), "--work", str(tmp_path / "work")])
