"""``benchmarks/lesion_match_rules.py``: a run re-scored under IoU >= 0.1 and the MSSEG rule, worked out by hand."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from medtransfer.errors import DataError
from testkit import THRESHOLD_SHAPE, threshold_dataset, threshold_run


def _results(path, build_root, run_dir, found, false_positives):
    entry = {
        "run_dir": str(run_dir),
        "init": "none (scratch)",
        "min_component_mm3": 0.0,
        "test_cases": ["x0"],
        "test_scores_by_min_mm3 (diagnostic, not used to choose)": {
            "0": {"found": found, "false_positives": false_positives}
        },
    }
    report = {"build": {"seed": 7, "path": str(build_root)}, "results": {"stroke": entry}}
    path.write_text(json.dumps(report))
    return path


def test_a_lesion_drawn_in_two_fragments_under_both_rules(lmr, tmp_path):
    # x0's lesion: a 16 x 16 x 4 slab (1024 voxels) holding both boxes of the threshold image; the network at 0.25
    # marks box 1 (64 voxels), box 2 (100) and the speck (1 voxel, outside the slab).
    label = np.zeros(THRESHOLD_SHAPE, np.uint8)
    label[:, :, 2:6] = 1
    build = tmp_path / "build"
    data = threshold_dataset(build / "Dataset004_StrokeLesion", extra={"x0": label})
    run = threshold_run(tmp_path, "run", 0.25, data=data, test=("x0",))
    good = _results(tmp_path / "good.json", build, run, [0], [3])
    stale = _results(tmp_path / "stale.json", build, run, [1], [0])
    report = lmr.run(argparse.Namespace(results=[good, stale], json=None))
    first, second = report["runs"]
    # IoU >= 0.1: box 1 has IoU 64 / 1024, box 2 100 / 1024: the lesion is missed, all three components are false.
    assert (first["iou"]["found"], first["iou"]["false_positives"], first["iou"]["components"]) == ([0], [3], [3])
    # MSSEG: the speck (1 mm³ <= 3) leaves the count; the boxes cover 164 / 1024 > 10 % of the lesion, each wholly
    # inside it, so together they detect it (box 2 holds 100 / 164 = 0.61 < 0.65 of the overlap, box 1 the rest).
    # The other way each box is covered whole, but the lesion it overlaps is 860 / 1024 = 84 % uncovered (> 70 %):
    # neither box is a true positive.  Recall 1, precision 0.
    assert first["msseg"]["found"] == [1]
    assert first["msseg"]["false_positives"] == [2]
    assert first["msseg"]["components"] == [2]
    assert (first["msseg"]["detection_rate"], first["msseg"]["precision"], first["msseg"]["f1"]) == (1.0, 0.0, 0.0)
    assert first["dice"] == [pytest.approx(2 * 164 / (1024 + 165), abs=1e-4)]
    assert first["lesions_one_rule_finds"] == [{"iou_only_mm3": [], "msseg_only_mm3": [1024.0]}]
    (lesion,) = first["reference_lesions"][0]
    assert lesion["volume_mm3"] == 1024.0
    assert lesion["covered"] == pytest.approx(164 / 1024, abs=1e-4)
    assert (lesion["found_iou"], lesion["found_msseg"]) == (False, True)
    assert lesion["max_probability"] == pytest.approx(1.0, abs=1e-4)  # box 2 at 1.0: sigmoid(40 * 0.75)
    assert lesion["components"] == [
        {"voxels": 100, "inside": 100, "iou": pytest.approx(100 / 1024, abs=1e-4)},
        {"voxels": 64, "inside": 64, "iou": pytest.approx(64 / 1024, abs=1e-4)},
    ]
    assert first["reproduced"] == "yes"
    assert first["kind"] == "scratch"
    # its file recorded other counts: reported, left out of the pooled numbers
    assert second["reproduced"] == "no: found [0] / false positives [3] per scan, the file [1] / [0]"
    assert report["not_reproduced"] == {"stale.json stroke": second["reproduced"]}
    (key,) = [k for k in report if k.startswith("pooled")]
    pooled = report[key]["stroke scratch"]
    assert pooled["iou"] == {
        "scans": 1,
        "lesions": 1,
        "found": 0,
        "detection_rate": 0.0,
        "precision": 0.0,
        "f1": 0.0,
        "fp_per_case": 3.0,
    }
    assert pooled["msseg"]["found"] == 1
    assert pooled["msseg"]["fp_per_case"] == 2.0
    assert report["rules"]["msseg"].startswith("MSSEG (Commowick et al. 2018)")
    json.dumps(report)


def test_missing_checkpoints_and_foreign_files_are_one_clear_error(lmr, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="bad.json: not a benchmarks/lesions.py results file"):
        lmr.run(argparse.Namespace(results=[bad], json=None))
    gone = _results(tmp_path / "gone.json", tmp_path, tmp_path / "nowhere", [0], [0])
    with pytest.raises(DataError, match="has no checkpoints"):
        lmr.run(argparse.Namespace(results=[gone], json=None))
