"""Heads that sit on the same encoder/decoder: segmentation, classification, restoration.

* segmentation: a 1x1 convolution to ``out_channels`` logits per voxel (no activation: losses take logits);
* classification: global average pooling + linear layer to ``num_classes`` logits (on the deepest encoder
  features; the model then has no decoder);
* restoration: a 1x1 convolution back to image channels with no activation (self-supervised sources such as
  Models Genesis restore the uncorrupted image).
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

from ..errors import ConfigError, did_you_mean
from .blocks import conv


class HeadKind(StrEnum):
    """Kind of output a model produces."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    RESTORATION = "restoration"


def parse_head(head: str | HeadKind) -> HeadKind:
    """Turn a user string into :class:`HeadKind` with a did-you-mean error."""
    try:
        return HeadKind(str(head).lower())
    except ValueError as err:
        raise ConfigError(did_you_mean(str(head), [h.value for h in HeadKind], what="head")) from err


class SegmentationHead(nn.Sequential):
    """1x1 convolution to per-voxel logits.

    Example:
        >>> SegmentationHead(2, 16, 3)(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv(spatial_dims, in_channels, out_channels, 1)


class RestorationHead(SegmentationHead):
    """1x1 convolution to image channels, linear output (for restoration / reconstruction pretext tasks)."""


class ClassificationHead(nn.Module):
    """Global average pooling, dropout and a linear layer: (B, C, *spatial) -> (B, num_classes).

    Example:
        >>> ClassificationHead(2, 32, 10)(torch.zeros(2, 32, 4, 4)).shape
        torch.Size([2, 10])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


def resolve_out_channels(kind: HeadKind, in_channels: int, out_channels: int | None, num_classes: int | None) -> int:
    """Number of outputs of a head: ``num_classes`` for classification (alias of ``out_channels``), the image
    channels for restoration unless given, else ``out_channels`` (default 1, a binary mask)."""
    if num_classes is not None and out_channels is not None and num_classes != out_channels:
        raise ConfigError(f"num_classes={num_classes} and out_channels={out_channels} disagree; give one of them")
    value = num_classes if num_classes is not None else out_channels
    if value is None:
        value = in_channels if kind is HeadKind.RESTORATION else 1
    if int(value) < 1:
        raise ConfigError(f"the head needs at least one output channel, got {value}")
    return int(value)


def build_head(kind: HeadKind, spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """The head module of ``kind`` (the decoder-less classification head pools the deepest features)."""
    if kind is HeadKind.CLASSIFICATION:
        return ClassificationHead(spatial_dims, in_channels, out_channels)
    if kind is HeadKind.RESTORATION:
        return RestorationHead(spatial_dims, in_channels, out_channels)
    return SegmentationHead(spatial_dims, in_channels, out_channels)
