"""Load pretrained weights into a model and say exactly what happened (:class:`LoadAudit`).

Follows ``monai.networks.utils.copy_model_state`` and ``timm.models._builder.load_pretrained``: only tensors
whose name and shape match are copied; the rest is reported.  On top of that:

* ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped, as nnU-Net does;
* if the source is a bare encoder (torchvision/timm ResNet: ``conv1.weight``, ``layer1.0.conv1.weight``, ...),
  the ``encoder.`` prefix that matches most names is added automatically (and removed when a whole model's
  weights are loaded into a bare encoder);
* a different number of input channels in the model's first convolution is adapted (timm's
  ``adapt_input_conv``: RGB kernels summed for one channel, repeated and rescaled for more);
* 2D kernels are inflated into a 3D model (see :mod:`medtransfer.models.inflate`);
* a head with a different class count keeps its fresh initialisation and is listed under ``skipped_shape``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..errors import ConfigError, DataError
from .inflate import InflateMode, inflate_weight

log = logging.getLogger(__name__)

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
KEY_PREFIXES = ("", "encoder.", "-encoder.")
STATE_DICT_KEYS = ("state_dict", "model", "network_weights", "model_state_dict")


@dataclass(frozen=True)
class LoadAudit:
    """What :func:`load_pretrained` did with every tensor.

    Attributes:
        loaded: model keys copied from the source (including adapted and inflated ones).
        skipped_shape: model keys present in the source with an incompatible shape (kept as initialised).
        missing: model keys absent from the source (kept as initialised).
        unexpected: source keys the model does not have (ignored).
        adapted: keys whose input channels were adapted (subset of ``loaded``).
        inflated: keys inflated from 2D to 3D (subset of ``loaded``).
        prefix: prefix added to source keys to match the model (``""`` or ``"encoder."``); ``"-encoder."``
            means it was removed from them.
        shapes: for each skipped key, ``"source (..) vs model (..)"``.
    """

    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    prefix: str = ""
    shapes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (for the run folder)."""
        return asdict(self)

    def summary(self, sep: str = "\n") -> str:
        """One readable paragraph: counts plus the first names of every non-loaded category (one per line, or
        joined by ``sep``)."""
        lines = [
            f"loaded {len(self.loaded)} tensors (adapted input channels: {len(self.adapted)}, "
            f"inflated 2D->3D: {len(self.inflated)}, key prefix added: {self.prefix!r})"
        ]
        for what in ("skipped_shape", "missing", "unexpected"):
            names = getattr(self, what)
            if names:
                shown = [f"{n} [{self.shapes[n]}]" if n in self.shapes else n for n in names[:6]]
                more = f" ... (+{len(names) - 6})" if len(names) > 6 else ""
                lines.append(f"{what}: {len(names)}: {', '.join(shown)}{more}")
        return sep.join(lines)

    def misfit(self, *, inflated_ok: bool = False, adapted_ok: bool = False, shown: int = 3) -> str:
        """``""`` when every model tensor came from the source as it is; else one line naming what does not fit.

        An import of a complete network must fit it exactly: no tensor skipped for its shape, missing or
        unexpected, none inflated from 2D to 3D (unless ``inflated_ok``) nor input-adapted (unless ``adapted_ok``).
        Each kind gives its count and its first ``shown`` keys (a skipped key with both shapes), joined by ``; ``.

        Example:
            >>> LoadAudit(missing=["head.conv.bias"], inflated=["a.weight", "b.weight"]).misfit()
            'tensors missing from the file: 1 (head.conv.bias); 2D kernels inflated to 3D: 2 (a.weight, b.weight)'
        """
        kinds = [
            ("tensors of another shape", self.skipped_shape),
            ("tensors missing from the file", self.missing),
            ("tensors not in the network", self.unexpected),
            ("2D kernels inflated to 3D", [] if inflated_ok else self.inflated),
            ("input channels adapted", [] if adapted_ok else self.adapted),
        ]
        parts = []
        for label, names in kinds:
            if names:
                keys = [f"{n} [{self.shapes[n]}]" if n in self.shapes else n for n in names[:shown]]
                more = f", +{len(names) - shown} more" if len(names) > shown else ""
                parts.append(f"{label}: {len(names)} ({', '.join(keys)}{more})")
        return "; ".join(parts)


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading ``module.`` / ``_orig_mod.`` (repeatedly, in any order) from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def resolve_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from a checkpoint path, a checkpoint dict or a plain state dict.

    Checkpoint dicts hold the weights under ``state_dict`` (medtransfer, Lightning), ``model`` (timm/DeiT
    training checkpoints), ``network_weights`` (nnU-Net) or ``model_state_dict``.
    """
    if isinstance(source, str | os.PathLike):
        source = load_checkpoint(source)
    if not isinstance(source, Mapping):
        raise DataError(f"pretrained source must be a path or a state dict, got {type(source).__name__}")
    for key in STATE_DICT_KEYS:  # medtransfer/Lightning/timm, timm/DeiT, nnU-Net, common training scripts
        nested = source.get(key)
        if isinstance(nested, Mapping) and any(isinstance(v, torch.Tensor) for v in nested.values()):
            source = nested
            break
    tensors = {k: v for k, v in source.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise DataError("pretrained source holds no tensors")
    return strip_wrapper_prefixes(tensors)


def adapt_input_conv(in_channels: int, weight: torch.Tensor) -> torch.Tensor:
    """Adapt a first-layer kernel (O, I, *k) to ``in_channels`` inputs (timm's ``adapt_input_conv``).

    One input channel: sum over the source inputs (a grey image is R = G = B).  More: repeat the source
    kernels cyclically and rescale by ``I / in_channels`` so the activation scale is kept.

    Example:
        >>> w = torch.ones(2, 3, 1, 1)
        >>> adapt_input_conv(1, w)[0, 0, 0, 0].item(), adapt_input_conv(6, w)[0, 0, 0, 0].item()
        (3.0, 0.5)
    """
    dtype, src = weight.dtype, weight.float()
    n_src = src.shape[1]
    if in_channels == 1:
        out = src.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_channels / n_src)
        out = src.repeat(1, repeat, *([1] * (src.ndim - 2)))[:, :in_channels] * (n_src / in_channels)
    return out.to(dtype)


def _rename(key: str, prefix: str) -> str:
    """Add ``prefix`` to ``key``, or remove it when written ``-prefix``."""
    if prefix.startswith("-"):
        return key[len(prefix) - 1 :] if key.startswith(prefix[1:]) else key
    return prefix + key


def _best_prefix(source_keys: set[str], model_keys: set[str]) -> str:
    return max(KEY_PREFIXES, key=lambda p: (len({_rename(k, p) for k in source_keys} & model_keys), p == ""))


def _first_conv_key(state: Mapping[str, torch.Tensor]) -> str | None:
    return next((k for k, v in state.items() if k.endswith("weight") and v.ndim >= 3), None)


def _transposed_keys(model: nn.Module) -> set[str]:
    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvTransposeNd)}


def _convert(src: torch.Tensor, dst: torch.Tensor, *, is_input: bool, adapt: bool, mode: InflateMode | None):
    """Return ``(tensor, how)`` with ``how`` in {"copy", "adapt", "inflate", "adapt+inflate"} or ``(None, "")``.

    ``mode=None`` marks a transposed convolution: its kernel is repeated along depth without rescaling, so
    up-sampling a depth-constant volume stays depth-constant.
    """
    how = []
    if src.ndim + 1 == dst.ndim and src.ndim >= 3:
        depth = dst.shape[-1]  # the slice axis, last (see medtransfer.models.inflate)
        src = src.unsqueeze(-1).repeat(1, 1, 1, 1, depth) if mode is None else inflate_weight(src, depth, mode)
        how.append("inflate")
    if is_input and adapt and src.ndim == dst.ndim and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]:
        if src.shape[1] != dst.shape[1]:
            src = adapt_input_conv(dst.shape[1], src)
            how.insert(0, "adapt")
    if src.shape != dst.shape:
        return None, ""
    return src, "+".join(how) or "copy"


def _refuse_depth_first_inflation(
    model: nn.Module, state: Mapping[str, Any], target: Mapping[str, Any], source
) -> None:
    """Refuse the weights of a 3D model inflated by a version before 2026-12-07, whose kernels gained the new axis
    first (``A x B x 1 x k x k``, depth on X): this version inflates along Z, the slice axis (``A x B x k x k x 1``),
    so those kernels would be skipped as "other shape" and the model would start from random convolutions."""
    if not (getattr(model, "model_config", None) or {}).get("inflate"):
        return
    for key, dst in target.items():
        src = state.get(key)
        if not isinstance(src, torch.Tensor) or src.ndim != 5 or dst.ndim != 5 or src.shape == dst.shape:
            continue
        if tuple(src.permute(0, 1, 3, 4, 2).shape) == tuple(dst.shape):
            where = source if isinstance(source, str | os.PathLike) else "the source weights"
            raise ConfigError(
                f"{where}: a 3D network inflated by an earlier medtransfer (kernels {tuple(src.shape)} at {key}, "
                f"the new axis first); this version inflates along the slice axis Z ({tuple(dst.shape)}): start from "
                "the 2D source it was inflated from, or train it again"
            )


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    strict_shapes: bool = False,
    adapt_input: bool = True,
    inflate_mode: str = "wacker",
    prefix: str | None = None,
) -> LoadAudit:
    """Copy matching tensors of ``source`` into ``model`` in place and return the audit (also logged).

    Args:
        model: the model to initialise.
        source: checkpoint path (read with ``load_checkpoint``, weights only), checkpoint dict or state dict.
        strict_shapes: raise instead of skipping tensors whose shape cannot be matched.
        adapt_input: adapt the first convolution to the model's number of input channels.
        inflate_mode: how 2D kernels become 3D when loading a 2D source into a 3D model (``wacker``,
            ``center`` or ``i3d``; a depth-1 kernel always gets the 2D kernel unchanged; transposed convolutions
            are repeated along depth without rescaling).
        prefix: prefix added to source keys (``"-encoder."`` removes it); ``None`` picks the one of ``""``,
            ``"encoder."``, ``"-encoder."`` matching most keys.

    Raises:
        DataError: unreadable source, or ``strict_shapes`` and a shape mismatch.

    Example:
        >>> from medtransfer.models import create_model
        >>> src = create_model("unet", features=4, depth=2, out_channels=3).state_dict()
        >>> audit = load_pretrained(create_model("unet", features=4, depth=2, out_channels=1), src)
        >>> audit.skipped_shape
        ['head.conv.weight', 'head.conv.bias']
    """
    mode = InflateMode.parse(inflate_mode)
    state = resolve_state_dict(source)
    target = model.state_dict()
    prefix = _best_prefix(set(state), set(target)) if prefix is None else prefix
    state = {_rename(k, prefix): v for k, v in state.items()}
    _refuse_depth_first_inflation(model, state, target, source)
    first_conv, transposed = _first_conv_key(target), _transposed_keys(model)
    new, audit = {}, LoadAudit(prefix=prefix)
    for key, dst in target.items():
        if key not in state:
            audit.missing.append(key)
            continue
        value, how = _convert(
            state[key], dst, is_input=key == first_conv, adapt=adapt_input, mode=None if key in transposed else mode
        )
        if value is None:
            audit.skipped_shape.append(key)
            audit.shapes[key] = f"source {tuple(state[key].shape)} vs model {tuple(dst.shape)}"
            continue
        new[key] = value.to(dtype=dst.dtype)
        audit.loaded.append(key)
        if "adapt" in how:
            audit.adapted.append(key)
        if "inflate" in how:
            audit.inflated.append(key)
    audit.unexpected.extend(k for k in state if k not in target)
    where = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
    if strict_shapes and audit.skipped_shape:
        raise DataError(
            f"{where}pretrained weights do not fit the model (strict_shapes=True): {audit.summary(sep='; ')}"
        )
    if not audit.loaded:
        raise DataError(
            f"{where}no pretrained tensor matches the model; is it the right architecture? {audit.summary(sep='; ')}"
        )
    model.load_state_dict(new, strict=False)
    log.info("pretrained weights: %s", audit.summary())
    return audit
