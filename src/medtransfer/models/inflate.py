"""2D -> 3D inflation of weights and whole networks.

Modes (``InflateMode``) for a 2D kernel ``k x k``:

* ``wacker``: ``k x k x 1`` (Wacker et al.): the 3D network processes a volume slice by slice, exactly as the
  2D network would, with the same parameter count;
* ``center``: ``k x k x k`` with the 2D kernel in the central depth slice and zeros elsewhere: starts as the
  slice-wise network but can learn across slices;
* ``i3d``: ``k x k x k`` with the 2D kernel repeated along depth and divided by ``k`` (Carreira & Zisserman
  2017): a volume constant along depth gives the 2D response.

The depth axis is the *last* spatial axis: volumes are ``(C, X, Y, Z)`` in RAS order and 2D networks train and predict
on axial ``(X, Y)`` slices (``slice_axis: 2``), so a 2D kernel's two axes are X and Y and the slice axis Z is the
one it gains.  Depth strides are 1 (volumes are not down-sampled along the slice axis), and even kernels (strided
down/up-sampling with kernel = stride) stay one slice deep in every mode.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from enum import StrEnum

import torch
from torch import nn

from ..errors import ConfigError, did_you_mean


class InflateMode(StrEnum):
    """How a ``k x k`` kernel becomes 3D."""

    WACKER = "wacker"
    CENTER = "center"
    I3D = "i3d"

    @classmethod
    def parse(cls, value: str | InflateMode) -> InflateMode:
        try:
            return cls(str(value).lower())
        except ValueError as err:
            raise ConfigError(did_you_mean(str(value), [m.value for m in cls], what="inflation mode")) from err


def kernel_depth(kernel_size: int, mode: InflateMode) -> int:
    """Depth of the inflated kernel: 1 for ``wacker`` and for even kernels, else ``kernel_size``."""
    return 1 if mode is InflateMode.WACKER or kernel_size % 2 == 0 else kernel_size


def inflate_weight(weight: torch.Tensor, depth: int, mode: str | InflateMode = InflateMode.WACKER) -> torch.Tensor:
    """(A, B, kh, kw) -> (A, B, kh, kw, depth): the new axis is the slice axis, the last one.

    A depth-1 target gets the kernel unchanged in every mode; ``wacker`` into a deeper kernel places it in the
    centre slice (the slice-wise equivalent).

    Example:
        >>> inflate_weight(torch.ones(1, 1, 3, 3), 3, "i3d")[0, 0, 0, 0, :].tolist()
        [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]
    """
    mode = InflateMode.parse(mode)
    w = weight.unsqueeze(-1)
    if depth == 1:
        return w.clone()
    if mode is InflateMode.I3D:
        return w.repeat(1, 1, 1, 1, depth) / depth
    out = torch.zeros(*weight.shape, depth, dtype=weight.dtype)
    out[..., depth // 2] = weight
    return out


def inflate_state_dict(state_dict: Mapping[str, torch.Tensor], mode: str | InflateMode) -> dict[str, torch.Tensor]:
    """Inflate every 4D tensor (conv kernels) of a 2D state dict; other tensors are copied unchanged."""
    mode = InflateMode.parse(mode)
    return {
        k: inflate_weight(v, kernel_depth(v.shape[-1], mode), mode) if v.ndim == 4 else v.clone()
        for k, v in state_dict.items()
    }


def inflate_2d_to_3d(
    source: nn.Module | Mapping[str, torch.Tensor], mode: str | InflateMode = InflateMode.WACKER
) -> nn.Module | dict[str, torch.Tensor]:
    """Inflate a 2D network (returns a new 3D module, weights inflated) or a 2D state dict (returns a dict).

    A registered model's ``model_config`` gains ``spatial_dims=3, inflate=mode`` so that
    ``create_model(model.model_name, **model.model_config)`` rebuilds the same 3D architecture.

    Example:
        >>> net3d = inflate_2d_to_3d(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)))
        >>> net3d(torch.zeros(1, 1, 8, 8, 4)).shape
        torch.Size([1, 2, 8, 8, 4])
    """
    mode = InflateMode.parse(mode)
    if isinstance(source, Mapping):
        return inflate_state_dict(source, mode)
    model = _convert_tree(copy.deepcopy(source), mode)
    if getattr(model, "spatial_dims", None) == 2:
        model.spatial_dims = 3
    if getattr(model, "model_name", None) is not None:  # rebuildable: create_model(name, **model_config)
        model.model_config = {**model.model_config, "spatial_dims": 3, "inflate": mode.value}
    return model


def _convert_tree(module: nn.Module, mode: InflateMode) -> nn.Module:
    converted = _convert_leaf(module, mode)
    if converted is not None:
        return converted
    for name, child in module.named_children():
        setattr(module, name, _convert_tree(child, mode))
    return module


def _convert_leaf(m: nn.Module, mode: InflateMode) -> nn.Module | None:
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        return _conv(m, mode)
    if isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d):
        cls = nn.BatchNorm3d if isinstance(m, nn.BatchNorm2d) else nn.InstanceNorm3d
        new = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        new.load_state_dict(m.state_dict())
        return new.train(m.training)
    if isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
        k, s, p = (_pair(v) for v in (m.kernel_size, m.stride, m.padding))
        if isinstance(m, nn.MaxPool2d):
            return nn.MaxPool3d((*k, 1), (*s, 1), (*p, 0), ceil_mode=m.ceil_mode)
        return nn.AvgPool3d((*k, 1), (*s, 1), (*p, 0), ceil_mode=m.ceil_mode)
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        size = m.output_size if isinstance(m.output_size, int) else (*m.output_size, 1)
        return (nn.AdaptiveAvgPool3d if isinstance(m, nn.AdaptiveAvgPool2d) else nn.AdaptiveMaxPool3d)(size)
    if isinstance(m, nn.Upsample):
        mode_3d = {"bilinear": "trilinear", "bicubic": "trilinear"}.get(m.mode, m.mode)
        scale = None if m.scale_factor is None else (*_pair(m.scale_factor), 1.0)
        return nn.Upsample(scale_factor=scale, mode=mode_3d, align_corners=m.align_corners)
    if isinstance(m, nn.Dropout2d):
        return nn.Dropout3d(m.p)
    if type(m).__name__.endswith("2d"):
        raise ConfigError(f"cannot inflate layer {type(m).__name__} to 3D")
    return None


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _conv(m: nn.Conv2d | nn.ConvTranspose2d, mode: InflateMode) -> nn.Module:
    kh, kw = m.kernel_size
    depth = kernel_depth(kh, mode)
    kwargs = dict(
        kernel_size=(kh, kw, depth),
        stride=(*m.stride, 1),
        padding=(*m.padding, depth // 2),
        dilation=(*m.dilation, 1),
        groups=m.groups,
        bias=m.bias is not None,
    )
    if isinstance(m, nn.ConvTranspose2d):
        new = nn.ConvTranspose3d(m.in_channels, m.out_channels, output_padding=(*m.output_padding, 0), **kwargs)
    else:
        new = nn.Conv3d(m.in_channels, m.out_channels, padding_mode=m.padding_mode, **kwargs)
    with torch.no_grad():
        new.weight.copy_(inflate_weight(m.weight, depth, mode))
        if m.bias is not None:
            new.bias.copy_(m.bias)
    return new.train(m.training)
