"""``benchmarks/stroke_visibility.py``: a lesion's visibility and the found / missed comparison, worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from medtransfer.bench.atlas import Tissue


def _cube(n=9, lo=3, hi=6):
    mask = np.zeros((n, n, n), bool)
    mask[lo:hi, lo:hi, lo:hi] = True
    return mask


def test_a_dark_cube_in_white_matter(sv):
    lesion = _cube()
    tissue = np.full(lesion.shape, Tissue.WM, np.uint8)
    before = np.full(lesion.shape, 100.0)
    after = np.where(lesion, 40.0, before)
    record = sv.stroke_visibility(before, after, lesion, tissue, sigma=2.0, shell_voxels=1)
    # 27 voxels; the shell (within 1 voxel) is the 6 x 9 face neighbours, white matter at 100: (100 - 40) / 2 = 30
    assert record == {
        "volume_voxels": 27,
        "csf": 0.0,
        "grey_matter": 0.0,
        "white_matter": 1.0,
        "deep_grey": 0.0,
        "shell_contrast_sigma": 30.0,
        "darkened_2sigma": 1.0,
    }


def test_labelled_voxels_the_lesion_left_unchanged_and_a_shell_outside_the_brain(sv):
    lesion = _cube()
    tissue = np.full(lesion.shape, Tissue.WM, np.uint8)
    tissue[:, :, :5] = Tissue.CSF  # the lesion's first two z-layers (18 of 27 voxels) were fluid
    tissue[:, :, 6:] = Tissue.BACKGROUND  # the shell's top layer is outside the brain
    before = np.where(tissue == Tissue.CSF, 30.0, 100.0)
    after = before.copy()
    after[lesion] = 30.0  # painted fluid-dark: unchanged where it was fluid, darker by 70 where it was tissue
    record = sv.stroke_visibility(before, after, lesion, tissue, sigma=5.0, shell_voxels=1)
    assert record["csf"] == pytest.approx(18 / 27, abs=1e-3)
    assert record["white_matter"] == pytest.approx(9 / 27, abs=1e-3)
    assert record["darkened_2sigma"] == pytest.approx(9 / 27, abs=1e-3)
    # shell within 1 voxel = the face neighbours: below (z = 2, 9 fluid voxels at 30), the four sides (z = 3-4: 4 x 6
    # fluid voxels at 30; z = 5: 4 x 3 white matter at 100); above (z = 6) is background and left out
    shell_mean = (33 * 30 + 12 * 100) / 45
    assert record["shell_contrast_sigma"] == pytest.approx(round((shell_mean - 30) / 5, 2))


def test_an_empty_lesion_is_refused(sv):
    empty = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="empty"):
        sv.stroke_visibility(np.ones((4, 4, 4)), np.ones((4, 4, 4)), empty, np.zeros((4, 4, 4), np.uint8), 1.0)


def _record(volume, contrast, found, kind="source"):
    return {
        "volume_mm3": volume,
        "shell_contrast_sigma": contrast,
        "darkened_2sigma": 1.0,
        "runs": [{"kind": kind, "found": found, "file": "f.json", "max_probability": 0.5}],
    }


def test_found_against_missed(sv):
    records = [
        _record(100.0, 20.0, False),
        _record(300.0, 12.0, False),
        _record(500.0, 18.0, False),
        _record(4000.0, 19.0, True),
        _record(90000.0, 21.0, True),
        _record(700.0, 15.0, True, kind="scratch"),
    ]
    summary = sv.compare(records)
    source = summary["source"]
    assert source["found"]["strokes"] == 2
    assert source["missed"]["strokes"] == 3
    assert source["found"]["median_volume_mm3"] == 47000.0
    assert source["missed"]["median_shell_contrast_sigma"] == 18.0
    assert source["largest_missed_mm3"] == 500.0
    assert source["smallest_found_mm3"] == 4000.0
    expected = mannwhitneyu([4000.0, 90000.0], [100.0, 300.0, 500.0], alternative="two-sided").pvalue
    assert source["mann_whitney_p_volume_mm3"] == pytest.approx(float(expected), rel=1e-3)
    # exact test, 2 against 3 with every found stroke larger: 2 of the 10 orderings are as extreme -> p = 0.2
    assert source["mann_whitney_p_volume_mm3"] == pytest.approx(0.2)
    scratch = summary["scratch"]
    assert scratch["missed"]["strokes"] == 0
    assert scratch["mann_whitney_p_volume_mm3"] is None


def test_runs_are_joined_by_seed_and_case(sv, tmp_path):
    lesion = {"found_iou": True, "max_probability": 0.99}
    run = {
        "target": "stroke",
        "kind": "source",
        "file": "a.json",
        "seed": 5,
        "test_cases": ["siemens_3t_000", "siemens_3t_002"],
        "reference_lesions": [[lesion], [dict(lesion, found_iou=False, max_probability=0.01)]],
    }
    ms = dict(run, target="ms")
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": [run, ms]}))
    joined = sv.tested_by(path)
    assert set(joined) == {(5, "siemens_3t_000"), (5, "siemens_3t_002")}
    assert joined[(5, "siemens_3t_002")] == [
        {"kind": "source", "file": "a.json", "found": False, "max_probability": 0.01}
    ]


def test_a_build_volume_is_read_from_its_metadata(sv, tmp_path):
    folder = tmp_path / "brainshift_seed3_1mm" / "Dataset004_StrokeLesion"
    folder.mkdir(parents=True)
    (folder / "metadata.csv").write_text("case,lesion_volume_mm3\nsiemens_3t_000,2580.0\n")
    assert sv.build_volume(tmp_path, 3, "siemens_3t_000") == 2580.0
    assert sv.build_volume(tmp_path, 3, "siemens_3t_001") is None
    assert sv.build_volume(tmp_path, 4, "siemens_3t_000") is None
    assert sv.build_volume(None, 3, "siemens_3t_000") is None
