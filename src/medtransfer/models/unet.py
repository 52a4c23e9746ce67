"""The plain U-Net (Ronneberger et al. 2015) in 2D or 3D with named stages.

Stages for ``depth=3``: ``input`` (full resolution), ``enc1``, ``enc2``, ``bottleneck`` (1/8 resolution),
``dec3`` (up to 1/4, merges ``enc2``), ``dec2``, ``dec1`` (back to full resolution, merges ``input``), ``head``.
Decoder stage ``dec{i}`` mirrors encoder level ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .base import Decoder, Encoder, NoDecoder, SkipDecoder, StagedModel
from .blocks import DoubleConv, Norm, check_spatial_dims, conv_transpose, max_pool, pad_to, parse_norm
from .heads import HeadKind, build_head, parse_head, resolve_out_channels


def resolve_features(features: int | Sequence[int], depth: int) -> tuple[int, ...]:
    """Channel widths per level: an int is the base width doubled at each of ``depth`` down-samplings."""
    if isinstance(features, int):
        if features < 1 or depth < 1:
            raise ConfigError(f"features and depth must be positive, got features={features}, depth={depth}")
        return tuple(features * 2**i for i in range(depth + 1))
    widths = tuple(int(f) for f in features)
    if len(widths) < 2 or min(widths) < 1:
        raise ConfigError(f"features must list at least two positive widths, got {list(features)}")
    return widths


def encoder_stage_names(n_levels: int) -> list[str]:
    """``["input", "enc1", ..., "bottleneck"]`` for ``n_levels`` resolution levels."""
    return ["input", *[f"enc{i}" for i in range(1, n_levels - 1)], "bottleneck"]


class UNetEncoder(Encoder):
    """Double-conv blocks separated by max pooling; ``out_channels`` = the widths per level."""

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int], norm: Norm):
        super().__init__()
        names = encoder_stage_names(len(widths))
        stages = {names[0]: DoubleConv(spatial_dims, in_channels, widths[0], norm)}
        for i in range(1, len(widths)):
            stages[names[i]] = nn.Sequential(
                max_pool(spatial_dims), DoubleConv(spatial_dims, widths[i - 1], widths[i], norm)
            )
        self.stages = nn.ModuleDict(stages)
        self.out_channels = tuple(widths)


class UpBlock(nn.Module):
    """Transposed-conv up-sampling, concatenation with the skip features (if any), double conv."""

    def __init__(self, spatial_dims: int, in_ch: int, skip_ch: int, out_ch: int, norm: Norm):
        super().__init__()
        self.up = conv_transpose(spatial_dims, in_ch, out_ch)
        self.block = DoubleConv(spatial_dims, out_ch + skip_ch, out_ch, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:
            return self.block(self.up(x))
        x = pad_to(self.up(x), skip)
        return self.block(torch.cat([x, skip], dim=1))


class UNetDecoder(SkipDecoder):
    """``dec{L}`` ... ``dec1``: each up-samples one level and merges the encoder skip of that level."""

    def __init__(self, spatial_dims: int, widths: Sequence[int], norm: Norm):
        super().__init__()
        levels = range(len(widths) - 1, 0, -1)
        self.stages = nn.ModuleDict(
            {f"dec{i}": UpBlock(spatial_dims, widths[i], widths[i - 1], widths[i - 1], norm) for i in levels}
        )
        self.out_channels = widths[0]


class UNet(StagedModel):
    """U-Net with named stages, configurable width, depth, norm and head.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes).
        in_channels: image channels.
        out_channels: outputs of the head (classes for segmentation/classification, image channels for
            restoration; default 1, or ``in_channels`` for restoration).
        features: base width (doubled per level) or the explicit width of every level.
        depth: number of down-samplings when ``features`` is an int.
        norm: ``batch`` (default), ``instance`` or ``group``.
        head: ``segmentation`` (default), ``classification`` or ``restoration``.
        num_classes: alias of ``out_channels`` for classification.

    Example:
        >>> model = UNet(spatial_dims=2, in_channels=1, out_channels=2, features=8, depth=2)
        >>> model.stage_names()
        ['input', 'enc1', 'bottleneck', 'dec2', 'dec1', 'head']
        >>> model(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 2, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        features: int | Sequence[int] = 16,
        depth: int = 4,
        norm: str = "batch",
        head: str = "segmentation",
        num_classes: int | None = None,
    ):
        spatial_dims = check_spatial_dims(spatial_dims)
        kind, norm_kind = parse_head(head), parse_norm(norm)
        widths = resolve_features(features, depth)
        n_out = resolve_out_channels(kind, in_channels, out_channels, num_classes)
        encoder = UNetEncoder(spatial_dims, in_channels, widths, norm_kind)
        if kind is HeadKind.CLASSIFICATION:
            decoder: Decoder = NoDecoder(widths[-1])
        else:
            decoder = UNetDecoder(spatial_dims, widths, norm_kind)
        super().__init__(
            encoder, decoder, build_head(kind, spatial_dims, decoder.out_channels, n_out), spatial_dims=spatial_dims
        )
