"""2D -> 3D inflation: slice-wise equivalence (Wacker), I3D scaling, state-dict inflation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.models.inflate import inflate_2d_to_3d, inflate_weight


def _slicewise(model_2d: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """The 2D network on each axial slice, as predict runs it: volumes are (B, C, X, Y, Z), slices along Z."""
    return torch.stack([model_2d(volume[..., d]) for d in range(volume.shape[-1])], dim=-1)


@pytest.mark.parametrize(
    ("name", "mode"), [("unet", "wacker"), ("unet", "center"), ("dart_resunet", "wacker"), ("resnet18_unet", "wacker")]
)
def test_slicewise_inflation_equals_slice_by_slice(name, mode):
    config = {"features": 4, "depth": 2} if name == "unet" else {}
    model_2d = create_model(name, out_channels=2, **config)
    with torch.no_grad():  # non-trivial BatchNorm statistics, then evaluation mode
        model_2d.train()(torch.randn(4, 1, 32, 32) * 3 + 1)
    model_2d.eval()
    model_3d = inflate_2d_to_3d(model_2d, mode).eval()
    volume = torch.randn(2, 1, 32, 32, 3)
    with torch.no_grad():
        torch.testing.assert_close(model_3d(volume), _slicewise(model_2d, volume), rtol=1e-4, atol=1e-4)
    if mode == "wacker":  # same parameter count; the checkpoint config rebuilds the same architecture
        assert sum(p.numel() for p in model_3d.parameters()) == sum(p.numel() for p in model_2d.parameters())
        rebuilt = create_model(model_3d.model_name, **model_3d.model_config)
        rebuilt.load_state_dict(model_3d.state_dict())


def test_i3d_conv_on_depth_constant_volume_equals_2d():
    conv2d = nn.Conv2d(2, 3, 3, padding=1)
    conv3d = inflate_2d_to_3d(nn.Sequential(conv2d), "i3d")[0]
    assert conv3d.weight.shape == (3, 2, 3, 3, 3)
    image = torch.randn(1, 2, 8, 8)
    volume = image.unsqueeze(-1).repeat(1, 1, 1, 1, 5)  # constant along Z, the slice axis
    with torch.no_grad():
        out = conv3d(volume)
        for d in range(1, 4):  # interior slices see three identical slices: sum(w / 3) over depth = w
            torch.testing.assert_close(out[..., d], conv2d(image), rtol=1e-5, atol=1e-5)


def test_inflate_weight_modes_by_hand():
    w = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert inflate_weight(w, 1, "i3d").shape == (1, 1, 2, 2, 1)
    center = inflate_weight(w, 3, "center")
    assert center[0, 0, :, :, 1].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert center[0, 0, :, :, 0].abs().sum() == 0
    assert center[0, 0, :, :, 2].abs().sum() == 0
    i3d = inflate_weight(w, 2, "i3d")
    assert i3d[0, 0, :, :, 0].tolist() == [[0.0, 0.5], [1.0, 1.5]]


def test_state_dict_inflation_and_create_model_inflate_key():
    model_2d = create_model("unet", features=4, depth=2)
    sd3 = inflate_2d_to_3d(model_2d.state_dict(), "i3d")
    assert sd3["encoder.stages.input.conv1.conv.weight"].shape == (4, 1, 3, 3, 3)
    assert sd3["decoder.stages.dec1.up.weight"].shape[-1] == 1  # even (2x2 stride-2) kernels stay 1 deep
    assert sd3["encoder.stages.input.conv1.norm.running_var"].shape == (4,)
    rebuilt = create_model("unet", spatial_dims=3, features=4, depth=2, inflate="wacker")
    assert rebuilt.encoder.stages["input"].conv1.conv.weight.shape == (4, 1, 3, 3, 1)
    assert rebuilt.model_config["inflate"] == "wacker"
    with pytest.raises(ConfigError, match="did you mean 'i3d'"):
        inflate_2d_to_3d(model_2d, "i3D_")


def test_a_2d_source_loaded_into_an_inflated_3d_model_acts_on_the_axial_slices_it_was_trained_on():
    """Before, the depth was the first spatial axis (X): the 3D network applied the 2D filters to sagittal (Y, Z)
    planes, 0.02 away from the 2D network run on axial slices as predict runs it."""
    from medtransfer.models import load_pretrained

    torch.manual_seed(0)
    model_2d = create_model("unet", spatial_dims=2, features=4, depth=2, out_channels=2).eval()
    model_3d = create_model("unet", spatial_dims=3, features=4, depth=2, out_channels=2, inflate="wacker").eval()
    audit = load_pretrained(model_3d, model_2d.state_dict())
    assert not audit.skipped_shape
    volume = torch.randn(1, 1, 8, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(model_3d(volume), _slicewise(model_2d, volume), rtol=1e-5, atol=1e-5)


def test_weights_of_a_network_inflated_depth_first_by_an_earlier_version_are_refused():
    """Before 2026-12-07 inflation put the new axis first (1 x k x k); loaded into today's k x k x 1 model every
    convolution was skipped as 'other shape' and the model started from random kernels without a word."""
    from medtransfer.models import load_pretrained

    model = create_model("unet", spatial_dims=3, features=4, depth=2, inflate="wacker")
    old = {k: v.permute(0, 1, 4, 2, 3) if v.ndim == 5 else v for k, v in model.state_dict().items()}
    assert old["encoder.stages.input.conv1.conv.weight"].shape == (4, 1, 1, 3, 3)
    with pytest.raises(ConfigError, match=r"inflated by an earlier medtransfer \(kernels \(4, 1, 1, 3, 3\)"):
        load_pretrained(model, old)
    audit = load_pretrained(model, model.state_dict())  # today's own weights load as they are
    assert not audit.skipped_shape
