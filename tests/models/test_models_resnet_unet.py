"""ResNet-encoder U-Net: torchvision key names, loading from a file, parity with MONAI's ResNet (the peer)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import resnet18

from medtransfer.models import create_model, load_pretrained


def _monai_resnet18(spatial_dims: int = 2, in_channels: int = 3):
    # conv1 stride 2 and bias-free downsample convs make MONAI's ResNet torchvision's layout exactly
    return resnet18(
        spatial_dims=spatial_dims, n_input_channels=in_channels, conv1_t_stride=2, bias_downsample=False, num_classes=10
    )


def _monai_features(net, x):
    x = net.maxpool(net.act(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_stage_layout_and_output_shape():
    model = create_model("resnet34_unet", out_channels=3)
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
        "dec0",
        "head",
    ]
    assert model.encoder.out_channels == (64, 64, 128, 256, 512)
    assert len(model.encoder.layer3) == 6
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    assert create_model("resnet18_unet")(torch.zeros(2, 1, 40, 40)).shape == (2, 1, 40, 40)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torchvision_layout_state_dict_loads_from_file_and_matches_peer(tmp_path, spatial_dims):
    peer = _monai_resnet18(spatial_dims).eval()
    with torch.no_grad():
        for m in peer.modules():  # non-trivial BN statistics
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet18.pth"
    torch.save(peer.state_dict(), path)
    model = create_model("resnet18_unet", spatial_dims=spatial_dims, in_channels=3).eval()
    audit = load_pretrained(model, path)
    assert audit.prefix == "encoder."
    assert audit.unexpected == ["encoder.fc.weight", "encoder.fc.bias"]
    assert not audit.skipped_shape
    assert not [k for k in audit.missing if k.startswith("encoder.")]
    x = torch.randn(1, 3, *([32] * spatial_dims))
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x)[-1], _monai_features(peer, x), rtol=1e-4, atol=1e-4)


def test_rgb_resnet_into_grey_model_adapts_conv1():
    peer = _monai_resnet18()
    model = create_model("resnet18_unet", in_channels=1)
    audit = load_pretrained(model, peer.state_dict())
    assert audit.adapted == ["encoder.conv1.weight"]
    torch.testing.assert_close(model.encoder.conv1.weight, peer.conv1.weight.sum(1, keepdim=True))
