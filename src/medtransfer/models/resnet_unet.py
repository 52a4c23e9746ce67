"""ResNet-18/34-encoder U-Net (Wacker et al.; the ``smp.Unet("resnet34")`` layout), 2D or 3D.

The encoder's parameter names are torchvision's (``conv1.weight``, ``bn1.running_mean``,
``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ...), so a torchvision or timm ResNet state dict
saved to a local file loads with ``load_pretrained(model, path)`` (the ``encoder.`` prefix is found
automatically, ``fc.*`` is reported as unexpected, 3-channel kernels are adapted to the model's input
channels).  No torchvision import: the ResNet is written here.

Stages: ``input`` (conv1 + bn1, 1/2 resolution), ``enc1`` (max pool + layer1, 1/4), ``enc2`` (layer2, 1/8),
``enc3`` (layer3, 1/16), ``bottleneck`` (layer4, 1/32), ``dec4`` ... ``dec1`` (each merges the encoder
features of its level), ``dec0`` (back to full resolution, no skip), ``head``.  Inputs need sides divisible
by 32 for exact alignment (other sizes are padded/cropped in the decoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .base import Decoder, Encoder, NoDecoder, StagedModel
from .blocks import Norm, check_spatial_dims, conv, norm_layer, parse_norm
from .heads import HeadKind, build_head, parse_head, resolve_out_channels
from .unet import UpBlock

RESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 conv-norm pairs and a (strided 1x1 conv + norm) shortcut."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, stride: int, norm: Norm):
        super().__init__()
        self.conv1 = conv(spatial_dims, in_ch, out_ch, 3, stride, bias=False)
        self.bn1 = norm_layer(spatial_dims, out_ch, norm)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(spatial_dims, out_ch, out_ch, 3, bias=False)
        self.bn2 = norm_layer(spatial_dims, out_ch, norm)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                conv(spatial_dims, in_ch, out_ch, 1, stride, bias=False), norm_layer(spatial_dims, out_ch, norm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetEncoder(Encoder):
    """The ResNet trunk with torchvision's attribute names (no ``fc``)."""

    def __init__(self, spatial_dims: int, in_channels: int, layers: Sequence[int], norm: Norm):
        super().__init__()
        self.conv1 = conv(spatial_dims, in_channels, 64, 7, 2, bias=False)
        self.bn1 = norm_layer(spatial_dims, 64, norm)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(3, stride=2, padding=1)
        in_ch = 64
        for i, (n_blocks, width) in enumerate(zip(layers, WIDTHS, strict=True), start=1):
            blocks = [
                BasicBlock(spatial_dims, in_ch if b == 0 else width, width, 2 if b == 0 and i > 1 else 1, norm)
                for b in range(n_blocks)
            ]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = width
        self.out_channels = (64, *WIDTHS)

    def stage_modules(self) -> dict[str, nn.Module]:
        return {
            "input": nn.ModuleList([self.conv1, self.bn1]),
            "enc1": self.layer1,
            "enc2": self.layer2,
            "enc3": self.layer3,
            "bottleneck": self.layer4,
        }

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        return [x0, x1, x2, x3, self.layer4(x3)]


class ResNetUNetDecoder(Decoder):
    """Up-sampling blocks ``dec4`` ... ``dec1`` with skips, and ``dec0`` to full resolution without one."""

    def __init__(self, spatial_dims: int, encoder_channels: Sequence[int], widths: Sequence[int], norm: Norm):
        super().__init__()
        if len(widths) != 5:
            raise ConfigError(f"decoder_features needs 5 widths (dec4..dec0), got {list(widths)}")
        skips = [*reversed(encoder_channels[:-1]), 0]
        in_chs = [encoder_channels[-1], *widths[:-1]]
        self.stages = nn.ModuleDict(
            {f"dec{4 - i}": UpBlock(spatial_dims, in_chs[i], skips[i], widths[i], norm) for i in range(5)}
        )
        self.out_channels = widths[-1]

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        skips = [*reversed(features[:-1]), None]
        for skip, stage in zip(skips, self.stages.values(), strict=True):
            x = stage(x, skip)
        return x


class ResNetUNet(StagedModel):
    """U-Net with a ResNet-18/34 encoder.

    Args:
        depth_resnet: 18 or 34.
        spatial_dims: 2 or 3 (3D ResNet, Med3D-style; or inflate a 2D one with ``inflate="wacker"``).
        in_channels, out_channels, norm, head, num_classes: as for ``unet``.
        decoder_features: widths of ``dec4`` ... ``dec0``.

    Example:
        >>> model = ResNetUNet(18, out_channels=2)
        >>> model(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(
        self,
        depth_resnet: int = 34,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        norm: str = "batch",
        head: str = "segmentation",
        num_classes: int | None = None,
        decoder_features: Sequence[int] = (256, 128, 64, 32, 16),
    ):
        if depth_resnet not in RESNET_LAYERS:
            raise ConfigError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth_resnet}")
        spatial_dims = check_spatial_dims(spatial_dims)
        kind, norm_kind = parse_head(head), parse_norm(norm)
        n_out = resolve_out_channels(kind, in_channels, out_channels, num_classes)
        encoder = ResNetEncoder(spatial_dims, in_channels, RESNET_LAYERS[depth_resnet], norm_kind)
        if kind is HeadKind.CLASSIFICATION:
            decoder: Decoder = NoDecoder(encoder.out_channels[-1])
        else:
            decoder = ResNetUNetDecoder(spatial_dims, encoder.out_channels, tuple(decoder_features), norm_kind)
        super().__init__(
            encoder, decoder, build_head(kind, spatial_dims, decoder.out_channels, n_out), spatial_dims=spatial_dims
        )
