"""The target model of a fine-tuning run: the source's architecture with the target's channels and head.

The weights themselves are loaded by the strategy (:func:`medtransfer.transfer.apply_strategy`), which records
the load audit.  Architectures and heads: docs/guide.md; transfer between them: docs/pretraining.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from .config import FinetuneConfig

TASK_KEYS = ("num_classes", "head", "out_channels")  # set by the target task, never taken from the source


def load_source(config: FinetuneConfig) -> dict[str, Any] | None:
    """The source checkpoint of ``config.init`` (``None`` without one).

    ``init`` is a checkpoint file or a run folder; a run folder gives its best checkpoint, as
    ``predict --model RUN`` does (:func:`medtransfer.infer.find_checkpoint`).
    """
    if not config.init:
        return None
    from ..infer.predictor import find_checkpoint

    path = Path(config.init)
    return load_checkpoint(find_checkpoint(path) if path.is_dir() else path)


def build_model(
    config: FinetuneConfig,
    source: dict[str, Any] | None,
    in_channels: int,
    *,
    num_labels: int | None = None,
    num_classes: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The target model: the source's architecture (or ``config.model``) with the target's channels and head.

    Args:
        config: the run (``model`` when the source has no spec, ``model_config`` overrides).
        source: the source checkpoint (its ``model`` spec), or ``None``.
        in_channels: image channels of the target dataset.
        num_labels: segmentation: label values including background (binary -> one output channel).
        num_classes: classification: classes of the image-level target (a classification head).

    Returns:
        ``(model, spec)``; ``spec`` is ``{"name", "config"}`` as stored in checkpoints.
    """
    from ..models import create_model

    source_spec = (source or {}).get("model") or {}
    name = source_spec.get("name") or config.model
    model_cfg = {k: v for k, v in (source_spec.get("config") or {}).items() if k not in TASK_KEYS}
    model_cfg.update({k: v for k, v in config.model_config.items() if k not in TASK_KEYS})
    if num_classes is not None:
        model_cfg.update(in_channels=in_channels, head="classification", num_classes=num_classes)
    else:
        model_cfg.update(in_channels=in_channels, out_channels=segmentation_outputs(source_spec, num_labels))
    model = create_model(name, **model_cfg)
    return model, {
        "name": getattr(model, "model_name", name),
        "config": dict(getattr(model, "model_config", model_cfg)),
    }


def segmentation_outputs(source_spec: dict[str, Any], num_labels: int | None) -> int | None:
    """Output channels of a segmentation target: one sigmoid channel for a binary target, one per label otherwise;
    but a binary target keeps a source's two softmax channels (deepbet, HD-BET, nnU-Net: background and
    foreground), so that its head transfers instead of being re-initialised."""
    if num_labels == 2 and (source_spec.get("config") or {}).get("out_channels") == 2:
        return 2
    return 1 if num_labels == 2 else num_labels


def size_divisor(spec: dict[str, Any], source: dict[str, Any] | None = None) -> int:
    """Sizes are padded to a multiple of this: the source network's own divisor when its checkpoint records one
    (``meta["inference"]["divisor"]`` of an imported network: deepbrain 8, HD-BET 16, deepbet 32, an nnU-Net
    model's total stride) and the model is the source's architecture; else the U-Net's total downsampling, times
    two."""
    inference = ((source or {}).get("meta") or {}).get("inference") or {}
    if inference.get("divisor") and _same_architecture(spec, (source or {}).get("model") or {}):
        return int(inference["divisor"])
    depth = int(spec["config"].get("depth", 5))
    return max(2 ** max(depth - 1, 0), 1) * 2


def _same_architecture(spec: dict[str, Any], source_spec: dict[str, Any]) -> bool:
    """Same network up to its input channels and outputs (what :func:`build_model` adapts to the target)."""
    ignore = {*TASK_KEYS, "in_channels"}

    def body(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in (s.get("config") or {}).items() if k not in ignore}

    return spec.get("name") == source_spec.get("name") and body(spec) == body(source_spec)


@dataclass(frozen=True)
class InputLayout:
    """How a network's input channels are laid out: for each of the ``2 * context + 1`` slices of a 2.5D stack
    (offsets ``-context .. +context``, outermost: :func:`medtransfer.infer.sliding_window.context_stack`), the
    ``channels`` image channels (modalities) and then, when ``symmetry``, their mirrors in the same order
    (:func:`medtransfer.data.symmetry.add_mirror_channels`)."""

    channels: int
    context: int = 0
    symmetry: bool = False

    @property
    def per_offset(self) -> int:
        return self.channels * (2 if self.symmetry else 1)

    @property
    def total(self) -> int:
        return self.per_offset * (2 * self.context + 1)

    def index(self, offset: int, mirrored: bool, channel: int) -> int:
        return (offset + self.context) * self.per_offset + (self.channels if mirrored else 0) + channel

    def to_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "context": self.context, "symmetry": self.symmetry}


def source_layout(source: dict[str, Any] | None) -> InputLayout | None:
    """The input layout a medtransfer source was trained with (its ``meta.inference`` ``context`` / ``symmetry``
    and its ``in_channels``), or ``None`` when the checkpoint does not record one (an imported network)."""
    meta = ((source or {}).get("meta") or {}).get("inference") or {}
    if "context" not in meta and "symmetry" not in meta:
        return None
    in_channels = int((((source or {}).get("model") or {}).get("config") or {}).get("in_channels", 1))
    context, symmetry = int(meta.get("context") or 0), bool(meta.get("symmetry", False))
    per_stack = (2 * context + 1) * (2 if symmetry else 1)
    if in_channels % per_stack:
        return None
    return InputLayout(in_channels // per_stack, context, symmetry)


def relayout_input_kernel(weight: torch.Tensor, source: InputLayout, target: InputLayout) -> torch.Tensor:
    """A first-layer kernel ``(O, source.total, *k)`` re-laid out to ``(O, target.total, *k)`` channel by channel.

    Each target channel takes the source kernel of the same slice offset, image channel and mirroring, so a
    2.5D source keeps the meaning of each neighbour slice (a generic channel adaptation, repeating kernels
    cyclically, would hand one modality's neighbour-slice kernels to another modality).  Where the layouts differ:

    * a source without context (one slice) spreads its kernel evenly over the target's offsets; target offsets
      beyond the source's get zero, and source offsets beyond the target's add into the outermost target offset
      (either way a stack of identical slices gives the source's activation);
    * other image channel counts, within each offset, as timm's ``adapt_input_conv`` across the whole kernel: one
      target channel sums the source's; more repeat them cyclically, rescaled by ``source / target`` channels;
    * mirror channels the source did not have start at zero (the target network then computes exactly what the
      source did, and training finds what the mirror adds); a source's mirror kernels are dropped when the target
      has none.

    Example (a 1-channel source without context into a 2.5D target with a symmetry channel):
        >>> w = torch.ones(1, 1, 1, 1)
        >>> relayout_input_kernel(w, InputLayout(1), InputLayout(1, 1, True))[0, :, 0, 0].tolist()
        [0.3333333432674408, 0.0, 0.3333333432674408, 0.0, 0.3333333432674408, 0.0]
    """
    if weight.shape[1] != source.total:
        raise ValueError(f"kernel has {weight.shape[1]} input channels, the source layout {source} has {source.total}")
    src = weight.float()
    out = torch.zeros((src.shape[0], target.total, *src.shape[2:]), dtype=torch.float32)
    for offset in range(-target.context, target.context + 1):
        if source.context == 0:
            offsets, scale = [0], 1.0 / (2 * target.context + 1)
        else:
            offsets = [
                o
                for o in range(-source.context, source.context + 1)
                if max(-target.context, min(target.context, o)) == offset
            ]
            scale = 1.0
        for mirrored in (False, True) if target.symmetry else (False,):
            if mirrored and not source.symmetry:
                continue  # zero: the target starts as the source
            for channel in range(target.channels):
                kernel = torch.zeros_like(out[:, 0])
                for o in offsets:
                    if target.channels == 1:  # timm: a grey channel sums the source's (R = G = B)
                        kernel += sum(src[:, source.index(o, mirrored, c)] for c in range(source.channels))
                    else:  # timm: the source's channels repeated cyclically, rescaled to keep the activation
                        c = channel % source.channels
                        kernel += src[:, source.index(o, mirrored, c)] * (source.channels / target.channels)
                out[:, target.index(offset, mirrored, channel)] = kernel * scale
    return out.to(weight.dtype)


def relayout_source(
    source: dict[str, Any] | None, model: nn.Module, target: InputLayout
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``source`` with its first convolution re-laid out to the ``target`` input layout
    (:func:`relayout_input_kernel`), and a record of it for the run's meta.

    Unchanged (and ``None``) when the source records no layout (unless the target has a symmetry channel: the
    source's channels are then taken as image channels, so that the mirror channels start at zero), when the layouts
    agree or neither has context or mirrors (``adapt_input_conv`` then does the same), or when the first kernels are
    not convolutions of one dimensionality and the recorded widths.  The record counts the input channels that
    start at zero (``zero_channels``: new mirrors, offsets beyond the source's).
    """
    if source is None:
        return source, None
    from ..models.loading import _best_prefix, _first_conv_key, _rename, resolve_state_dict

    state, model_state = resolve_state_dict(source), model.state_dict()
    model_key = _first_conv_key(model_state)
    prefix = _best_prefix(set(state), set(model_state))
    key = next((k for k in state if _rename(k, prefix) == model_key), None)
    if model_key is None or key is None:
        return source, None
    weight, wanted = state[key], model_state[model_key]
    layout = source_layout(source)
    if layout is None and target.symmetry:  # a source without a recorded layout: its channels are image channels
        layout = InputLayout(int(weight.shape[1]))
    plain = layout is not None and not (layout.context or target.context or layout.symmetry or target.symmetry)
    if layout is None or layout == target or plain:  # plain: adapt_input_conv does the same
        return source, None
    if (
        weight.ndim != wanted.ndim
        or weight.ndim < 4
        or weight.shape[1] != layout.total
        or wanted.shape[1] != target.total
    ):
        return source, None
    state[key] = relayout_input_kernel(weight, layout, target)
    zero = int((state[key].detach().transpose(0, 1).flatten(1).abs().sum(1) == 0).sum())
    record = {"key": model_key, "source": layout.to_dict(), "target": target.to_dict(), "zero_channels": zero}
    return {**source, "state_dict": state}, record
