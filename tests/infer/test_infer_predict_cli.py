"""``medtransfer predict`` on real NIfTI files: input geometry kept exactly, object found in the right place."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.checkpoint import save_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.models import list_models, register_model

THRESHOLD = "test_threshold_net"


class ThresholdNet(nn.Module):
    """A hand-built "trained" model: logit = 40 * (x - 0.5) on the [0, 1]-scaled image (2D or 3D)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(40.0 / in_channels)
            self.conv.bias.fill_(-20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


if THRESHOLD not in list_models():
    register_model(THRESHOLD, "test-only threshold network")(ThresholdNet)


def _run(tmp_path, spatial_dims=2, in_channels=1, inference=None):
    model = ThresholdNet(spatial_dims, in_channels)
    meta = {
        "preprocess": {"target_spacing": [1.0, 1.0, 1.0], "clip_percentiles": [0.0, 100.0]},
        "labels": {"background": 0, "lesion": 3},
        "inference": inference or {"divisor": 4},
    }
    spec = {"name": THRESHOLD, "config": {"spatial_dims": spatial_dims, "in_channels": in_channels}}
    save_checkpoint(
        tmp_path / "run" / "checkpoints" / "checkpoint_best.pt",
        {"model": spec, "state_dict": model.state_dict(), "meta": meta},
    )
    return tmp_path / "run"


def _scan():
    """A (30, 20, 12) LPI-like, anisotropic (0.8, 1.5, 2.5 mm), oblique-free scan with a bright box."""
    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 0.05, (30, 20, 12)).astype(np.float32)
    box = np.zeros(array.shape, bool)
    box[8:20, 5:14, 3:9] = True
    array[box] += 1.0
    affine = np.array([[0, 0, -2.5, 10.0], [-0.8, 0, 0, 20.0], [0, 1.5, 0, -5.0], [0, 0, 0, 1]])
    return array, affine, box


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(
    ("spatial_dims", "inference"), [(2, {"divisor": 4, "slice_axis": 1}), (3, {"patch_size": [8, 8, 8]})]
)
def test_predict_keeps_input_grid_and_finds_the_object(tmp_path, spatial_dims, inference):
    run = _run(tmp_path, spatial_dims, inference=inference)
    array, affine, box = _scan()
    save_nifti(tmp_path / "scan.nii.gz", array, affine)
    assert (
        main(
            [
                "predict",
                "--model",
                str(run),
                "--input",
                str(tmp_path / "scan.nii.gz"),
                "--output",
                str(tmp_path / "mask.nii.gz"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.shape == array.shape
    assert np.allclose(out.affine, affine)
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) == {0, 3}
    assert _dice(labels == 3, box) > 0.9


def test_predict_folder_of_two_channel_cases(tmp_path):
    run = _run(tmp_path, in_channels=2)
    array, affine, box = _scan()
    (tmp_path / "in").mkdir()
    for case in ("a", "b"):
        for c in range(2):
            save_nifti(tmp_path / "in" / f"{case}_{c:04d}.nii.gz", array, affine)
    assert (
        main(["predict", "--model", str(run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 0
    )
    for case in ("a", "b"):
        labels = np.asarray(nib.load(tmp_path / "out" / f"{case}.nii.gz").dataobj)
        assert _dice(labels == 3, box) > 0.9


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    run = _run(tmp_path)
    save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 5), np.float32), np.eye(4))
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    array, affine, _ = _scan()
    save_nifti(tmp_path / "two.nii.gz", np.stack([array, array], -1), affine)
    cases = {"flat.nii.gz": "expected a 3D image", "junk.nii.gz": "unreadable", "two.nii.gz": "takes 1 channel"}
    for name, message in cases.items():
        argv = ["predict", "--model", str(run), "--input", str(tmp_path / name), "--output", str(tmp_path / "o.nii.gz")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err
        assert name in err
    assert main(["predict", "--model", str(tmp_path), "--input", "x", "--output", "y.nii.gz"]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
