"""``run_teacher_student`` end to end on a tiny dataset: rounds are recorded, test scans never pseudo-labelled."""

from __future__ import annotations

import json
import shutil

import pytest

from medtransfer.checkpoint import load_checkpoint
from medtransfer.errors import ConfigError, DataError
from medtransfer.models import create_model
from medtransfer.semi import run_teacher_student
from testkit import SEMI_MODEL, source_checkpoint
from testkit import semi_datasets as _datasets


def _source(path):
    return str(source_checkpoint(path, SEMI_MODEL))


def _config(tmp_path, data, unl, rounds=1):
    finetune = {
        "data": str(data),
        "out": "ignored",
        "init": _source(tmp_path / "src.pt"),
        "strategy": "full",
        "n_labelled": 2,
        "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "lr": 0.01, "device": "cpu", "progress": False},
    }
    return {
        "finetune": finetune,
        "unlabelled": str(unl),
        "out": str(tmp_path / "ts"),
        "rounds": rounds,
        "pseudo": {"threshold": 0.6},
    }


@pytest.mark.slow
def test_rounds_are_recorded_and_students_are_plain_models(tmp_path):
    data, unl = _datasets(tmp_path)
    out = run_teacher_student(_config(tmp_path, data, unl, rounds=2))
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["unlabelled_cases"] == ["u0", "u1"]
    assert not set(summary["unlabelled_cases"]) & set(summary["test_cases"] + summary["val_cases"])
    for row in summary["rounds"]:
        assert 0.0 <= row["teacher_val_dice"] <= 1.0
        assert 0.0 <= row["student_val_dice"] <= 1.0
        assert row["student_better"] == (row["student_val_dice"] > row["teacher_val_dice"])
        assert all(0.0 <= f <= 1.0 for f in row["pseudo_kept_fraction"])
    # round 2's teacher is round 1's student
    assert summary["rounds"][1]["teacher_val_dice"] == pytest.approx(summary["rounds"][0]["student_val_dice"])
    ckpt = load_checkpoint(out / "round1" / "checkpoints" / "checkpoint_last.pt")
    create_model(ckpt["model"]["name"], **ckpt["model"]["config"]).load_state_dict(ckpt["state_dict"])
    # run again in the same folder with one round: round2 of the first run goes, a user's round9 without our
    # round.json stays
    (out / "round9").mkdir()
    again = run_teacher_student(_config(tmp_path, data, unl, rounds=1))
    assert [r["round"] for r in json.loads((again / "summary.json").read_text())["rounds"]] == [1]
    assert not (out / "round2").exists()
    assert (out / "round1" / "round.json").is_file()
    assert (out / "round9").is_dir()


@pytest.mark.slow
def test_a_test_scan_in_the_unlabelled_folder_is_refused(tmp_path):
    data, unl = _datasets(tmp_path)
    config = _config(tmp_path, data, unl)
    split = json.loads(_teacher_split(tmp_path, config).read_text())  # the teacher run (reused by the call below)
    test_id = split["test_cases"][0]
    # a symlink to it leaves the unlabelled folder: refused as in every dataset layout
    planted = unl / "images" / "renamed.nii.gz"
    planted.symlink_to(data / "imagesTr" / f"{test_id}_0000.nii.gz")
    with pytest.raises(DataError, match=f"1 unlabelled file\\(s\\) outside the folder: {planted}: links to"):
        run_teacher_student(config)
    planted.unlink()
    shutil.copy(data / "imagesTr" / f"{test_id}_0000.nii.gz", planted)  # a copy under another name: its bytes
    with pytest.raises(DataError, match=f"byte-identical copy of test/validation case {test_id}"):
        run_teacher_student(config)
    planted.rename(unl / "images" / f"{test_id}.nii.gz")
    with pytest.raises(DataError, match=f"{test_id} \\(same case id"):
        run_teacher_student(config)
    assert not (tmp_path / "ts" / "round1").exists()


def _teacher_split(tmp_path, config):
    from medtransfer.finetune import run_finetune

    return run_finetune({**config["finetune"], "out": str(tmp_path / "ts" / "round0")}) / "summary.json"


@pytest.mark.parametrize("key", ["context_slices", "symmetry_channel"])
def test_2_5d_or_symmetry_options_are_refused_before_any_training(tmp_path, key):
    data, unl = _datasets(tmp_path)
    config = _config(tmp_path, data, unl)
    config["finetune"][key] = 1 if key == "context_slices" else True
    with pytest.raises(ConfigError, match="not supported here"):
        run_teacher_student(config)
    assert not (tmp_path / "ts").exists()  # refused before the teacher trains


def test_an_unlabelled_scan_whose_name_cannot_be_a_case_id_is_refused_not_dropped(tmp_path):
    import nibabel as nib
    import numpy as np

    from medtransfer.semi.teacher_student import _load_unlabelled

    folder = tmp_path / "unl"
    folder.mkdir()
    for name in ("scan_a.nii.gz", "scan,b.nii.gz"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), folder / name)
    with pytest.raises(DataError, match=r"1 unlabelled scan\(s\) with unusable names: .*scan,b\.nii\.gz.*contains ','"):
        _load_unlabelled(str(folder))
    (folder / "scan,b.nii.gz").unlink()
    assert [c.case_id for c in _load_unlabelled(str(folder)).cases] == ["scan_a"]
