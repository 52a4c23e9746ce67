"""``medtransfer pretrain --task import --model nnunet``: an nnU-Net v2 trained model folder, built here the way
nnU-Net writes it (plans.json, dataset.json, fold_0/checkpoint_final.pth from ``nnUNetTrainer.save_checkpoint``),
becomes a source checkpoint with named stages and nnU-Net's preprocessing; then it is fine-tuned on data with other
channels and classes.  The reference network comes from ``dynamic_network_architectures`` (``--no-deps`` install)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import write_dataset_json
from medtransfer.finetune import run_finetune
from medtransfer.models import create_model
from medtransfer.models.nnunet_plans import config_from_plans
from medtransfer.pretrain.import_nnunet import architecture, load_nnunet_checkpoint, ras_axes
from medtransfer.transfer import list_strategies
from testkit import NNUNET_LABELS as LABELS
from testkit import nnunet_arch as _arch
from testkit import nnunet_model_folder as model_folder


def _import(folder, out, *extra) -> int:
    return main(
        ["pretrain", "--task", "import", "--model", "nnunet", "--weights", str(folder), "--out", str(out), *extra]
    )


@pytest.mark.parametrize(
    ("class_name", "configuration", "order", "spacing", "inference"),
    [
        (
            "PlainConvUNet",
            "3d_fullres",
            (0, 1, 4, 3, 2),
            [0.9, 0.8, 2.0],
            {"divisor": 4, "patch_size": [12, 16, 8], "overlap": 0.5},
        ),
        ("ResidualEncoderUNet", "2d", (0, 1, 3, 2), [0.9, 0.8, 2.0], {"divisor": 4, "slice_axis": 2}),
    ],
)
def test_import_reproduces_the_nnunet_network_with_its_preprocessing(
    tmp_path, capsys, class_name, configuration, order, spacing, inference
):
    folder, net = model_folder(tmp_path, class_name, configuration)
    assert _import(folder, tmp_path / "src.pt") == 0
    assert "wrote" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "src.pt")
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["config"]).eval()
    model.load_state_dict(ckpt["state_dict"])
    x = torch.randn(2, 1, *([8, 16, 12] if configuration == "3d_fullres" else [16, 12]))
    with torch.no_grad():  # nnU-Net's (z, y, x) arrays are medtransfer's (x, y, z): the same voxels, reordered
        torch.testing.assert_close(model(x.permute(order)), net(x).permute(order), rtol=1e-4, atol=1e-4)
    meta = ckpt["meta"]
    assert meta["stage_names"] == ["input", "enc1", "bottleneck", "dec2", "dec1", "head"]
    assert meta["preprocess"]["target_spacing"] == spacing  # x, y, z; 2d: z is the median slice spacing
    assert meta["preprocess"]["scaling"] == "zscore"
    assert meta["preprocess"]["clip_percentiles"] is None
    assert meta["inference"] == inference
    assert meta["labels"] == LABELS
    assert meta["source_domain"] == "Dataset042_Tiny"
    assert meta["metrics"] == {"ema_fg_dice": pytest.approx(0.61)}
    assert meta["nnunet"]["configuration"] == configuration
    assert meta["nnunet"]["ignored"] == ["decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias"]
    assert meta["nnunet"]["intensity_properties"]["0"]["percentile_99_5"] == 400.0
    assert not meta["load_audit"]["missing"]
    assert len(meta["load_audit"]["loaded"]) == len(ckpt["state_dict"])


def _target_data(root, n=4):
    """Two channels and three labels (the nnU-Net source has one channel and two outputs)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        label = np.zeros((16, 16, 8), np.uint8)
        label[3:8, 4:10, 2:6], label[9:14, 6:12, 2:6] = 1, 2
        for c in range(2):
            image = (label * (40.0 + 20 * c) + rng.normal(100, 5, label.shape)).astype(np.float32)
            save_nifti(root / "imagesTr" / f"t{i}_{c:04d}.nii.gz", image, np.diag([0.9, 0.8, 2.0, 1.0]))
        save_nifti(root / "labelsTr" / f"t{i}.nii.gz", label, np.diag([0.9, 0.8, 2.0, 1.0]))
    write_dataset_json(root, {"background": 0, "a": 1, "b": 2}, ["T1", "T2"], n)
    return root


def _finetune(tmp_path, source, data, strategy, patch_size=(16, 16, 8)):
    return run_finetune(
        {
            "data": str(data),
            "out": str(tmp_path / "run"),
            "init": str(source),
            "strategy": strategy,
            "n_labelled": 2,
            "patch_size": patch_size,
            "preprocess": {"target_spacing": None, "crop_to_foreground": False},
            "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "lr": 0.05, "device": "cpu",
                      "precision": "fp32", "progress": False},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The 3d_fullres PlainConvUNet and the 2d ResEnc model folders imported, and a target dataset."""
    root = tmp_path_factory.mktemp("imported")
    for class_name, configuration in (("PlainConvUNet", "3d_fullres"), ("ResidualEncoderUNet", "2d")):
        folder, _ = model_folder(root / configuration, class_name, configuration)
        assert _import(folder, root / f"{configuration}.pt") == 0
    return root, _target_data(root / "target")


@pytest.mark.parametrize(
    ("strategy", "trained", "frozen"), [("first_k:2", "enc1", "dec1"), ("bn_only", ".norm.", ".conv.")]
)
def test_imported_nnunet_fine_tunes_on_other_channels_and_classes(tmp_path, imported, strategy, trained, frozen):
    root, data = imported
    run = _finetune(tmp_path, root / "3d_fullres.pt", data, strategy)
    ckpt = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")
    audit = ckpt["meta"]["load_audit"]
    assert audit["adapted"] == ["encoder.stages.input.convs.0.conv.weight"]  # 1 -> 2 input channels
    assert {"head.conv.weight", "head.conv.bias"} <= set(audit["skipped_shape"])  # 2 -> 3 classes
    assert ckpt["model"]["config"]["in_channels"] == 2
    assert ckpt["model"]["config"]["out_channels"] == 3
    state, source = ckpt["state_dict"], load_checkpoint(root / "3d_fullres.pt")["state_dict"]
    same = {k: torch.equal(state[k], source[k]) for k in source if k in state and state[k].shape == source[k].shape}
    assert [k for k in same if frozen in k]
    assert all(same[k] for k in same if frozen in k)  # what the strategy froze kept the nnU-Net weights
    assert not all(same[k] for k in same if trained in k)  # what it trains moved


@pytest.mark.parametrize("strategy", [*(e.name for e in list_strategies()), "spottune"])
def test_imported_resenc_fine_tunes_with_every_strategy(tmp_path, imported, strategy):
    root, data = imported
    run = _finetune(tmp_path, root / "2d.pt", data, strategy)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2
    assert np.isfinite(summary["final_train_loss"])
    audit = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["meta"]["load_audit"]
    if strategy != "scratch":
        assert audit["adapted"] == ["encoder.stages.input.stem.convs.0.conv.weight"]


def test_imported_nnunet_predicts_with_its_own_preprocessing(tmp_path):
    folder, _ = model_folder(tmp_path)
    assert _import(folder, tmp_path / "src.pt") == 0
    scan = np.random.default_rng(1).normal(100, 10, (20, 18, 9)).astype(np.float32)
    save_nifti(tmp_path / "scan.nii.gz", scan, np.diag([0.45, 0.8, 4.0, 1.0]))
    argv = ["predict", "--model", str(tmp_path / "src.pt"), "--input", str(tmp_path / "scan.nii.gz")]
    assert main([*argv, "--output", str(tmp_path / "mask.nii.gz"), "--device", "cpu", "--precision", "fp32"]) == 0
    mask = nib.load(tmp_path / "mask.nii.gz").get_fdata()
    assert mask.shape == scan.shape
    assert set(np.unique(mask)) <= {0, 1}


# --- clear errors, no nnU-Net network needed ----------------------------------------------------------------------


def _stub_folder(root, name="nnUNetTrainer__nnUNetPlans__3d_fullres", configuration=None, architecture=None):
    """A model folder whose checkpoint holds a decoder tensor only (enough to reach the plans checks)."""
    plans = {"transpose_forward": [0, 1, 2], "configurations": {"2d": {}, "3d_fullres": {}, "3d_lowres": {}}}
    if architecture is not None:
        plans["configurations"]["3d_fullres"]["architecture"] = architecture
    folder = root / name
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS}))
    init_args = {"configuration": configuration} if configuration else {}
    torch.save({"network_weights": {"decoder.seg_layers.0.weight": torch.zeros(2, 4, 1, 1, 1)}, "init_args": init_args},
               folder / "fold_0" / "checkpoint_final.pth")  # fmt: skip
    return folder


def _error(capsys, folder, *extra) -> str:
    assert _import(folder, folder.parent / "out.pt", *extra) == 2
    assert not (folder.parent / "out.pt").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    return err.strip()


def test_folder_without_plans_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _error(capsys, tmp_path / "empty") == (
        f"error: {tmp_path / 'empty' / 'plans.json'}: not found; --weights takes an nnU-Net v2 trained model folder "
        "(plans.json, dataset.json, fold_N/checkpoint_final.pth)"
    )


def test_a_file_given_as_the_model_folder_is_named(tmp_path, capsys):
    (tmp_path / "model.pth").write_bytes(b"")
    assert _error(capsys, tmp_path / "model.pth") == (
        f"error: {tmp_path / 'model.pth'}: a checkpoint file is read from the fold_N folder of its model folder, but "
        f"there is no {tmp_path.parent / 'plans.json'}; --weights takes an nnU-Net v2 trained model folder "
        "(plans.json, dataset.json, fold_N/checkpoint_final.pth)"
    )


def test_fold_without_checkpoint_is_one_clear_error(tmp_path, capsys):
    folder = _stub_folder(tmp_path)
    (folder / "fold_3").mkdir()
    (folder / "fold_3" / "checkpoint_best.pth").write_bytes(b"")
    assert _error(capsys, folder, "--fold", "3") == (
        f"error: {folder / 'fold_3' / 'checkpoint_final.pth'}: not found; folds with a checkpoint_final.pth: fold_0 "
        "(choose with --fold); or give one of checkpoint_best.pth itself as --weights"
    )


def test_unknown_configuration_suggests_the_plans_ones(tmp_path, capsys):
    folder = _stub_folder(tmp_path, "nnUNetTrainer__nnUNetPlans__3d_fulres")
    assert _error(capsys, folder) == (
        f"error: {folder / 'plans.json'}: unknown nnU-Net configuration '3d_fulres'; did you mean '3d_fullres' or "
        "'3d_lowres'? Allowed: 2d, 3d_fullres, 3d_lowres"
    )


def test_architecture_that_cannot_be_rebuilt_is_one_clear_error(tmp_path, capsys):
    arch = {"network_class_name": "dynamic_network_architectures.architectures.primus.Primus", "arch_kwargs": {}}
    folder = _stub_folder(tmp_path, "renamed", configuration="3d_fullres", architecture=arch)
    assert _error(capsys, folder) == (
        f"error: {folder / 'plans.json'}: network class 'dynamic_network_architectures.architectures.primus.Primus' "
        "cannot be rebuilt by medtransfer; supported: PlainConvUNet, ResidualEncoderUNet "
        "(dynamic_network_architectures)"
    )


class Trainer:  # a pickled object: weights_only loading must refuse it
    pass


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    folder = _stub_folder(tmp_path)
    torch.save({"network_weights": {"decoder.x": torch.zeros(1)}, "trainer": Trainer()}, folder / "fold_0" / "x.pth")
    err = _error(capsys, folder / "fold_0" / "x.pth")
    assert err.startswith(f"error: {folder / 'fold_0' / 'x.pth'}: refused: the file holds pickled code")
    assert "Trainer" in err


def test_checkpoint_numpy_values_load_in_both_numpy_spellings(tmp_path):
    """nnU-Net's logger stores numpy scalars and arrays: numpy 2 pickles them from ``numpy._core``, numpy 1 from
    ``numpy.core``; both are plain data that the weights-only loader accepts."""
    buffer = io.BytesIO()
    state = {"network_weights": {"decoder.x": torch.ones(2)}, "logging": {"ema": [np.float64(0.5), np.arange(3)]}}
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    for spelling in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        path = tmp_path / "checkpoint_final.pth"
        path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray", spelling))
        ckpt = load_nnunet_checkpoint(path)
        assert ckpt["logging"]["ema"][0] == np.float64(0.5)
        assert ckpt["logging"]["ema"][1].tolist() == [0, 1, 2]
        assert torch.equal(ckpt["state_dict"]["decoder.x"], torch.ones(2))


def test_plans_before_nnunet_2_4_describe_the_same_network():
    legacy = {
        "UNet_class_name": "PlainConvUNet",
        "UNet_base_num_features": 4,
        "unet_max_num_features": 12,
        "n_conv_per_stage_encoder": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2],
        "conv_kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "pool_op_kernel_sizes": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "patch_size": [8, 16, 12],
    }
    arch = architecture(legacy, Path("plans.json"), "3d_fullres")
    assert arch["arch_kwargs"]["features_per_stage"] == [4, 8, 12]
    config = config_from_plans(arch["network_class_name"], arch["arch_kwargs"])
    expected = _arch("PlainConvUNet", 3)
    expected["arch_kwargs"]["features_per_stage"] = [4, 8, 12]
    assert config == config_from_plans(expected["network_class_name"], expected["arch_kwargs"])


@pytest.mark.parametrize("transpose_forward", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_ras_axes_undo_nnunets_array_order(transpose_forward):
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)  # medtransfer's (x, y, z)
    network = volume.transpose(2, 1, 0).transpose(transpose_forward)  # nnU-Net: the file's (z, y, x), transposed
    axes, _ = ras_axes(transpose_forward, 3, Path("plans.json"))
    assert np.array_equal(network.transpose(axes), volume)
    axes_2d, slice_axis = ras_axes(transpose_forward, 2, Path("plans.json"))
    assert np.array_equal(network[1].transpose(axes_2d), np.take(volume, 1, axis=slice_axis))  # nnU-Net's slice 1


def test_dataset_json_of_another_model_is_one_clear_error(tmp_path, capsys):
    folder, _ = model_folder(tmp_path)
    dataset = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1, "b": 2}}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    assert _error(capsys, folder) == (
        f"error: {folder / 'dataset.json'}: names 2 channel(s) and 3 output(s), but "
        f"{folder / 'fold_0' / 'checkpoint_final.pth'} takes 1 channel(s) and predicts 2; plans, dataset.json and "
        "fold must come from the same model folder"
    )
