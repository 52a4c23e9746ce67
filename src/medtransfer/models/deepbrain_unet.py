"""deepbrain's brain-extraction 3D U-Net (``deepbrain==0.1``, MIT), re-implemented with named stages.

The PyPI package ships the network as a TensorFlow 1 frozen graph (``deepbrain/models/graph.pb``): 3x3x3
convolutions with bias and ReLU, widths 8-16-32, 2x2x2 max pooling, no normalisation, 3x3x3 stride-2 transposed
convolutions (TF ``SAME``: the up-sampled map is cropped to exactly twice the size) and concatenated skips, one
sigmoid output (171,465 parameters).  Dropout (keep 0.7) is off at inference.  :func:`deepbrain_state_dict`
reads the graph's constants without TensorFlow (:mod:`.tf_graph`) and maps them to this module.

The network has no convolution at 1/8 resolution: its ``bottleneck`` stage is the third pooling plus the
transposed convolution that reads the 1/8-resolution map, so every stage holds parameters.  Stages:
``input`` (2 convs, full resolution), ``enc1`` (pool + 2 convs, 1/2), ``enc2`` (pool + 2 convs, 1/4),
``bottleneck`` (pool + up-conv back to 1/4), ``dec3`` (merges ``enc2``, conv), ``dec2`` (up-conv, merges ``enc1``,
conv), ``dec1`` (up-conv, merges ``input``, conv), ``head`` (1x1 conv, one logit: sigmoid = brain probability).
Sides must be multiples of 8 (as in the original, which always runs at 128^3).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from .base import Encoder, SkipDecoder, StagedModel
from .heads import SegmentationHead
from .tf_graph import graph_constants, read_graph

WIDTHS = (8, 16, 32)
# TF variable scope -> parameter prefix of this module (kernels and biases; transposed convolutions have no bias)
TF_NAMES = {
    "conv3d": "encoder.stages.input.conv1",
    "conv3d_1": "encoder.stages.input.conv2",
    "conv3d_2": "encoder.stages.enc1.conv1",
    "conv3d_3": "encoder.stages.enc1.conv2",
    "conv3d_4": "encoder.stages.enc2.conv1",
    "conv3d_5": "encoder.stages.enc2.conv2",
    "conv3d_transpose": "encoder.stages.bottleneck.up",
    "conv3d_6": "decoder.stages.dec3.conv",
    "conv3d_transpose_1": "decoder.stages.dec2.up",
    "conv3d_7": "decoder.stages.dec2.conv",
    "conv3d_transpose_2": "decoder.stages.dec1.up",
    "conv3d_8": "decoder.stages.dec1.conv",
    "conv3d_9": "head",
}


class ConvReLU(nn.Sequential):
    """3x3x3 convolution with bias, then ReLU (``tf.layers.conv3d(..., activation=tf.nn.relu)``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.act = nn.ReLU(inplace=True)


class SameUp(nn.Module):
    """TF's ``conv3d_transpose(kernel 3, stride 2, padding SAME)``: output exactly twice the input size.

    PyTorch's transposed convolution gives ``2n + 1`` voxels aligned like TF's (no padding before); the last one
    is cropped.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.ConvTranspose3d(in_ch, out_ch, 3, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = (2 * s for s in x.shape[2:])
        return self.conv(x)[:, :, :d, :h, :w]


class DownBlock(nn.Sequential):
    """Max pooling, then two :class:`ConvReLU` (an encoder level)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pool = nn.MaxPool3d(2)
        self.conv1 = ConvReLU(in_ch, out_ch)
        self.conv2 = ConvReLU(out_ch, out_ch)


class InputBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvReLU(in_ch, out_ch)
        self.conv2 = ConvReLU(out_ch, out_ch)


class Bottleneck(nn.Sequential):
    """The third pooling (1/8 resolution) and the transposed convolution back to 1/4."""

    def __init__(self, width: int):
        super().__init__()
        self.pool = nn.MaxPool3d(2)
        self.up = SameUp(width, width)


class MergeBlock(nn.Module):
    """Optional up-conv, concatenation ``[x, skip]`` (TF's ``concat`` order), one :class:`ConvReLU`."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, *, up: bool):
        super().__init__()
        self.up = SameUp(in_ch, out_ch) if up else None
        self.conv = ConvReLU((out_ch if up else in_ch) + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        return self.conv(torch.cat([x, skip], dim=1))


class DeepBrainEncoder(Encoder):
    def __init__(self, in_channels: int):
        super().__init__()
        w = WIDTHS
        self.stages = nn.ModuleDict(
            {
                "input": InputBlock(in_channels, w[0]),
                "enc1": DownBlock(w[0], w[1]),
                "enc2": DownBlock(w[1], w[2]),
                "bottleneck": Bottleneck(w[2]),
            }
        )
        self.out_channels = (w[0], w[1], w[2], w[2])


class DeepBrainDecoder(SkipDecoder):
    def __init__(self):
        super().__init__()
        w = WIDTHS
        self.stages = nn.ModuleDict(
            {
                "dec3": MergeBlock(w[2], w[2], w[2], up=False),
                "dec2": MergeBlock(w[2], w[1], w[1], up=True),
                "dec1": MergeBlock(w[1], w[0], w[0], up=True),
            }
        )
        self.out_channels = w[0]


class DeepBrainUNet(StagedModel):
    """deepbrain's 3D U-Net (8-16-32 filters, 171 k parameters) with named stages; outputs logits.

    Args:
        spatial_dims: must be 3 (the network is 3D).
        in_channels: image channels (1 in the original).
        out_channels: output logits (1 in the original: sigmoid of it = brain probability).

    Example:
        >>> model = DeepBrainUNet()
        >>> model.stage_names()
        ['input', 'enc1', 'enc2', 'bottleneck', 'dec3', 'dec2', 'dec1', 'head']
        >>> model(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 1, 16, 16, 16])
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1):
        if spatial_dims != 3:
            raise ConfigError(f"deepbrain_unet is a 3D network; spatial_dims must be 3, got {spatial_dims}")
        decoder = DeepBrainDecoder()
        super().__init__(
            DeepBrainEncoder(in_channels),
            decoder,
            SegmentationHead(3, decoder.out_channels, out_channels),
            spatial_dims=3,
        )


def deepbrain_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of deepbrain's frozen graph ``path`` as a :class:`DeepBrainUNet` state dict.

    TF kernels ``(kd, kh, kw, in, out)`` (transposed convolutions: ``(kd, kh, kw, out, in)``) become PyTorch's
    ``(out, in, kd, kh, kw)`` (``(in, out, kd, kh, kw)``): the same permutation for both.

    Raises:
        DataError: unreadable file, or a graph without deepbrain's variables.
    """
    constants = graph_constants(read_graph(path))
    state = {}
    for scope, prefix in TF_NAMES.items():
        kernel, bias = constants.get(f"{scope}/kernel"), constants.get(f"{scope}/bias")
        if kernel is None or kernel.ndim != 5 or (bias is None and "transpose" not in scope):
            raise DataError(f"{path}: not deepbrain's graph: no 5-D constant {scope}/kernel with its bias")
        state[f"{prefix}.conv.weight"] = _kernel(kernel)
        if bias is not None:
            state[f"{prefix}.conv.bias"] = torch.from_numpy(np.array(bias, dtype=np.float32))
    return state


def _kernel(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2), dtype=np.float32))
