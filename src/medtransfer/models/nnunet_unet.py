"""nnU-Net v2's U-Nets (``PlainConvUNet`` and ``ResidualEncoderUNet`` of ``dynamic_network_architectures``) with
named stages, rebuilt from the architecture that a ``plans.json`` describes.

The network computes exactly what ``dynamic_network_architectures`` computes (same layers, same order, same
initialisation): encoder stage ``s`` (strided convolutions, or a stem plus residual ``BasicBlockD`` blocks for
ResEnc) is ``input`` / ``enc{s}`` / ``bottleneck``; decoder stage ``j`` (transposed convolution, concatenation with
the skip, convolutions) is ``dec{n-1-j}``, mirroring the encoder level it comes from as in :class:`UNet`; the last
segmentation layer is ``head``.  The deep-supervision outputs of the other decoder stages are not rebuilt.

Spatial sizes that the strides do not divide are accepted (up-sampled maps are cropped or padded to the skip, and
ResEnc's shortcut pooling rounds up as the strided convolution does); for divisible sizes nothing changes.

:mod:`medtransfer.models.nnunet_plans` turns a plans ``architecture`` entry and nnU-Net weights into this model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, did_you_mean
from .base import Decoder, Encoder, NoDecoder, SkipDecoder, StagedModel
from .blocks import check_spatial_dims, pad_to
from .heads import HeadKind, build_head, parse_head, resolve_out_channels
from .unet import encoder_stage_names


class EncoderKind(StrEnum):
    """``plain``: PlainConvUNet; ``residual``: ResidualEncoderUNet (ResEnc, BasicBlockD blocks)."""

    PLAIN = "plain"
    RESIDUAL = "residual"


NORMS = {"instance": (nn.InstanceNorm2d, nn.InstanceNorm3d), "batch": (nn.BatchNorm2d, nn.BatchNorm3d)}
NONLINS = {
    "leaky_relu": nn.LeakyReLU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "prelu": nn.PReLU,
}
DROPOUTS = {"dropout": nn.Dropout, "dropout2d": nn.Dropout2d, "dropout3d": nn.Dropout3d}


@dataclass(frozen=True)
class Layers:
    """How every convolution block is built (``ConvDropoutNormReLU`` of dynamic_network_architectures)."""

    spatial_dims: int
    conv_bias: bool = True
    norm: str | None = "instance"
    norm_kwargs: dict[str, Any] = field(default_factory=dict)
    nonlin: str | None = "leaky_relu"
    nonlin_kwargs: dict[str, Any] = field(default_factory=dict)
    dropout: str | None = None
    dropout_kwargs: dict[str, Any] = field(default_factory=dict)
    nonlin_first: bool = False

    def __post_init__(self) -> None:
        for what, value, table in (("norm", self.norm, NORMS), ("nonlin", self.nonlin, NONLINS)):
            if value is not None and value not in table:
                raise ConfigError(did_you_mean(str(value), table, what=f"nnunet {what}"))
        if self.dropout is not None and self.dropout not in DROPOUTS:
            raise ConfigError(did_you_mean(str(self.dropout), DROPOUTS, what="nnunet dropout"))

    def conv(self, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int], bias: bool) -> nn.Module:
        cls = nn.Conv2d if self.spatial_dims == 2 else nn.Conv3d
        padding = [(k - 1) // 2 for k in kernel]
        return cls(in_ch, out_ch, list(kernel), list(stride), padding=padding, dilation=1, bias=bias)

    def block(
        self,
        in_ch: int,
        out_ch: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        *,
        act: bool = True,
        dropout: bool = True,
        bias: bool | None = None,
    ) -> nn.Sequential:
        """conv -> [dropout] -> [norm] -> [nonlin] (norm and nonlin swapped with ``nonlin_first``)."""
        ops: OrderedDict[str, nn.Module] = OrderedDict(conv=self.conv(in_ch, out_ch, kernel, stride, _or(bias, self)))
        if dropout and self.dropout is not None:
            ops["dropout"] = _build(DROPOUTS[self.dropout], self.dropout_kwargs, "dropout")
        tail: list[tuple[str, nn.Module]] = []
        if self.norm is not None:
            tail.append(("norm", _build(NORMS[self.norm][self.spatial_dims - 2], self.norm_kwargs, "norm", out_ch)))
        if act and self.nonlin is not None:
            tail.append(("nonlin", self.activation()))
        if self.nonlin_first and len(tail) == 2:
            tail.reverse()
        ops.update(tail)
        return nn.Sequential(ops)

    def activation(self) -> nn.Module:
        return _build(NONLINS[self.nonlin], self.nonlin_kwargs, "nonlin") if self.nonlin else nn.Identity()


def _or(bias: bool | None, layers: Layers) -> bool:
    return layers.conv_bias if bias is None else bias


def _build(cls: type[nn.Module], kwargs: Mapping[str, Any], what: str, *args: int) -> nn.Module:
    try:
        return cls(*args, **dict(kwargs))
    except TypeError as err:
        raise ConfigError(f"nnunet {what} {cls.__name__}: unsupported arguments {dict(kwargs)} ({err})") from err


class ConvStack(nn.Module):
    """``StackedConvBlocks``: ``n`` blocks, the first with ``stride``."""

    def __init__(self, layers: Layers, n: int, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        ones = [1] * len(kernel)
        self.convs = nn.Sequential(
            *[layers.block(in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else ones) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class BasicBlockD(nn.Module):
    """ResNet-D basic block: two convolutions plus an (average-pooled, projected) shortcut, then the nonlin."""

    def __init__(self, layers: Layers, in_ch: int, out_ch: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        ones = [1] * len(kernel)
        self.conv1 = layers.block(in_ch, out_ch, kernel, stride)
        self.conv2 = layers.block(out_ch, out_ch, kernel, ones, act=False, dropout=False)
        self.nonlin2 = layers.activation()
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            pool = nn.AvgPool2d if layers.spatial_dims == 2 else nn.AvgPool3d
            skip.append(pool(list(stride), list(stride), ceil_mode=True))
        if in_ch != out_ch:
            skip.append(layers.block(in_ch, out_ch, ones, ones, act=False, dropout=False, bias=False))
        self.skip = nn.Sequential(*skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class ResidualStack(nn.Module):
    """``StackedResidualBlocks`` (the first block strided), preceded by the stem in the first stage."""

    def __init__(self, layers: Layers, n: int, in_ch: int, out_ch: int, kernel, stride, stem: nn.Module | None = None):
        super().__init__()
        if stem is not None:
            self.stem = stem
        ones = [1] * len(kernel)
        self.blocks = nn.Sequential(
            *[
                BasicBlockD(layers, in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else ones)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x) if hasattr(self, "stem") else x)


class NnUNetEncoder(Encoder):
    """``input``, ``enc1``, ..., ``bottleneck``: one nnU-Net encoder stage each (ResEnc's stem is in ``input``)."""

    def __init__(
        self, layers: Layers, kind: EncoderKind, in_channels: int, widths, kernels, strides, n_per_stage, stem
    ):
        super().__init__()
        names, stages = encoder_stage_names(len(widths)), {}
        in_ch = in_channels
        for s, name in enumerate(names):
            if kind is EncoderKind.PLAIN:
                stages[name] = ConvStack(layers, n_per_stage[s], in_ch, widths[s], kernels[s], strides[s])
            else:
                first = ConvStack(layers, 1, in_ch, stem, kernels[0], [1] * len(kernels[0])) if s == 0 else None
                in_ch = stem if s == 0 else in_ch
                stages[name] = ResidualStack(layers, n_per_stage[s], in_ch, widths[s], kernels[s], strides[s], first)
            in_ch = widths[s]
        self.stages = nn.ModuleDict(stages)
        self.out_channels = tuple(widths)


class UpStage(nn.Module):
    """Transposed convolution to the skip's resolution, concatenation with the skip, convolutions."""

    def __init__(self, layers: Layers, n: int, below: int, skip: int, kernel, stride):
        super().__init__()
        cls = nn.ConvTranspose2d if layers.spatial_dims == 2 else nn.ConvTranspose3d
        self.transpconv = cls(below, skip, list(stride), list(stride), bias=layers.conv_bias)
        self.convs = ConvStack(layers, n, 2 * skip, skip, kernel, [1] * len(kernel)).convs

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat((pad_to(self.transpconv(x), skip), skip), 1))


class NnUNetDecoder(SkipDecoder):
    """``dec{n-1}`` (from the bottleneck) ... ``dec1`` (to full resolution): nnU-Net's ``UNetDecoder``."""

    def __init__(self, layers: Layers, widths, kernels, strides, n_per_stage):
        super().__init__()
        n = len(widths)
        self.stages = nn.ModuleDict(
            {
                f"dec{n - 1 - j}": UpStage(
                    layers, n_per_stage[j], widths[-1 - j], widths[-2 - j], kernels[-2 - j], strides[-1 - j]
                )
                for j in range(n - 1)
            }
        )
        self.out_channels = widths[0]


class NnUNet(StagedModel):
    """nnU-Net v2's PlainConvUNet / ResidualEncoderUNet with named stages (see the module docstring).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels, head, num_classes: as for :class:`medtransfer.models.UNet`.
        features_per_stage: channels of each resolution stage (its length is the number of stages).
        kernel_sizes: per stage, an int or one size per axis (default 3).
        strides: per stage, an int or one stride per axis (default 1 for the first stage, then 2).
        n_conv_per_stage: per encoder stage: convolutions (``plain``) or residual blocks (``residual``); an int
            applies to every stage.
        n_conv_per_stage_decoder: convolutions of each decoder stage, from the bottleneck up.
        encoder: ``plain`` or ``residual``.
        conv_bias, norm (``instance``/``batch``/None), norm_kwargs, nonlin (``leaky_relu``, ``relu``, ...),
            nonlin_kwargs, dropout (``dropout``/``dropout2d``/``dropout3d``/None), dropout_kwargs, nonlin_first:
            the layer options of the plans' ``arch_kwargs``.
        stem_channels: ResEnc stem width (default ``features_per_stage[0]``).

    Example:
        >>> model = NnUNet(spatial_dims=2, in_channels=1, out_channels=3, features_per_stage=(4, 8, 16))
        >>> model.stage_names()
        ['input', 'enc1', 'bottleneck', 'dec2', 'dec1', 'head']
        >>> model(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int | None = None,
        features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        strides: int | Sequence[int | Sequence[int]] | None = None,
        n_conv_per_stage: int | Sequence[int] = 2,
        n_conv_per_stage_decoder: int | Sequence[int] = 2,
        encoder: str = "plain",
        conv_bias: bool = True,
        norm: str | None = "instance",
        norm_kwargs: Mapping[str, Any] | None = None,
        nonlin: str | None = "leaky_relu",
        nonlin_kwargs: Mapping[str, Any] | None = None,
        dropout: str | None = None,
        dropout_kwargs: Mapping[str, Any] | None = None,
        nonlin_first: bool = False,
        stem_channels: int | None = None,
        head: str = "segmentation",
        num_classes: int | None = None,
    ):
        spatial_dims = check_spatial_dims(spatial_dims)
        kind, head_kind = parse_encoder(encoder), parse_head(head)
        widths = [int(f) for f in features_per_stage]
        n = len(widths)
        if n < 2 or min(widths) < 1:
            raise ConfigError(f"nnunet: features_per_stage needs at least two positive widths, got {widths}")
        kernels = per_stage(kernel_sizes, n, spatial_dims, "kernel_sizes")
        strides = per_stage([1] + [2] * (n - 1) if strides is None else strides, n, spatial_dims, "strides")
        n_enc = _counts(n_conv_per_stage, n, "n_conv_per_stage")
        n_dec = _counts(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder")
        norm_kwargs = {"eps": 1e-5, "affine": True} if norm_kwargs is None and norm == "instance" else norm_kwargs
        layers = Layers(
            spatial_dims,
            bool(conv_bias),
            norm,
            dict(norm_kwargs or {}),
            nonlin,
            dict(nonlin_kwargs or {}),
            dropout,
            dict(dropout_kwargs or {}),
            bool(nonlin_first),
        )
        stem = int(stem_channels or widths[0])
        enc = NnUNetEncoder(layers, kind, in_channels, widths, kernels, strides, n_enc, stem)
        n_out = resolve_out_channels(head_kind, in_channels, out_channels, num_classes)
        if head_kind is HeadKind.CLASSIFICATION:
            dec: Decoder = NoDecoder(widths[-1])
        else:
            dec = NnUNetDecoder(layers, widths, kernels, strides, n_dec)
        super().__init__(
            enc, dec, build_head(head_kind, spatial_dims, dec.out_channels, n_out), spatial_dims=spatial_dims
        )
        self.init_weights(self)

    def init_weights(self, module: nn.Module) -> None:
        """nnU-Net's initialisation of ``module`` (this network or a stage of it): He init (``a=1e-2``) of every
        convolution with zero biases, and in ResEnc blocks the norm before the residual add zeroed."""
        module.apply(_he_init)
        _zero_last_norms(module)  # only residual encoders hold BasicBlockD blocks


def parse_encoder(value: str) -> EncoderKind:
    try:
        return EncoderKind(str(value).lower())
    except ValueError as err:
        raise ConfigError(did_you_mean(str(value), [k.value for k in EncoderKind], what="nnunet encoder")) from err


def per_stage(value, n: int, spatial_dims: int, what: str) -> list[list[int]]:
    """An int, or per stage an int or one value per axis -> ``n`` lists of ``spatial_dims`` ints."""
    items = [value] * n if isinstance(value, int) else list(value)
    if len(items) != n:
        raise ConfigError(f"nnunet: {what} needs one entry per stage ({n}), got {len(items)}: {value}")
    out = [[int(v)] * spatial_dims if isinstance(v, int) else [int(x) for x in v] for v in items]
    if any(len(v) != spatial_dims or min(v) < 1 for v in out):
        raise ConfigError(f"nnunet: each of {what} must be a positive int or {spatial_dims} of them, got {value}")
    return out


def _counts(value, n: int, what: str) -> list[int]:
    items = [int(value)] * n if isinstance(value, int) else [int(v) for v in value]
    if len(items) != n or min(items) < 1:
        raise ConfigError(f"nnunet: {what} needs {n} positive counts, got {value}")
    return items


def _he_init(module: nn.Module) -> None:
    """nnU-Net's ``InitWeights_He(1e-2)``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _zero_last_norms(model: nn.Module) -> None:
    """nnU-Net's ``init_last_bn_before_add_to_0``: each residual block starts as its shortcut."""
    for module in model.modules():
        if isinstance(module, BasicBlockD) and hasattr(module.conv2, "norm") and module.conv2.norm.weight is not None:
            nn.init.zeros_(module.conv2.norm.weight)
            nn.init.zeros_(module.conv2.norm.bias)
