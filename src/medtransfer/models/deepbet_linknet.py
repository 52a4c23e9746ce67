"""deepbet's brain-extraction network (``deepbet==1.0.2``, MIT): a 3D LinkNet, re-implemented with named stages.

The wheel ships two TorchScript modules of this architecture (``data/models/model.pt``, the brain mask, and
``bbox_model.pt``, the coarse mask that places the bounding box), 2.1 M parameters each: a 7x7x7 stride-2
stem and 3x3x3 max pooling, four residual encoder levels (16-32-64-128 filters, two basic blocks each), LinkNet
decoder blocks (1x1 conv, 3x3x3 stride-2 transposed conv, 1x1 conv) whose outputs are *added* to the encoder
features, and a two-step up-sampling tail; instance norm without affine parameters, ReLU, softmax over two
classes.  :func:`deepbet_state_dict` reads the TorchScript archive as data
(:mod:`.torchscript_weights`): the parameter names inside each stage are deepbet's own.  Here the instance norms
carry affine parameters, loaded as weight 1 and bias 0 (the same function as deepbet's), so that norm-only
strategies (``bn_only``) have parameters to adapt.

Stages: ``input`` (stem + pooling, 1/4 resolution), ``enc1`` (1/4), ``enc2`` (1/8), ``enc3`` (1/16),
``bottleneck`` (1/32), ``dec4`` ... ``dec1`` (each adds the encoder features of its level; ``dec1`` stays at
1/4, as in LinkNet), ``dec0`` (transposed conv + conv to 1/2), ``head`` (transposed conv to full resolution,
class logits).  Sides must be multiples of 32 (and one of them at least 64: instance norm needs 2+ voxels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError
from .base import Decoder, Encoder, StagedModel
from .torchscript_weights import read_torchscript_weights

WIDTHS = (16, 32, 64, 128)
# deepbet module name -> stage prefix of this model (names below each prefix are deepbet's)
DEEPBET_PREFIXES = {
    "init.": "encoder.stages.input.",
    "down0.": "encoder.stages.enc1.",
    "down1.": "encoder.stages.enc2.",
    "down2.": "encoder.stages.enc3.",
    "down3.": "encoder.stages.bottleneck.",
    "up0.": "decoder.stages.dec4.",
    "up1.": "decoder.stages.dec3.",
    "up2.": "decoder.stages.dec2.",
    "up3.": "decoder.stages.dec1.",
    "tp_conv1.": "decoder.stages.dec0.tp_conv1.",
    "conv.": "decoder.stages.dec0.conv.",
    "tp_conv2.": "head.",
}


def _norm(channels: int) -> nn.InstanceNorm3d:
    # no running statistics (as deepbet); affine parameters that deepbet lacks, loaded as identity
    return nn.InstanceNorm3d(channels, affine=True)


class Block(nn.Module):
    """Residual basic block: conv-norm-ReLU-conv-norm plus the (strided 1x1 conv + norm) shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv3d(in_ch, out_ch, 3, stride, 1, bias=False),
            _norm(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_ch, out_ch, 3, 1, 1, bias=False),
            _norm(out_ch),
        )
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv3d(in_ch, out_ch, 1, stride, bias=False), _norm(out_ch))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.double_conv(x) + shortcut)


class Down(nn.Module):
    """One encoder level: two blocks, the first strided when the level halves the resolution."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.block1 = Block(in_ch, out_ch, stride)
        self.block2 = Block(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))


def _conv_norm_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, _norm(channels), nn.ReLU(inplace=True))


class Up(nn.Module):
    """LinkNet decoder block: 1x1 conv to in/4, 3x3x3 transposed conv (``stride`` 2 up-samples), 1x1 conv to the
    skip's width."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 2):
        super().__init__()
        mid = in_ch // 4
        tp_conv = nn.ConvTranspose3d(mid, mid, 3, stride, 1, output_padding=stride - 1, bias=False)
        self.conv1 = _conv_norm_relu(nn.Conv3d(in_ch, mid, 1, bias=False), mid)
        self.tp_conv = _conv_norm_relu(tp_conv, mid)
        self.conv2 = _conv_norm_relu(nn.Conv3d(mid, out_ch, 1, bias=False), out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.tp_conv(self.conv1(x))) + skip


class Tail(nn.Module):
    """``dec0``: transposed conv to 1/2 resolution and a 3x3x3 conv (both with bias, norm and ReLU)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.tp_conv1 = _conv_norm_relu(nn.ConvTranspose3d(in_ch, out_ch, 3, 2, 1, output_padding=1), out_ch)
        self.conv = _conv_norm_relu(nn.Conv3d(out_ch, out_ch, 3, 1, 1), out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.tp_conv1(x))


class LinkNetEncoder(Encoder):
    def __init__(self, in_channels: int):
        super().__init__()
        w = WIDTHS
        stem = nn.Sequential(
            nn.Conv3d(in_channels, w[0], 7, 2, 3, bias=False),
            _norm(w[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(3, 2, 1),
        )
        self.stages = nn.ModuleDict(
            {
                "input": stem,
                "enc1": Down(w[0], w[0], 1),
                "enc2": Down(w[0], w[1], 2),
                "enc3": Down(w[1], w[2], 2),
                "bottleneck": Down(w[2], w[3], 2),
            }
        )
        self.out_channels = (w[0], *w)


class LinkNetDecoder(Decoder):
    def __init__(self):
        super().__init__()
        w = WIDTHS
        self.stages = nn.ModuleDict(
            {
                "dec4": Up(w[3], w[2]),
                "dec3": Up(w[2], w[1]),
                "dec2": Up(w[1], w[0]),
                "dec1": Up(w[0], w[0], stride=1),
                "dec0": Tail(w[0], w[0] // 2),
            }
        )
        self.out_channels = w[0] // 2

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x, stages = features[-1], list(self.stages.values())
        for skip, stage in zip(reversed(features[:-1]), stages[:-1], strict=True):
            x = stage(x, skip)
        return stages[-1](x)


class DeepbetLinkNet(StagedModel):
    """deepbet's 3D LinkNet (2.1 M parameters) with named stages; outputs logits (deepbet applies softmax).

    Args:
        spatial_dims: must be 3.
        in_channels: image channels (1 in the original).
        out_channels: class logits (2 in the original: background, brain).

    Example:
        >>> model = DeepbetLinkNet()
        >>> model.stage_names()[:5], model.stage_names()[-2:]
        (['input', 'enc1', 'enc2', 'enc3', 'bottleneck'], ['dec0', 'head'])
        >>> model(torch.zeros(1, 1, 64, 64, 64)).shape  # the bottleneck (1/32) needs more than one voxel
        torch.Size([1, 2, 64, 64, 64])
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2):
        if spatial_dims != 3:
            raise ConfigError(f"deepbet_linknet is a 3D network; spatial_dims must be 3, got {spatial_dims}")
        decoder = LinkNetDecoder()
        head = nn.ConvTranspose3d(decoder.out_channels, out_channels, 2, 2)
        super().__init__(LinkNetEncoder(in_channels), decoder, head, spatial_dims=3)


def deepbet_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a deepbet TorchScript file (``model.pt`` or ``bbox_model.pt``) as a
    :class:`DeepbetLinkNet` state dict (read as data, no code run).

    Raises:
        DataError: unreadable file, or tensors that are not deepbet's LinkNet.
    """
    state = {}
    for name, tensor in read_torchscript_weights(path).items():
        prefix = next((p for p in DEEPBET_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            raise DataError(f"{path}: not a deepbet LinkNet: unexpected tensor {name!r}")
        state[DEEPBET_PREFIXES[prefix] + name[len(prefix) :]] = tensor
    for name, module in DeepbetLinkNet().named_modules():
        if isinstance(module, nn.InstanceNorm3d):  # deepbet's norms have no affine parameters: identity
            state.setdefault(f"{name}.weight", torch.ones(module.num_features))
            state.setdefault(f"{name}.bias", torch.zeros(module.num_features))
    return state
