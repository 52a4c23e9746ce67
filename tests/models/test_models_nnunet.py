"""``nnunet``: nnU-Net v2's PlainConvUNet / ResidualEncoderUNet rebuilt with named stages, checked against
``dynamic_network_architectures`` (installed with ``pip install --no-deps``; only its U-Net modules are imported,
which need neither timm nor torchvision)."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.models.loading import _first_conv_key
from medtransfer.models.nnunet_plans import config_from_plans, convert_nnunet_state_dict

PLAIN = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"


def arch_kwargs(spatial_dims: int, residual: bool) -> dict:
    """A small plans ``arch_kwargs`` as nnU-Net writes it (anisotropic first kernel and strides in 3D)."""
    if spatial_dims == 3:
        kernels, strides = [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    else:
        kernels, strides = [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]]
    return {
        "n_stages": 3,
        "features_per_stage": [4, 8, 16],
        "conv_op": f"torch.nn.modules.conv.Conv{spatial_dims}d",
        "kernel_sizes": kernels,
        "strides": strides,
        ("n_blocks_per_stage" if residual else "n_conv_per_stage"): [1, 2, 2] if residual else [2, 2, 2],
        "n_conv_per_stage_decoder": [1, 2],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{spatial_dims}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def reference(class_name: str, kwargs: dict, in_channels: int = 2, classes: int = 3) -> torch.nn.Module:
    """The dynamic_network_architectures network of a plans entry with random weights (norm affines included)."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    import pydoc

    kw = {k: pydoc.locate(v) if k in ("conv_op", "norm_op", "nonlin") else v for k, v in kwargs.items()}
    cls = getattr(unet, class_name.rsplit(".", 1)[-1])
    net = cls(input_channels=in_channels, num_classes=classes, deep_supervision=True, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    net.decoder.deep_supervision = False
    return net.eval()


@pytest.mark.parametrize("class_name", [PLAIN, RESENC])
@pytest.mark.parametrize(("spatial_dims", "axes"), [(2, None), (2, (1, 0)), (3, None), (3, (2, 1, 0)), (3, (1, 2, 0))])
def test_nnunet_reproduces_dynamic_network_architectures(class_name, spatial_dims, axes):
    kwargs = arch_kwargs(spatial_dims, class_name == RESENC)
    ref = reference(class_name, kwargs)
    config = config_from_plans(class_name, kwargs, axes)
    model = create_model("nnunet", in_channels=2, out_channels=3, **config).eval()
    state, ignored = convert_nnunet_state_dict(ref.state_dict(), 3, config["encoder"], axes)
    model.load_state_dict(state, strict=True)  # every tensor of the model comes from nnU-Net's weights
    assert ignored == ["decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias"]  # deep supervision
    x = torch.randn(2, 2, *([8, 16, 12] if spatial_dims == 3 else [16, 12]))
    order = (0, 1, *(2 + a for a in (axes or range(spatial_dims))))
    with torch.no_grad():
        expected, got = ref(x).permute(order), model(x.permute(order))
    assert got.shape == expected.shape
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    if axes is None:
        assert torch.equal(got, expected)  # the same operations in the same order


def test_nnunet_stages_partition_the_parameters_and_start_at_the_input_conv():
    config = config_from_plans(RESENC, arch_kwargs(3, residual=True), (2, 1, 0))
    model = create_model("nnunet", in_channels=1, out_channels=2, **config)
    assert model.stage_names() == ["input", "enc1", "bottleneck", "dec2", "dec1", "head"]
    stages = model.parameter_stages()
    assert set(stages) == set(model.state_dict())
    assert stages["encoder.stages.input.stem.convs.0.conv.weight"] == "input"
    assert stages["decoder.stages.dec2.transpconv.weight"] == "dec2"
    assert _first_conv_key(model.state_dict()) == "encoder.stages.input.stem.convs.0.conv.weight"
    assert config["kernel_sizes"][0] == [3, 3, 1]  # nnU-Net (z, y, x) -> medtransfer (x, y, z)
    assert config["strides"][1] == [2, 2, 1]


def test_nnunet_takes_sizes_the_strides_do_not_divide():
    model = create_model("nnunet", spatial_dims=3, encoder="residual", features_per_stage=(2, 4, 8)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 9, 7, 5)).shape == (1, 1, 9, 7, 5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"conv_op": "torch.nn.Conv1d"}, "conv_op 'torch.nn.Conv1d' is not supported; allowed: Conv2d, Conv3d"),
        ({"norm_op": "torch.nn.LayerNorm"}, "norm_op 'torch.nn.LayerNorm' is not supported; allowed: BatchNorm2d"),
        ({"nonlin": "my.Swish"}, "nonlin 'my.Swish' is not supported; allowed: ELU, GELU, LeakyReLU"),
        ({"block": "BottleneckD"}, "only BasicBlockD residual blocks are supported"),
        ({"squeeze_excitation": True}, "arch_kwargs ['squeeze_excitation'] of PlainConvUNet are not supported"),
    ],
)
def test_config_from_plans_names_the_file_and_what_is_allowed(change, message):
    kwargs = {**arch_kwargs(3, residual=False), **change}
    with pytest.raises(ConfigError) as err:
        config_from_plans(PLAIN, kwargs, source="/m/plans.json")
    assert str(err.value).startswith("/m/plans.json: ")
    assert message in str(err.value)


def test_config_from_plans_refuses_other_networks():
    with pytest.raises(ConfigError, match=r"network class '.*Primus' cannot be rebuilt .* PlainConvUNet, Residual"):
        config_from_plans("dynamic_network_architectures.architectures.primus.Primus", {}, source="plans.json")
