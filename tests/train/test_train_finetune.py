"""``run_finetune`` / ``medtransfer finetune`` on a tiny nnU-Net dataset written to tmp_path."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.models import create_model
from testkit import FINETUNE_ARGS as TRAIN
from testkit import FINETUNE_MODEL as MODEL_CFG
from testkit import blob_dataset as _dataset
from testkit import source_checkpoint as _source


def test_finetune_writes_a_complete_run_folder(tmp_path):
    data, source, out = _dataset(tmp_path / "ds"), _source(tmp_path / "src.pt"), tmp_path / "run"
    argv = ["finetune", "--init", str(source), "--strategy", "full", "--data", str(data), "--out", str(out)]
    assert main([*argv, "--n-labelled", "2", "--seed", "1", *TRAIN]) == 0
    for name in ("config.yaml", "env.json", "history.jsonl", "summary.json", "checkpoints/checkpoint_best.pt"):
        assert (out / name).is_file(), name
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["epochs"] == 2
    assert config["train"]["loss"] == "bce"
    assert config["seed"] == 1
    env = json.loads((out / "env.json").read_text())
    assert env["seed"] == 1
    assert env["torch"] == torch.__version__
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert summary["global_step"] == 6
    assert len(summary["labelled_cases"]) == 2
    assert not set(summary["labelled_cases"]) & set(summary["val_cases"] + summary["test_cases"])
    ckpt = load_checkpoint(out / "checkpoints" / "checkpoint_best.pt")
    assert ckpt["model"]["config"]["out_channels"] == 1
    assert ckpt["meta"]["strategy"]
    assert "head.conv.weight" in ckpt["meta"]["load_audit"]["skipped_shape"]  # 3 source classes -> 1 target
    assert ckpt["meta"]["labels"] == {"background": 0, "blob": 1}

    assert (
        main(
            [
                "predict",
                "--model",
                str(out),
                "--input",
                str(data / "imagesTr" / "c0_0000.nii.gz"),
                "--output",
                str(tmp_path / "pred.nii.gz"),
            ]
        )
        == 0
    )
    assert nib.load(tmp_path / "pred.nii.gz").shape == (20, 20, 8)

    # A finished run is skipped on --resume (the grid relies on it).
    mtime = (out / "summary.json").stat().st_mtime_ns
    assert main([*argv, "--n-labelled", "2", "--seed", "1", "--resume", *TRAIN]) == 0
    assert (out / "summary.json").stat().st_mtime_ns == mtime


def test_finetune_from_scratch_with_slice_budget_and_domain(tmp_path):
    data = _dataset(tmp_path / "ds")
    (tmp_path / "c.yaml").write_text(
        "model_config: {features: 4, depth: 2}\npreprocess: {crop_margin: 1}\ntrain: {optimizer: adam}\n"
    )
    argv = [
        "finetune",
        "--init",
        "none",
        "--strategy",
        "scratch",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--target-domain",
        "a",
        "--n-labelled",
        "1",
        "--every-kth-slice",
        "3",
        "--config",
        str(tmp_path / "c.yaml"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main([*argv, *TRAIN]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    budget = load_checkpoint(tmp_path / "r" / "checkpoints" / "checkpoint_last.pt")["meta"]["budget"]
    (slices,) = budget["slices"].values()
    assert np.all(np.diff(slices) == 3)
    assert summary["labelled_slices"] == len(slices) >= 2
    assert all(int(c[1:]) % 2 == 1 for c in summary["labelled_cases"] + summary["val_cases"])
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["train"]["optimizer"] == "adam"
    assert config["init"] is None
    assert len(list((tmp_path / "cache").glob("*/index.json"))) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-domain", "zz"], "no case of domain 'zz'"),
        (["--n-labelled", "40"], "n_labelled 40 (--n-labelled): the training pool"),
    ],
)
def test_finetune_bad_options(tmp_path, capsys, extra, message):
    data = _dataset(tmp_path / "ds")
    argv = ["finetune", "--init", "none", "--data", str(data), "--out", str(tmp_path / "r"), *extra, *TRAIN]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_first_k_keeps_frozen_stages_bit_identical(tmp_path):
    data, source, out = _dataset(tmp_path / "ds"), _source(tmp_path / "src.pt"), tmp_path / "run"
    argv = ["finetune", "--init", str(source), "--strategy", "first_k:1", "--data", str(data), "--out", str(out)]
    assert main([*argv, "--n-labelled", "2", *TRAIN]) == 0
    trained = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")
    src = load_checkpoint(source)["state_dict"]
    stages = create_model("unet", **MODEL_CFG).parameter_stages()
    changed = {stages[k] for k in stages if k in src and not torch.equal(trained["state_dict"][k], src[k])}
    assert changed == {"input", "head"}  # input trained; head re-initialised for 1 class (shape differs)
    rows = {row["stage"]: row for row in trained["meta"]["strategy"]["stages"]}
    assert rows["input"]["trainable"]
    assert not rows["enc1"]["trainable"]


def test_finetune_3d_patches(tmp_path):
    data = _dataset(tmp_path / "ds")
    (tmp_path / "c.yaml").write_text(
        "model_config: {spatial_dims: 3, features: 4, depth: 2}\npatch_size: [16, 16, 8]\nmax_val_cases: 1\n"
    )
    out = tmp_path / "r3"
    argv = ["finetune", "--init", "none", "--data", str(data), "--out", str(out), "--config", str(tmp_path / "c.yaml")]
    assert main([*argv, "--n-labelled", "1", *TRAIN]) == 0
    ckpt = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")
    assert ckpt["meta"]["inference"]["patch_size"] == [16, 16, 8]
    assert ckpt["model"]["config"]["spatial_dims"] == 3
    assert json.loads((out / "summary.json").read_text())["final_val_dice"] is not None


@pytest.mark.slow
def test_finetune_then_predict_segments_a_held_out_scan(tmp_path):
    data = _dataset(tmp_path / "ds", n=8)
    (tmp_path / "c.yaml").write_text("model_config: {features: 8, depth: 2}\ntrain: {optimizer: adam}\n")
    out = tmp_path / "run"
    train = ["--epochs", "6", "--steps-per-epoch", "8", "--batch-size", "8", "--lr", "0.01", "--device", "cpu"]
    argv = ["finetune", "--init", "none", "--data", str(data), "--out", str(out), "--config", str(tmp_path / "c.yaml")]
    assert main([*argv, "--n-labelled", "3", *train]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_val_dice"] > 0.8
    case = summary["test_cases"][0]
    pred_path = tmp_path / "pred.nii.gz"
    src = data / "imagesTr" / f"{case}_0000.nii.gz"
    assert main(["predict", "--model", str(out), "--input", str(src), "--output", str(pred_path)]) == 0
    pred = np.asarray(nib.load(pred_path).dataobj) > 0
    ref = np.asarray(nib.load(data / "labelsTr" / f"{case}.nii.gz").dataobj) > 0
    assert 2 * (pred & ref).sum() / (pred.sum() + ref.sum()) > 0.8

    # the checkpoint fixes the training spacing, so a scan stored at another resolution is predicted at the
    # scale the network learnt, then written on the scan's own grid
    meta = load_checkpoint(out / "checkpoints" / "checkpoint_best.pt")["meta"]
    assert meta["preprocess"]["target_spacing"] == [1.0, 1.0, 2.0]
    fine = ndimage.zoom(np.asarray(nib.load(src).dataobj, dtype=np.float32), 2, order=1)
    fine_ref = ndimage.zoom(ref.astype(np.uint8), 2, order=0) > 0
    save_nifti(tmp_path / "fine.nii.gz", fine, np.diag([0.5, 0.5, 1.0, 1.0]))
    assert (
        main(
            [
                "predict",
                "--model",
                str(out),
                "--input",
                str(tmp_path / "fine.nii.gz"),
                "--output",
                str(pred_path),
                "--overwrite",
            ]
        )
        == 0
    )
    pred = np.asarray(nib.load(pred_path).dataobj) > 0
    assert pred.shape == fine.shape
    assert 2 * (pred & fine_ref).sum() / (pred.sum() + fine_ref.sum()) > 0.8


def test_inference_preprocess_fixes_the_median_training_spacing():
    from types import SimpleNamespace

    from medtransfer.data.preprocess import PreprocessConfig
    from medtransfer.finetune.segment import inference_preprocess

    def case(*spacing):
        return SimpleNamespace(info=SimpleNamespace(spacing=spacing))

    cases = [case(2.0, 2.0, 3.0), case(1.0, 1.0, 1.0), case(2.0, 2.0, 3.0)]
    assert inference_preprocess(PreprocessConfig(), cases).target_spacing == (2.0, 2.0, 3.0)
    fixed = PreprocessConfig(target_spacing=(1.0, 1.0, 1.0))
    assert inference_preprocess(fixed, cases) is fixed  # a configured spacing is already what new scans get
