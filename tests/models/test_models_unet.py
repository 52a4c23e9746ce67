"""The plain U-Net, the registry and the stage contract shared by every model."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import create_model, list_models


def test_registry_lists_unet_and_suggests_names():
    assert "unet" in list_models()
    with pytest.raises(ConfigError, match="did you mean 'unet'"):
        create_model("unte")
    with pytest.raises(ConfigError, match="did you mean 'features'"):
        create_model("unet", featuers=8)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unet_shapes_and_stage_names(spatial_dims):
    model = create_model("unet", spatial_dims=spatial_dims, in_channels=2, out_channels=3, features=4, depth=3)
    assert model.stage_names() == ["input", "enc1", "enc2", "bottleneck", "dec3", "dec2", "dec1", "head"]
    assert model.encoder.out_channels == (4, 8, 16, 32)
    x = torch.randn(1, 2, *([20] * spatial_dims))  # 20 is not a multiple of 8: odd sizes are padded
    assert model(x).shape == (1, 3, *([20] * spatial_dims))


def test_every_tensor_belongs_to_one_stage_in_order():
    model = create_model("unet", features=4, depth=2)
    stages = model.parameter_stages()
    assert set(stages) == set(model.state_dict())
    assert stages["encoder.stages.input.conv1.conv.weight"] == "input"
    assert stages["head.conv.weight"] == "head"
    groups = model.group_matcher()
    assert sum(len(v) for v in groups.values()) == len(stages)


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_norm_options(norm):
    model = create_model("unet", features=4, depth=2, norm=norm)
    norm_types = {type(m).__name__ for m in model.modules() if type(m).__name__.endswith(("Norm2d", "GroupNorm"))}
    assert norm_types == {"batch": {"BatchNorm2d"}, "instance": {"InstanceNorm2d"}, "group": {"GroupNorm"}}[norm]
    with pytest.raises(ConfigError, match="did you mean 'batch'"):
        create_model("unet", norm="btach")


def test_heads_classification_and_restoration():
    cls = create_model("unet", features=4, depth=2, head="classification", num_classes=7)
    assert cls.stage_names() == ["input", "enc1", "bottleneck", "head"]
    assert cls(torch.randn(2, 1, 8, 8)).shape == (2, 7)
    rest = create_model("unet", in_channels=2, features=4, depth=2, head="restoration")
    assert rest(torch.randn(1, 2, 8, 8)).shape == (1, 2, 8, 8)


def test_channels_last_gives_same_output():
    model = create_model("unet", features=4, depth=2).eval()
    x = torch.randn(2, 1, 16, 16)
    ref = model(x)
    out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
