"""The target model of a fine-tuning run: the source's architecture with the target's channels and head.

The weights themselves are loaded by the strategy (:func:`medtransfer.transfer.apply_strategy`), which records
the load audit.  Architectures and heads: docs/guide.md; transfer between them: docs/pretraining.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
