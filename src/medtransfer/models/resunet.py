"""The DART residual U-Net (Shirokikh et al., MICCAI 2020; code of neuro-ml/domain_shift_anatomy).

2D (or 3D) U-Net of pre-activation residual blocks: 16 base filters, three down-samplings by strided 2x2
convolutions, three residual blocks per level, transposed-conv up-sampling, *additive* skips through 1x1
convolutions, and an output path ``ResBlock(1x1) -> PreActivation(1x1) -> BatchNorm``; 2.4M parameters.

Stages are cut so that the paper's layer groups are single stages:

* ``input`` = the first 3x3 convolution + the first residual block (4,816 parameters: the paper's "first
  layers", ~4.8k);
* ``enc0`` (two more blocks at full resolution), ``enc1``, ``enc2``, ``bottleneck`` (1/8 resolution);
* ``dec3``, ``dec2``, ``dec1`` (up-sampling path, each with the 1x1 shortcut of the skip it adds);
* ``head`` = the output path (626 parameters: the paper's "last layers", ~0.6k).

So ``first_k:1`` and ``last_k:1`` are DART's "first" and "last" layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Decoder, Encoder, NoDecoder, StagedModel
from .blocks import (
    Norm,
    PreActivation,
    PreActResBlock,
    check_spatial_dims,
    conv,
    conv_transpose,
    norm_layer,
    parse_norm,
)
from .heads import ClassificationHead, HeadKind, parse_head, resolve_out_channels

N_BLOCKS = 3


def _blocks(spatial_dims: int, ch: int, norm: Norm, n: int = N_BLOCKS) -> list[nn.Module]:
    return [PreActResBlock(spatial_dims, ch, ch, 3, norm) for _ in range(n)]


def _down(spatial_dims: int, in_ch: int, out_ch: int, norm: Norm) -> nn.Sequential:
    return nn.Sequential(
        norm_layer(spatial_dims, in_ch, norm),
        conv(spatial_dims, in_ch, out_ch, 2, 2, bias=False),
        nn.ReLU(),
        *_blocks(spatial_dims, out_ch, norm),
    )


class DartEncoder(Encoder):
    """``input``, ``enc0`` (full resolution), ``enc1``, ``enc2``, ``bottleneck`` (down-sampled by 2 each)."""

    def __init__(self, spatial_dims: int, in_channels: int, n: int, norm: Norm):
        super().__init__()
        first = conv(spatial_dims, in_channels, n, 3, bias=False)
        self.stages = nn.ModuleDict(
            {
                "input": nn.Sequential(first, nn.ReLU(), PreActResBlock(spatial_dims, n, n, 3, norm)),
                "enc0": nn.Sequential(*_blocks(spatial_dims, n, norm, N_BLOCKS - 1)),
                "enc1": _down(spatial_dims, n, 2 * n, norm),
                "enc2": _down(spatial_dims, 2 * n, 4 * n, norm),
                "bottleneck": _down(spatial_dims, 4 * n, 8 * n, norm),
            }
        )
        self.out_channels = (n, n, 2 * n, 4 * n, 8 * n)


class DartUp(nn.Module):
    """Residual blocks at one level, transposed-conv up-sampling, plus the 1x1-conv shortcut of the skip."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, norm: Norm):
        super().__init__()
        self.path = nn.Sequential(
            *_blocks(spatial_dims, in_ch, norm),
            norm_layer(spatial_dims, in_ch, norm),
            conv_transpose(spatial_dims, in_ch, out_ch, bias=False),
            nn.ReLU(),
        )
        self.shortcut = conv(spatial_dims, out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.path(x) + self.shortcut(skip)


class DartDecoder(Decoder):
    """``dec3`` -> ``dec2`` -> ``dec1``: up-sample, add the shortcut of the encoder features at that level."""

    def __init__(self, spatial_dims: int, n: int, norm: Norm):
        super().__init__()
        self.stages = nn.ModuleDict(
            {f"dec{i}": DartUp(spatial_dims, n * 2**i, n * 2 ** (i - 1), norm) for i in (3, 2, 1)}
        )
        self.out_channels = n

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        _, x0, x1, x2, x = features
        for skip, stage in zip((x2, x1, x0), self.stages.values(), strict=True):
            x = stage(x, skip)
        return x


class DartHead(nn.Sequential):
    """The output path: 1x1 residual block, 1x1 pre-activation conv, and a final norm (segmentation only)."""

    def __init__(self, spatial_dims: int, n: int, out_channels: int, norm: Norm, *, final_norm: bool = True):
        super().__init__()
        self.block = PreActResBlock(spatial_dims, n, n, 1, norm)
        self.out = PreActivation(spatial_dims, n, out_channels, 1, norm)
        if final_norm:
            self.norm = norm_layer(spatial_dims, out_channels, norm)


class DartResUNet(StagedModel):
    """The DART residual U-Net preset (16 base filters, 3 down-samplings, BatchNorm, additive skips).

    Args:
        spatial_dims: 2 (as in the paper) or 3.
        in_channels: image channels.
        out_channels: logits (1 = binary brain mask, as the paper's sigmoid output).
        features: base width (16 in the paper).
        norm: ``batch`` (paper), ``instance`` or ``group``.
        head: ``segmentation`` (paper's output path), ``classification`` or ``restoration`` (output path
            without the final norm, linear image output).
        num_classes: alias of ``out_channels`` for classification.

    Example:
        >>> model = DartResUNet()
        >>> sum(p.numel() for p in model.parameters())
        2434770
        >>> model(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        features: int = 16,
        norm: str = "batch",
        head: str = "segmentation",
        num_classes: int | None = None,
    ):
        spatial_dims = check_spatial_dims(spatial_dims)
        kind, norm_kind = parse_head(head), parse_norm(norm)
        n_out = resolve_out_channels(kind, in_channels, out_channels, num_classes)
        encoder = DartEncoder(spatial_dims, in_channels, features, norm_kind)
        if kind is HeadKind.CLASSIFICATION:
            decoder: Decoder = NoDecoder(8 * features)
            head_module: nn.Module = ClassificationHead(spatial_dims, 8 * features, n_out)
        else:
            decoder = DartDecoder(spatial_dims, features, norm_kind)
            head_module = DartHead(spatial_dims, features, n_out, norm_kind, final_norm=kind is HeadKind.SEGMENTATION)
        super().__init__(encoder, decoder, head_module, spatial_dims=spatial_dims)
