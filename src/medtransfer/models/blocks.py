"""Dimension-generic layer factories and the small blocks every architecture is built from.

As in MONAI's ``networks/layers/factories.py``, layers are chosen by ``spatial_dims`` (2 or 3) so that one model
definition serves 2D slices and 3D volumes.  Norms are named by :class:`Norm`.  Up-sampling is always a module
(never a functional call inside ``forward``), so :func:`medtransfer.models.inflate_2d_to_3d` can convert a whole
2D network into its 3D twin module by module.
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

from ..errors import ConfigError, did_you_mean


class Norm(StrEnum):
    """Normalisation layer of a model (``batch`` is the default: fastest on CPU with channels_last)."""

    BATCH = "batch"
    INSTANCE = "instance"
    GROUP = "group"


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise :class:`ConfigError`."""
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def parse_norm(norm: str | Norm) -> Norm:
    """Turn a user string into :class:`Norm` with a did-you-mean error."""
    try:
        return Norm(str(norm).lower())
    except ValueError as err:
        raise ConfigError(did_you_mean(str(norm), [n.value for n in Norm], what="norm")) from err


def conv(spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, *, bias: bool = True):
    """A ``Conv{2,3}d`` with 'same' padding for odd kernels (and no padding for kernel == stride)."""
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    padding = 0 if kernel_size == stride else kernel_size // 2
    return cls(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias)


def conv_transpose(spatial_dims: int, in_ch: int, out_ch: int, scale: int = 2, *, bias: bool = True):
    """A ``ConvTranspose{2,3}d`` that up-samples by ``scale`` (kernel = stride = scale)."""
    cls = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return cls(in_ch, out_ch, scale, stride=scale, bias=bias)


def norm_layer(spatial_dims: int, channels: int, norm: str | Norm = Norm.BATCH, *, groups: int = 8) -> nn.Module:
    """A normalisation layer; group norm uses ``min(groups, channels)`` groups that divide ``channels``."""
    kind = parse_norm(norm)
    if kind is Norm.BATCH:
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind is Norm.INSTANCE:
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    n_groups = max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(n_groups, channels)


def max_pool(spatial_dims: int, size: int = 2) -> nn.Module:
    """A ``MaxPool{2,3}d`` with kernel = stride = ``size``."""
    return (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(size, stride=size)


class ConvNormAct(nn.Sequential):
    """Conv -> norm -> ReLU (post-activation, as in the original U-Net with BatchNorm).

    Example:
        >>> ConvNormAct(2, 1, 8)(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm: str | Norm = Norm.BATCH,
    ):
        super().__init__()
        self.conv = conv(spatial_dims, in_ch, out_ch, kernel_size, stride, bias=False)
        self.norm = norm_layer(spatial_dims, out_ch, norm)
        self.act = nn.ReLU(inplace=True)


class DoubleConv(nn.Sequential):
    """Two :class:`ConvNormAct` layers: the U-Net's basic block."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, norm: str | Norm = Norm.BATCH):
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_ch, out_ch, norm=norm)
        self.conv2 = ConvNormAct(spatial_dims, out_ch, out_ch, norm=norm)


class PreActivation(nn.Sequential):
    """Norm -> ReLU -> conv (the pre-activation unit of He et al. 2016 and of the DART code)."""

    def __init__(
        self,
        spatial_dims: int,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        norm: str | Norm = Norm.BATCH,
        *,
        bias: bool = False,
    ):
        super().__init__()
        self.norm = norm_layer(spatial_dims, in_ch, norm)
        self.act = nn.ReLU()
        self.conv = conv(spatial_dims, in_ch, out_ch, kernel_size, bias=bias)


class PreActResBlock(nn.Module):
    """Two :class:`PreActivation` units plus an identity (or 1x1 conv) shortcut.

    Example:
        >>> PreActResBlock(2, 4, 4)(torch.zeros(1, 4, 8, 8)).shape
        torch.Size([1, 4, 8, 8])
    """

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, kernel_size: int = 3, norm: str | Norm = Norm.BATCH):
        super().__init__()
        self.conv_path = nn.Sequential(
            PreActivation(spatial_dims, in_ch, out_ch, kernel_size, norm),
            PreActivation(spatial_dims, out_ch, out_ch, kernel_size, norm),
        )
        self.shortcut = nn.Identity() if in_ch == out_ch else conv(spatial_dims, in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_path(x) + self.shortcut(x)


def pad_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Zero-pad (or crop) ``x`` at the end of each spatial axis to the spatial size of ``like`` (odd sizes)."""
    diff = [b - a for a, b in zip(x.shape[2:], like.shape[2:], strict=True)]
    if not any(diff):
        return x
    pads: list[int] = []
    for d in reversed(diff):
        pads += [0, d]
    return nn.functional.pad(x, pads)
