"""benchmarks/vs_nnunet.py and its nnU-Net launcher: split selection, the RAS round trip of nnU-Net's inputs and
predictions, the time-budget plans, and the JSON assembly.  What needs nnunetv2 is skipped without it (CI)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtransfer.errors import ConfigError, DataError


# ------------------------------------------------------------------------------------------------- split
def test_select_split_tests_on_the_runs_test_cases_and_trains_on_every_other_case(vs):
    pool = ["c0", "c1", "c2", "c3", "c4"]
    train, test = vs.select_split(pool, ["c3", "c1"])
    assert test == ["c1", "c3"]
    assert train == ["c0", "c2", "c4"]  # validation cases of the medtransfer run included: nnU-Net trains fold all


@pytest.mark.parametrize(
    ("tests", "message"),
    [(["c9"], "not in the dataset's pool of 2 cases: c9"), ([], "lists no test case"), (["c0", "c1"], "no training")],
)
def test_select_split_refuses_splits_nnunet_cannot_use(vs, tests, message):
    with pytest.raises(DataError, match=message):
        vs.select_split(["c0", "c1"], tests)


# ------------------------------------------------------------------------------------ RAS round trip
def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, affine), path)


def _oblique_lps_affine() -> np.ndarray:
    """Voxel axes (j, k, i) -> world (-y, z, -x) with 2, 3, 4 mm voxels: permuted and flipped, as brainshift does."""
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = -2.0, 3.0, -4.0, 1.0
    affine[:3, 3] = [30.0, -12.0, 5.0]
    return affine


def test_ras_copy_and_restored_prediction_round_trip_exactly(vs, tmp_path):
    rng = np.random.default_rng(0)
    label = (rng.random((5, 6, 7)) > 0.7).astype(np.uint8)
    affine = _oblique_lps_affine()
    _save(tmp_path / "label.nii.gz", label, affine)
    vs.write_ras(tmp_path / "label.nii.gz", tmp_path / "ras.nii.gz", np.uint8)
    ras = nib.load(tmp_path / "ras.nii.gz")
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    assert ras.shape == (7, 5, 6)  # world x, y, z come from voxel axes i (index 2), j (0), k (1)
    assert int(np.asarray(ras.dataobj).sum()) == int(label.sum())
    # nnU-Net's prediction lies on the RAS grid; restoring it gives back the original voxel order and affine
    vs.restore_prediction(tmp_path / "ras.nii.gz", tmp_path / "label.nii.gz", tmp_path / "back.nii.gz")
    back = nib.load(tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), label)
    np.testing.assert_allclose(back.affine, affine)


def test_restore_prediction_refuses_a_prediction_off_the_ras_grid(vs, tmp_path):
    affine = _oblique_lps_affine()
    _save(tmp_path / "label.nii.gz", np.zeros((5, 6, 7), np.uint8), affine)
    _save(tmp_path / "pred.nii.gz", np.zeros((5, 6, 7), np.uint8), affine)  # the original grid, not RAS
    message = r"pred.nii.gz: shape \(5, 6, 7\) / affine differ from the RAS grid \(7, 5, 6\)"
    with pytest.raises(DataError, match=message):
        vs.restore_prediction(tmp_path / "pred.nii.gz", tmp_path / "label.nii.gz", tmp_path / "back.nii.gz")
    assert not (tmp_path / "back.nii.gz").exists()


# ----------------------------------------------------------------------------------------------- budgets
def test_plan_medtransfer_keeps_the_recipes_epochs_and_fills_the_budget(vs):
    # 60 s budget, 5 s fixed, 0.1 s per step: 550 steps = 25 epochs of 22
    assert vs.plan_medtransfer(60.0, 0.1, 5.0, epochs=25) == (25, 22)
    # too little time for one step per epoch: fewer epochs of one step, at least one
    assert vs.plan_medtransfer(7.0, 0.1, 5.0, epochs=25) == (20, 1)
    assert vs.plan_medtransfer(4.0, 0.1, 5.0, epochs=25) == (1, 1)


def test_plan_first_epochs_fits_whole_nnunet_epochs_or_shortens_the_only_one(launcher):
    # 0.5 s per iteration, 250 + 50 validation iterations (at half cost): 137.5 s per epoch
    assert launcher.plan_first_epochs(600.0, 0.5, 250, 50) == (4, 250, 50)
    # 55 s is 40 % of an epoch: one epoch of 100 + 20 iterations
    assert launcher.plan_first_epochs(55.0, 0.5, 250, 50) == (1, 100, 20)
    assert launcher.plan_first_epochs(0.0, 0.5, 250, 50) == (1, 1, 1)


def test_plan_remaining_epochs_adds_the_epochs_that_still_fit(launcher):
    assert launcher.plan_remaining_epochs(1200.0, 280.0, 1, 270.0) == 4  # 920 s left: 3 more epochs of 270 s
    assert launcher.plan_remaining_epochs(1200.0, 1190.0, 4, 270.0) == 4  # none fits: stop
    assert launcher.plan_remaining_epochs(1200.0, 1300.0, 5, 270.0) == 5  # over budget: stop, never fewer than done


# ---------------------------------------------------------------------------------------------- the JSON
def _evaluation(dice: float, recall: float, precision: float, f1: float) -> dict:
    """The parts of ``medtransfer evaluate``'s summary.json that the benchmark reads."""
    lesion = {"lesion_detection_rate": recall, "lesion_precision": precision, "lesion_f1": f1}
    return {
        "config": {"labels": [1], "lesion_iou": 0.1},
        "mean": {"1": {"dice": dice, **lesion}},
        "foreground_mean": {"dice": dice},
    }


def test_scores_come_from_the_evaluation_summary(vs):
    scores = vs.scores_from_evaluation(_evaluation(0.3, 0.5, 0.25, 1 / 3), lesions=True)
    assert scores == {"dice": 0.3, "lesion_recall": 0.5, "lesion_precision": 0.25, "lesion_f1": pytest.approx(1 / 3)}
    anatomy = vs.scores_from_evaluation(_evaluation(0.8, 0.5, 0.5, 0.5), lesions=False)
    assert anatomy == {"dice": 0.8, "lesion_recall": None, "lesion_precision": None, "lesion_f1": None}


def test_assemble_target_gives_ratios_medtransfer_over_nnunet_and_says_why_one_is_missing(vs):
    ours = {"dice": 0.3, "lesion_recall": 0.5, "lesion_precision": 0.2, "lesion_f1": None, "train_seconds": 60.0}
    theirs = {"dice": 0.6, "lesion_recall": 0.0, "lesion_precision": 0.4, "lesion_f1": 0.3, "train_seconds": 50.0}
    entry = vs.assemble_target({"test_cases": ["c1"]}, ours, theirs)
    ratio = entry["ratio_medtransfer_over_nnunet"]
    assert ratio["dice"] == pytest.approx(0.5)
    assert ratio["lesion_precision"] == pytest.approx(0.5)
    assert ratio["train_seconds"] == pytest.approx(1.2)
    assert ratio["lesion_recall"] is None
    assert ratio["lesion_recall_null_reason"] == "nnU-Net's value is 0"
    assert ratio["lesion_f1"] is None
    assert ratio["lesion_f1_null_reason"] == "a value is missing or not finite"
    assert entry["medtransfer"] == ours
    assert entry["nnunet"] == theirs
    assert entry["split"] == {"test_cases": ["c1"]}
    json.dumps(entry, allow_nan=False)  # strict JSON: no NaN


def test_an_arm_that_trained_under_its_budget_is_named(vs):
    ours = {"dice": 0.0, "train_seconds": 492.0}  # the seed-11 MS run of 2026-12-06: a 900 s budget, 55 % used
    theirs = {"dice": 0.0, "train_seconds": 806.0}
    entry = vs.assemble_target({}, ours, theirs, budget_s=900.0)
    assert entry["budget_used"] == {"medtransfer": pytest.approx(492 / 900), "nnunet": pytest.approx(806 / 900)}
    assert entry["warnings"] == ["medtransfer trained 55% of the 900 s budget: the comparison favours the other arm"]
    assert "warnings" not in vs.assemble_target({}, ours, theirs)


def test_ratios_treat_nan_as_missing(vs):
    assert vs.ratios({"dice": math.nan}, {"dice": 0.5}, ["dice"])["dice"] is None


def test_the_lesion_rule_states_the_overlap_threshold(vs):
    assert "IoU >= 0.1" in vs.lesion_rule(0.1)


def test_default_recipe_is_the_shipped_lesion_recipe(vs):
    from medtransfer.data.preprocess import PreprocessConfig
    from medtransfer.finetune import FinetuneConfig

    recipe = vs.default_recipe()
    assert (recipe["test_fraction"], recipe["split_seed"]) == (0.5, 0)  # the demo's split: 8 of 16 subjects tested
    assert recipe["context_slices"] == 1
    assert recipe["min_component_mm3"] == "auto"
    config = FinetuneConfig.from_dict(recipe, data="d", out="o")  # a finetune mapping the CLI's --config accepts
    assert config.init is None
    assert config.strategy == "scratch"
    # works at 1.5 mm whatever the build's spacing (MS lesions of ~10 voxels at 2 mm were mostly missed)
    assert PreprocessConfig.from_dict(config.preprocess).target_spacing == (1.5, 1.5, 1.5)


def test_load_recipe_names_the_file_and_the_bad_train_key(vs, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: unknown train config key 'epoch'; did you mean 'epochs'"):
        vs.load_recipe(str(path))
    path.write_text("augment: spatial\ntrain: {epochs: 3}\n")
    assert vs.load_recipe(str(path)) == {"augment": "spatial", "train": {"epochs": 3}}


def test_check_data_names_the_missing_dataset(vs, tmp_path):
    (tmp_path / "Dataset004_StrokeLesion").mkdir()
    (tmp_path / "Dataset004_StrokeLesion" / "dataset.json").write_text("{}")
    assert vs.check_data(tmp_path, ["stroke_lesion"]) == tmp_path
    with pytest.raises(DataError, match=rf"^{tmp_path}: no Dataset003_MSLesion/dataset.json"):
        vs.check_data(tmp_path, ["stroke_lesion", "ms_lesion"])


def test_set_batch_size_rewrites_one_configuration_of_the_plans(vs, tmp_path):
    plans = tmp_path / "nnUNetPlans.json"
    content = {
        "plans_name": "nnUNetPlans",
        "configurations": {
            "2d": {"batch_size": 48, "patch_size": [160, 128]},
            "3d_fullres": {"batch_size": 2, "patch_size": [96, 112, 96]},
            "3d_lowres": {"inherits_from": "3d_fullres"},
        },
    }
    plans.write_text(json.dumps(content))
    assert vs.set_batch_size(plans, "2d", 12) == 48  # the planned one, for the JSON
    written = json.loads(plans.read_text())
    content["configurations"]["2d"]["batch_size"] = 12  # that and nothing else changed
    assert written == content
    with pytest.raises(ConfigError, match=r"no configuration '3d_cascade_fullres' \(has: \['2d', '3d_fullres'"):
        vs.set_batch_size(plans, "3d_cascade_fullres", 12)


def test_parse_args_refuses_a_batch_size_under_one(vs, capsys):
    assert vs.parse_args(["--nnunet-batch-size", "12"]).nnunet_batch_size == 12
    assert vs.parse_args([]).nnunet_batch_size is None
    with pytest.raises(SystemExit):
        vs.parse_args(["--nnunet-batch-size", "0"])
    assert "--nnunet-batch-size must be >= 1, got 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------- needs nnunetv2 (not in CI)
def test_launcher_registers_the_time_budget_trainer_where_nnunet_finds_it(launcher):
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    launcher.stub_primus()
    launcher.register_trainer()
    trainer = recursive_find_trainer_class_by_name(launcher.TRAINER_NAME)
    assert trainer.__name__ == "nnUNetTrainer_TimeBudget"
    assert issubclass(trainer, nnUNetTrainer)
    # nnU-Net records its constructor's arguments through the subclass's signature: it must be the base's
    assert "__init__" not in vars(trainer)


def test_the_medtransfer_arm_trains_every_training_subject_and_predicts_the_test_scans(vs, tmp_path):
    # the arm end to end through medtransfer's CLI (probe, budgeted run, predict), on a tiny dataset and budget
    import yaml

    from testkit import blob_dataset

    data = blob_dataset(tmp_path / "blobs", n=10)
    recipe = {
        "model": "unet",
        "model_config": {"spatial_dims": 2, "features": 4, "depth": 2},
        "n_labelled": "all",
        "test_fraction": 0.4,
        "val_fraction": 0.2,
        "max_val_cases": 1,
        "train": {
            "epochs": 2,
            "steps_per_epoch": 3,
            "batch_size": 4,
            "lr": 0.01,
            "optimizer": "adam",
            "precision": "fp32",
            "progress": False,
        },
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    ours = vs.run_medtransfer(data, "a", tmp_path / "recipe.yaml", 2.0, tmp_path / "arm")
    cases_a = {f"c{i}" for i in range(1, 10, 2)}  # domain a: the odd cases
    assert set(ours["test_cases"]) | set(ours["labelled_cases"]) | set(ours["val_cases"]) == cases_a
    assert len(ours["test_cases"]) == 2
    assert len(ours["val_cases"]) == 1
    assert len(ours["labelled_cases"]) == 2  # n_labelled: all = every subject not held out
    assert sorted(p.name for p in (tmp_path / "arm" / "predictions").iterdir()) == sorted(
        f"{c}.nii.gz" for c in ours["test_cases"]
    )
