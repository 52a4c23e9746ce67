"""``medtransfer evaluate`` through ``cli.main`` on tiny NIfTI files."""

from __future__ import annotations

import csv
import errno
import json
import math

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.metrics import compute_dice, compute_surface_dice

AFFINE = np.diag([1.0, 1.5, 2.0, 1.0])


def _case(shift: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((10, 9, 8), dtype=np.uint8)
    ref[2:6, 2:6, 2:5] = 1
    ref[7:9, 6:8, 5:7] = 2
    pred = np.roll(ref, shift, axis=0)
    return pred, ref


@pytest.fixture
def folders(tmp_path):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    for name, shift in (("case_a", 0), ("case_b", 1)):
        pred, ref = _case(shift)
        save_nifti(pred_dir / f"{name}.nii.gz", pred, AFFINE)
        save_nifti(ref_dir / f"{name}.nii.gz", ref, AFFINE)
    return pred_dir, ref_dir


def test_evaluate_writes_csv_and_summary(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics_per_case.csv").open()))
    expected_keys = [("case_a", "1"), ("case_a", "2"), ("case_b", "1"), ("case_b", "2")]
    assert [(r["case"], r["label"]) for r in rows] == expected_keys
    pred, ref = _case(1)
    row = rows[2]
    assert float(row["dice"]) == pytest.approx(compute_dice(pred[None], ref[None], labels=[1])[0, 0])
    expected_sdice = compute_surface_dice(pred[None], ref[None], (1.0, 1.5, 2.0), 1.0, labels=[1])[0, 0]
    assert float(row["surface_dice"]) == pytest.approx(expected_sdice)
    assert float(row["hd95"]) == pytest.approx(1.0)  # shifted by one 1 mm voxel
    assert float(rows[0]["lesion_detection_rate"]) == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 2
    assert summary["mean"]["1"]["dice"] == pytest.approx((1.0 + float(row["dice"])) / 2)
    assert summary["mean"]["1"]["lesion_tp"] == 2
    printed = capsys.readouterr().out
    assert "surface_dice" in printed
    assert "lesion_f1" in printed
    assert "a lesion is matched by IoU >= 0.1, 26-connected" in printed


def test_labels_option_and_absent_label_is_nan(folders, tmp_path):
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    argv = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", "2", "5", "--out", str(out)]
    assert main([*argv, "--tolerance-mm", "2", "--no-lesions"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["mean"]) == ["2", "5"]
    assert summary["mean"]["5"]["dice"] is None  # NaN: strict JSON writes null, with the reason beside it
    assert summary["mean"]["5"]["dice_null_reason"].startswith("undefined: the label is absent")
    assert "dice_null_reason" not in summary["mean"]["2"]
    assert summary["config"]["tolerance_mm"] == 2.0
    assert "lesion_tp" not in summary["mean"]["2"]


def _strict_json(text: str):
    """Parse like a strict (RFC 8259) parser: NaN, Infinity and -Infinity are not JSON."""

    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_summary_of_an_empty_prediction_is_strict_json_with_the_reason(folders, tmp_path):
    """HD95 / ASSD of an empty prediction are infinite: written as null with the reason, not as Infinity."""
    pred_dir, _ = folders
    pred, _ = _case(0)
    save_nifti(pred_dir / "case_a.nii.gz", np.where(pred == 2, 0, pred), AFFINE)  # label 2 missed in case_a
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(folders[1]), "--out", str(out)]) == 0
    summary = _strict_json((out / "summary.json").read_text())
    label2 = summary["mean"]["2"]
    assert label2["hd95"] is None
    assert label2["assd"] is None
    assert label2["hd95_null_reason"] == "infinite: a case has an empty prediction or an empty reference"
    assert label2["dice"] == pytest.approx(0.25)  # 0 in case_a, 0.5 in case_b (shifted by half its size)
    assert summary["mean"]["1"]["hd95"] == pytest.approx(0.5)  # 0 in case_a, 1 mm in case_b
    assert "hd95_null_reason" not in summary["mean"]["1"]
    assert summary["foreground_mean"]["hd95"] is None


def test_run_folder_with_config(folders, tmp_path):
    pred_dir, ref_dir = folders
    run = tmp_path / "run"
    run.mkdir()
    pred_dir.rename(run / "predictions")
    (run / "config.yaml").write_text(f"data:\n  labels_dir: {ref_dir}\n")
    assert main(["evaluate", str(run)]) == 0
    assert (run / "evaluation" / "summary.json").is_file()


def test_run_folder_without_reference_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run" / "predictions").mkdir(parents=True)
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "neither reference/ nor config.yaml" in capsys.readouterr().err


def test_missing_cases_are_named(folders, capsys):
    pred_dir, ref_dir = folders
    (pred_dir / "case_b.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    err = capsys.readouterr().err
    assert "no prediction" in err
    assert "case_b" in err


def test_grid_mismatch_is_a_clear_error(folders, capsys):
    pred_dir, ref_dir = folders
    pred, _ = _case(0)
    save_nifti(pred_dir / "case_a.nii.gz", pred, np.diag([1.0, 1.0, 2.0, 1.0]))
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    assert "different affines" in capsys.readouterr().err
    save_nifti(pred_dir / "case_a.nii.gz", pred[:-1], AFFINE)
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    assert "shape" in capsys.readouterr().err


def test_argument_errors(folders, capsys):
    pred_dir, ref_dir = folders
    assert main(["evaluate"]) == 2
    assert main(["evaluate", "x", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--tolerance-mm", "-1"]) == 2
    assert "tolerance" in capsys.readouterr().err


def test_non_integer_labels_are_rejected(folders, capsys):
    pred_dir, ref_dir = folders
    pred, _ = _case(0)
    save_nifti(pred_dir / "case_a.nii.gz", pred.astype(np.float32) + 0.5, AFFINE)
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    assert "non-integer" in capsys.readouterr().err


def test_empty_prediction_and_reference_score_nan(tmp_path, capsys):
    empty = np.zeros((4, 4, 4), dtype=np.uint8)
    for folder in ("pred", "ref"):
        save_nifti(tmp_path / folder / "case_e.nii.gz", empty, AFFINE)
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics_per_case.csv").open()))
    assert [(r["case"], r["label"]) for r in rows] == [("case_e", "1")]
    assert all(math.isnan(float(rows[0][key])) for key in ("dice", "iou", "surface_dice", "hd95", "assd"))
    assert float(rows[0]["lesion_tp"]) == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["labels"] == [1]
    assert summary["mean"]["1"]["dice"] is None  # strict JSON: NaN is written as null, with the reason beside it
    assert "dice_null_reason" in summary["mean"]["1"]
    assert "nan" in capsys.readouterr().out


@pytest.mark.parametrize("failing", ["_write_csv", "write_json_atomic"])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_publishes_nothing(folders, tmp_path, monkeypatch, capsys, failing, existing):
    pred_dir, ref_dir = folders
    out = tmp_path / "new" / "out"
    if existing:
        out.mkdir(parents=True)
        old = '{"n_cases": 1, "mean": {}, "config": {}}'  # an earlier evaluation's summary
        (out / "summary.json").write_text(old)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(f"medtransfer.metrics.evaluation.{failing}", disk_full)
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: cannot write metrics_per_case.csv and summary.json: the disk is full (")
    assert err.count("\n") == 1
    if existing:
        assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
        assert (out / "summary.json").read_text() == old
        assert "the existing out is unchanged" in err
    else:
        assert not (tmp_path / "new").exists()
        assert "nothing was written" in err


def test_lesion_match_rules(tmp_path, capsys):
    """``--lesion-match``: a lesion drawn in five thin fragments (IoU 0.09 each) is a miss and five false positives
    at IoU >= 0.1, one detected lesion under the MSSEG rule, and detected by any overlap."""
    ref = np.zeros((12, 12, 12), dtype=np.uint8)
    ref[1:11, 1:11, 1:11] = 1
    pred = np.zeros_like(ref)
    for z in (1, 3, 5, 7, 9):
        pred[1:11, 1:10, z] = 1
    save_nifti(tmp_path / "pred" / "a.nii.gz", pred, np.eye(4))
    save_nifti(tmp_path / "ref" / "a.nii.gz", ref, np.eye(4))
    base = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]
    found = {}
    for rule in ("0.1", "msseg", "overlap"):
        out = tmp_path / f"out_{rule}"
        assert main([*base, "--out", str(out), "--lesion-match", rule]) == 0
        summary = json.loads((out / "summary.json").read_text())
        found[rule] = (summary["mean"]["1"]["lesion_tp"], summary["mean"]["1"]["lesion_fp"])
        assert summary["config"]["lesion_iou"] == {"0.1": 0.1, "msseg": "msseg", "overlap": None}[rule]
        assert summary["config"]["connectivity"] == (6 if rule == "msseg" else 26)
    assert found == {"0.1": (0, 5), "msseg": (1, 0), "overlap": (1, 0)}
    printed = capsys.readouterr().out
    assert "a lesion is matched by MSSEG (Commowick et al. 2018)" in printed
    assert "a lesion is matched by overlap >= 1 voxel, 26-connected" in printed
    for bad in ("anima", "null", "0", "1.5"):
        assert main([*base, "--out", str(tmp_path / "bad"), "--lesion-match", bad]) == 2
        err = capsys.readouterr().err
        assert "--lesion-match must be an IoU in (0, 1]" in err
        assert "'overlap' (any voxel) or 'msseg'" in err
        assert f"got {bad!r}" in err
        assert "Traceback" not in err
    assert main([*base, "--out", str(tmp_path / "bad"), "--lesion-match", "msseg", "--connectivity", "26"]) == 2
    assert "--lesion-match msseg counts face-connected lesions (6); got --connectivity 26" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_lesion_ratios_averaged_per_case(tmp_path, capsys):
    """Beside the pooled ratios, each case's recall / precision / F1 averaged over the cases where it is defined
    (the MSSEG challenges' convention).  Worked by hand:

    * a: one lesion found plus one false positive far away: recall 1, precision 1/2, F1 2/3;
    * b: two lesions, nothing predicted: recall 0, precision undefined, F1 0;
    * c: nothing anywhere: every ratio undefined (left out of the means).

    Pooled: 1 of 3 lesions found, 1 of 2 predicted components true: recall 1/3, precision 1/2, F1 0.4."""
    shape = (12, 12, 12)
    cases = {name: (np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)) for name in "abc"}
    pred, ref = cases["a"]
    ref[1:4, 1:4, 1:4] = 1
    pred[1:4, 1:4, 1:4] = 1
    pred[8:10, 8:10, 8:10] = 1
    _, ref = cases["b"]
    ref[1:3, 1:3, 1:3] = 1
    ref[7:9, 7:9, 7:9] = 1
    for name, (pred, ref) in cases.items():
        save_nifti(tmp_path / "pred" / f"{name}.nii.gz", pred, np.eye(4))
        save_nifti(tmp_path / "ref" / f"{name}.nii.gz", ref, np.eye(4))
    out = tmp_path / "out"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]) == 0
    means = json.loads((out / "summary.json").read_text())["mean"]["1"]
    assert means["lesion_detection_rate"] == pytest.approx(1 / 3)
    assert means["lesion_precision"] == pytest.approx(1 / 2)
    assert means["lesion_f1"] == pytest.approx(0.4)
    assert means["lesion_detection_rate_scan_mean"] == pytest.approx(1 / 2)  # (1 + 0) / 2
    assert means["lesion_precision_scan_mean"] == pytest.approx(1 / 2)  # a only
    assert means["lesion_f1_scan_mean"] == pytest.approx(1 / 3)  # (2/3 + 0) / 2
    assert "lesion F1 averaged per case (the MSSEG challenges' convention" in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_a_label_map_of_several_volumes_is_one_clear_error(folders, capsys):
    """A one-hot (X, Y, Z, 2) map passed the shape check and failed in np.squeeze with a traceback."""
    pred_dir, ref_dir = folders
    for folder in (pred_dir, ref_dir):
        pred, _ = _case(0)
        save_nifti(folder / "case_a.nii.gz", np.stack([pred == 0, pred > 0], -1).astype(np.uint8), AFFINE)
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    line = _one_error_line(capsys)
    assert "case_a.nii.gz: a label map must be 3D (one volume of label values), got shape (10, 9, 8, 2)" in line


@pytest.mark.parametrize("labels", [["-1"], ["1", "-1"], ["0"]])
def test_labels_must_be_foreground_values(folders, capsys, labels):
    pred_dir, ref_dir = folders
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", *labels]) == 2
    assert "labels must be foreground label values (whole numbers > 0)" in _one_error_line(capsys)


def test_a_label_given_twice_is_scored_once(folders, tmp_path):
    """--labels 1 1 doubled the rows and the lesion totals (lesion_n_ref 4 instead of 2)."""
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--labels", "1", "1", "--out", str(out)]) == 0
    )
    rows = list(csv.DictReader((out / "metrics_per_case.csv").open()))
    assert [(r["case"], r["label"]) for r in rows] == [("case_a", "1"), ("case_b", "1")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"]["1"]["lesion_n_ref"] == 2  # one lesion of label 1 in each of the two cases


def test_a_float_label_out_of_range_is_named(folders, capsys):
    pred_dir, ref_dir = folders
    pred, _ = _case(0)
    save_nifti(pred_dir / "case_a.nii.gz", pred.astype(np.float32) * 1e20, AFFINE)
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]) == 2
    assert "label map has values up to 2e+20, out of range for labels" in _one_error_line(capsys)


@pytest.mark.parametrize("data", ["{labels_dir: 5}", "{labels_dir: [a, b]}", "[a]"])
def test_a_malformed_run_config_is_one_clear_error(folders, tmp_path, capsys, data):
    pred_dir, _ = folders
    run = tmp_path / "run"
    run.mkdir()
    pred_dir.rename(run / "predictions")
    (run / "config.yaml").write_text(f"data: {data}\n")
    assert main(["evaluate", str(run)]) == 2
    assert "config.yaml: " in _one_error_line(capsys)


def test_a_users_table_in_the_output_folder_is_not_replaced(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics_per_case.csv").write_text("user,data\n")
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 2
    assert "metrics_per_case.csv: exists without the evaluation summary.json" in _one_error_line(capsys)
    assert (out / "metrics_per_case.csv").read_text() == "user,data\n"
    (out / "metrics_per_case.csv").unlink()
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 0
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]) == 0  # its own


def test_an_output_that_is_a_file_is_refused_before_any_work(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(a_file)]) == 2
    assert f"{a_file}: is a file; the evaluation output (--out) is a folder" in _one_error_line(capsys)
