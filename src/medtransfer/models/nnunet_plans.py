"""From nnU-Net v2's plans and weights to :class:`medtransfer.models.NnUNet` (no nnU-Net code is imported).

:func:`config_from_plans` turns a plans ``architecture`` entry (``network_class_name``, ``arch_kwargs``) into the
model's config, optionally with the spatial axes reordered (nnU-Net arrays are ``(z, y, x)`` of the file;
medtransfer's are ``(x, y, z)`` in RAS order); :func:`convert_nnunet_state_dict` maps nnU-Net's
``network_weights`` onto the model's named stages (kernels permuted alike).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError
from .nnunet_unet import DROPOUTS, NONLINS, NORMS, EncoderKind, parse_encoder, per_stage
from .unet import encoder_stage_names

# torch class name in a plans file -> option of this model (never imported by name: a plans file is data).
TORCH_NAMES = {
    **{cls.__name__: name for name, pair in NORMS.items() for cls in pair},
    **{cls.__name__: name for name, cls in NONLINS.items()},
    **{cls.__name__: name for name, cls in DROPOUTS.items()},
}
ARCHITECTURES = {"PlainConvUNet": EncoderKind.PLAIN, "ResidualEncoderUNet": EncoderKind.RESIDUAL}

ARCH_KEYS = {
    "n_stages",
    "features_per_stage",
    "conv_op",
    "kernel_sizes",
    "strides",
    "n_conv_per_stage",
    "n_blocks_per_stage",
    "n_conv_per_stage_decoder",
    "conv_bias",
    "norm_op",
    "norm_op_kwargs",
    "dropout_op",
    "dropout_op_kwargs",
    "nonlin",
    "nonlin_kwargs",
    "nonlin_first",
    "deep_supervision",
    "block",
    "stem_channels",
    "bottleneck_channels",
}


def config_from_plans(
    class_name: str, arch_kwargs: Mapping[str, Any], axes: Sequence[int] | None = None, *, source: str = "plans.json"
) -> dict[str, Any]:
    """The :class:`NnUNet` config of a plans ``architecture`` (``network_class_name`` and ``arch_kwargs``).

    Args:
        class_name: ``...PlainConvUNet`` or ``...ResidualEncoderUNet`` (module path ignored).
        arch_kwargs: the plans' ``arch_kwargs`` (torch classes named as strings; nothing is imported).
        axes: ``axes[i]`` is the nnU-Net axis that becomes axis ``i`` of this model (default: unchanged).
        source: names the file in error messages.

    Raises:
        ConfigError: an architecture, layer or option this model cannot rebuild.
    """
    short = str(class_name).rsplit(".", 1)[-1]
    if short not in ARCHITECTURES:
        raise ConfigError(
            f"{source}: network class {class_name!r} cannot be rebuilt by medtransfer; supported: "
            f"{', '.join(ARCHITECTURES)} (dynamic_network_architectures)"
        )
    unknown = sorted(set(arch_kwargs) - ARCH_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: arch_kwargs {unknown} of {short} are not supported; supported: {sorted(ARCH_KEYS)}"
        )
    kw = dict(arch_kwargs)
    if str(kw.get("block") or "BasicBlockD").rsplit(".", 1)[-1] != "BasicBlockD" or kw.get("bottleneck_channels"):
        raise ConfigError(f"{source}: only BasicBlockD residual blocks are supported, got block={kw.get('block')!r}")
    spatial_dims = {"Conv2d": 2, "Conv3d": 3}.get(str(kw.get("conv_op")).rsplit(".", 1)[-1])
    if spatial_dims is None:
        raise ConfigError(f"{source}: conv_op {kw.get('conv_op')!r} is not supported; allowed: Conv2d, Conv3d")
    n = int(kw.get("n_stages", len(kw["features_per_stage"])))
    axes = list(range(spatial_dims)) if axes is None else [int(a) for a in axes]
    kind = ARCHITECTURES[short]
    counts = kw["n_conv_per_stage"] if kind is EncoderKind.PLAIN else kw["n_blocks_per_stage"]
    return {
        "spatial_dims": spatial_dims,
        "features_per_stage": _list(kw["features_per_stage"], n),
        "kernel_sizes": [[k[a] for a in axes] for k in per_stage(kw["kernel_sizes"], n, spatial_dims, "kernel_sizes")],
        "strides": [[s[a] for a in axes] for s in per_stage(kw["strides"], n, spatial_dims, "strides")],
        "n_conv_per_stage": _list(counts, n),
        "n_conv_per_stage_decoder": _list(kw["n_conv_per_stage_decoder"], n - 1),
        "encoder": kind.value,
        "conv_bias": bool(kw.get("conv_bias", False)),
        "norm": _option(kw.get("norm_op"), NORMS, "norm_op", source),
        "norm_kwargs": dict(kw.get("norm_op_kwargs") or {}),
        "nonlin": _option(kw.get("nonlin"), NONLINS, "nonlin", source),
        "nonlin_kwargs": dict(kw.get("nonlin_kwargs") or {}),
        "dropout": _option(kw.get("dropout_op"), DROPOUTS, "dropout_op", source),
        "dropout_kwargs": dict(kw.get("dropout_op_kwargs") or {}),
        "nonlin_first": bool(kw.get("nonlin_first", False)),
        "stem_channels": kw.get("stem_channels"),
    }


def _list(value: int | Sequence[int], n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def _option(torch_name: str | None, table: Mapping[str, Any], what: str, source: str) -> str | None:
    if torch_name is None:
        return None
    option = TORCH_NAMES.get(str(torch_name).rsplit(".", 1)[-1])
    if option not in table:
        names = sorted({cls.__name__ for v in table.values() for cls in (v if isinstance(v, tuple) else (v,))})
        raise ConfigError(f"{source}: {what} {torch_name!r} is not supported; allowed: {', '.join(names)}")
    return option


_ENCODER_STAGE = re.compile(r"^encoder\.stages\.(\d+)\.")
_DECODER_PART = re.compile(r"^decoder\.(stages|transpconvs|seg_layers)\.(\d+)\.")


def convert_nnunet_state_dict(
    state: Mapping[str, torch.Tensor], n_stages: int, encoder: str, axes: Sequence[int] | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map nnU-Net ``network_weights`` onto :class:`NnUNet`'s keys; returns ``(state_dict, ignored_keys)``.

    ``all_modules.*`` and ``decoder.encoder.*`` (aliases nnU-Net stores twice) are dropped; the deep-supervision
    layers (``decoder.seg_layers.{j}`` but the last) are returned as ignored; kernels are permuted by ``axes``
    (as in :func:`config_from_plans`); unknown keys are kept unchanged (the load audit reports them).
    """
    names, plain = encoder_stage_names(n_stages), parse_encoder(encoder) is EncoderKind.PLAIN
    out, ignored = {}, []
    for key, value in state.items():
        if ".all_modules." in key or key.startswith("decoder.encoder."):
            continue
        new = key.replace("encoder.stem.", f"encoder.stages.{names[0]}.stem.", 1)
        if match := _ENCODER_STAGE.match(key):
            rest = key[match.end() :]
            rest = rest[2:] if plain and rest.startswith("0.") else rest
            new = f"encoder.stages.{names[int(match[1])]}.{rest}"
        elif match := _DECODER_PART.match(key):
            part, j, rest = match[1], int(match[2]), key[match.end() :]
            if part == "seg_layers" and j != n_stages - 2:
                ignored.append(key)
                continue
            new = {
                "seg_layers": f"head.conv.{rest}",
                "transpconvs": f"decoder.stages.dec{n_stages - 1 - j}.transpconv.{rest}",
                "stages": f"decoder.stages.dec{n_stages - 1 - j}.{rest}",
            }[part]
        out[new] = _permute(value, axes)
    return out, ignored


def _permute(value: torch.Tensor, axes: Sequence[int] | None) -> torch.Tensor:
    if axes is None or value.ndim != len(axes) + 2 or list(axes) == sorted(axes):
        return value
    return value.permute(0, 1, *(2 + int(a) for a in axes)).contiguous()
