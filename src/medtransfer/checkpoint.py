"""The checkpoint file format, shared by pretraining, fine-tuning and prediction.

A checkpoint is data, never code: a dict of tensors, numbers, strings, lists and dicts, written atomically
with ``torch.save`` and read with ``torch.load(weights_only=True)``.  Layout::

    {
      "format": "medtransfer.checkpoint/1",
      "model": {"name": <registry name>, "config": {...kwargs of create_model...}},
      "state_dict": {...},             # model weights (no "module." / "_orig_mod." prefixes)
      "meta": {...},                   # provenance: source task/domain, data, steps, metrics, strategy, ...
      "trainer": {...} | absent,       # optimiser/scheduler/RNG state for resuming
    }

This module sits below ``models`` and ``train`` so that both can read the format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .utils import atomic_path

FORMAT = "medtransfer.checkpoint/1"
_NESTED_WEIGHT_KEYS = ("state_dict", "model", "network_weights", "model_state_dict")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; adds the ``format`` key.  Returns the path."""
    path = Path(path)
    payload = {"format": FORMAT, **checkpoint}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Plain state dicts (a mapping of names to tensors, as torchvision/timm files are) are accepted too and come
    back as ``{"format": None, "state_dict": ...}``.

    Raises:
        DataError: the file is missing, not a torch file, or holds something other than data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise DataError(f"{path}: not a readable weights-only torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a checkpoint must hold a dict, found {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        return obj
    for key in _NESTED_WEIGHT_KEYS:  # timm/DeiT ("model"), nnU-Net ("network_weights"), Lightning, ...
        if isinstance(obj.get(key), dict):
            return {"format": None, **{k: v for k, v in obj.items() if k != key}, "state_dict": obj[key]}
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": None, "state_dict": obj}
    raise DataError(f"{path}: neither a medtransfer checkpoint nor a state dict (keys: {sorted(obj)[:8]})")
