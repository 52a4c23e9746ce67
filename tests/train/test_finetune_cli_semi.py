"""``medtransfer finetune --unlabelled DIR --pseudo-rounds N``: teacher-student through the CLI on tiny data."""

from __future__ import annotations

import json
import shutil

import pytest

from medtransfer.cli import main
from testkit import SEMI_MODEL, source_checkpoint
from testkit import semi_datasets as _datasets


def _source(path):
    return str(source_checkpoint(path, SEMI_MODEL))


TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--lr", "0.01", "--device", "cpu"]


def _args(tmp_path, data, unl, *extra):
    return [
        "finetune",
        "--init",
        _source(tmp_path / "src.pt"),
        "--strategy",
        "full",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "ts"),
        "--n-labelled",
        "2",
        *TRAIN,
        "--unlabelled",
        str(unl),
        *extra,
    ]


@pytest.mark.slow
def test_pseudo_rounds_print_teacher_vs_student_dice(tmp_path, capsys):
    data, unl = _datasets(tmp_path)
    args = _args(tmp_path, data, unl, "--pseudo-rounds", "2", "--pseudo-threshold", "0.6", "--student-dropout", "0.2")
    assert main(args) == 0
    summary = json.loads((tmp_path / "ts" / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["options"]["pseudo"] == {"threshold": 0.6}
    assert summary["options"]["dropout"] == 0.2
    assert summary["options"]["finetune"]["n_labelled"] == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["round", "teacher", "Dice", "student", "Dice", "better"]
    for line, row in zip(lines[1:3], summary["rounds"], strict=True):
        r, teacher, student, better = line.split()
        assert int(r) == row["round"]
        assert float(teacher) == pytest.approx(row["teacher_val_dice"], abs=1e-4)
        assert float(student) == pytest.approx(row["student_val_dice"], abs=1e-4)
        assert better == ("yes" if row["student_better"] else "no")
    assert (tmp_path / "ts" / "round2" / "checkpoints" / "checkpoint_last.pt").is_file()


@pytest.mark.slow
def test_a_test_scan_in_unlabelled_is_refused_with_exit_2(tmp_path, capsys):
    data, unl = _datasets(tmp_path)
    from medtransfer.finetune import run_finetune

    # the teacher run the command makes (same options; the command reuses it), to learn its test cases
    teacher = run_finetune(
        {
            "data": str(data),
            "out": str(tmp_path / "ts" / "round0"),
            "init": _source(tmp_path / "src.pt"),
            "strategy": "full",
            "n_labelled": 2,
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "lr": 0.01, "device": "cpu"},
        }
    )
    test_id = json.loads((teacher / "summary.json").read_text())["test_cases"][0]
    shutil.copy(data / "imagesTr" / f"{test_id}_0000.nii.gz", unl / "images" / "innocent.nii.gz")
    # the folder holds that teacher, so the command continues it (--resume), as after an interruption
    assert main(_args(tmp_path, data, unl, "--pseudo-rounds", "1", "--resume")) == 2
    err = capsys.readouterr().err
    assert "leak held-out scans" in err
    assert f"innocent (byte-identical copy of test/validation case {test_id})" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ts" / "round1").exists()


def test_semi_options_without_unlabelled_are_refused(tmp_path, capsys):
    data, _unl = tmp_path / "nothing", tmp_path / "unl"
    args = ["finetune", "--init", "none", "--data", str(data), "--out", str(tmp_path / "o"), "--pseudo-rounds", "2"]
    assert main(args) == 2
    assert "--pseudo-rounds only applies with --unlabelled" in capsys.readouterr().err


def test_unlabelled_must_be_a_folder(tmp_path, capsys):
    data, _ = _datasets(tmp_path)
    args = ["finetune", "--init", "none", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*args, "--unlabelled", str(tmp_path / "missing")]) == 2
    assert "--unlabelled" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--pseudo-threshold", "1.5"), "--pseudo-threshold (pseudo-label threshold) must be in [0, 1], got 1.5"),
        (("--pseudo-max-entropy", "nan"), "--pseudo-max-entropy (pseudo-label max_entropy) must be in [0, 1], got nan"),
    ],
)
def test_bad_pseudo_label_options_stop_before_the_teacher_trains(tmp_path, capsys, extra, message):
    data, unl = _datasets(tmp_path)
    assert main(_args(tmp_path, data, unl, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ts").exists()  # no teacher trained, nothing left behind


def test_a_leak_stops_before_the_teacher_trains(tmp_path, capsys):
    from medtransfer.data.layouts import load_dataset
    from medtransfer.finetune import FinetuneConfig, select_cases

    data, unl = _datasets(tmp_path)
    config = FinetuneConfig.from_dict({"data": str(data), "out": "x", "init": "none", "n_labelled": 2})
    test_id = select_cases(config, load_dataset(data)).split.test[0]
    shutil.copy(data / "imagesTr" / f"{test_id}_0000.nii.gz", unl / "images" / "innocent.nii.gz")
    assert main(_args(tmp_path, data, unl)) == 2
    assert "leak held-out scans" in capsys.readouterr().err
    assert not (tmp_path / "ts").exists()


def test_a_plain_folder_of_scans_is_an_unlabelled_folder(tmp_path, capsys):
    data, unl = _datasets(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for scan in sorted((unl / "images").iterdir()):
        shutil.copy(scan, flat / scan.name)
    assert main(_args(tmp_path, data, flat, "--pseudo-rounds", "1")) == 0
    summary = json.loads((tmp_path / "ts" / "summary.json").read_text())
    assert len(summary["rounds"]) == 1


def test_a_plain_folder_with_one_case_stored_twice_is_refused(tmp_path, capsys):
    data, unl = _datasets(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    scan = sorted((unl / "images").iterdir())[0]
    shutil.copy(scan, flat / "u1.nii.gz")
    shutil.copy(scan, flat / "u1_0000.nii.gz")  # pseudo-labels are keyed by case: one would replace the other
    assert main(_args(tmp_path, data, flat, "--pseudo-rounds", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {flat / 'u1.nii.gz'}: u1_0000.nii.gz is the same case 'u1' (a case is one file named u1.nii.gz or "
        "files named u1_0000, not both); keep one of them in the folder"
    ]
    assert not (tmp_path / "ts").exists()


def test_a_folder_of_hidden_files_only_is_not_a_plain_folder_of_scans(tmp_path, capsys):
    data, _ = _datasets(tmp_path)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "._u1.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not a scan
    assert main(_args(tmp_path, data, hidden, "--pseudo-rounds", "1")) == 2
    err = capsys.readouterr().err
    assert "to predict" not in err
    assert str(hidden) in err
    assert not (tmp_path / "ts").exists()


def test_a_metadata_column_typo_is_named_with_the_columns(tmp_path, capsys):
    from testkit import blob_dataset

    data = blob_dataset(tmp_path / "data")
    argv = ["finetune", "--init", "none", "--data", str(data), "--out", str(tmp_path / "c"), "--n-labelled", "2"]
    assert main([*argv, "--classify", "metadata:domian", "--epochs", "1", "--steps-per-epoch", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown metadata column (--classify metadata:NAME) 'domian'; did you mean 'domain'" in err
