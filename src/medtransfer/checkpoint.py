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

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from .errors import DataError, OutputError
from .utils import atomic_path

FORMAT = "medtransfer.checkpoint/1"
_NESTED_WEIGHT_KEYS = ("state_dict", "model", "network_weights", "model_state_dict")
_ALLOWED = "allowed: a medtransfer checkpoint or a PyTorch state dict of tensors (torch.save(model.state_dict(), f))"
# Phrases of PyTorch's weights-only unpickler when a file references a class or function (pickled code).
_CODE_MARKERS = ("GLOBAL ", "unrecognized function", "allowlisted")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; adds the ``format`` key.  Returns the path.

    The payload is serialised in memory first, so that a failed write is the operating system's own error (disk
    full, read-only, ...) rather than PyTorch's zip-writer message; the file at ``path`` is left as it was.

    Raises:
        OutputError: the file cannot be written (the message says why and where).
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **checkpoint}, buffer)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as err:
        raise OutputError.from_os_error(path, err, "the checkpoint", needed=buffer.getbuffer().nbytes) from err
    return path


def missing_checkpoint_hint(path: str | os.PathLike) -> str:
    """For a ``checkpoint_best.pt`` that does not exist beside a ``checkpoint_last.pt`` that does (a run without
    validation scans writes only the last one): ``"; that run wrote only <last> ..."``, else ``""``."""
    path = Path(path)
    last = path.with_name("checkpoint_last.pt")
    if path.name == "checkpoint_best.pt" and not path.exists() and last.is_file():
        return f"; that run wrote only {last} (it had no validation scans): name that file"
    return ""


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Plain state dicts (a mapping of names to tensors, as torchvision/timm files are) are accepted too and come
    back as ``{"format": None, "state_dict": ...}``.

    Raises:
        DataError: the file is missing, not a torch file, or holds something other than data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found{missing_checkpoint_hint(path)}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise DataError(_load_failure(path, err)) from err
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


def _load_failure(path: Path, err: Exception) -> str:
    """This project's message for a file that ``torch.load(weights_only=True)`` refused.

    PyTorch's own text advises retrying with ``weights_only=False``, which would run the file's code: it is never
    shown (it stays on the chained exception for library callers).
    """
    if isinstance(err, OSError):
        return f"{path}: cannot be read ({err.strerror or err})"
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and any(marker in text for marker in _CODE_MARKERS):
        name = re.search(r"GLOBAL (\S+)", text)
        return (
            f"{path}: refused: the file holds pickled code{f' ({name[1]})' if name else ''}, which medtransfer "
            f"never runs (checkpoints are data only); {_ALLOWED}"
        )
    with path.open("rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"  # torch.save's format is a zip archive
    if zipped:
        return f"{path}: not a complete PyTorch file (truncated or damaged, or another zip archive); {_ALLOWED}"
    return f"{path}: not a medtransfer or PyTorch weights file; {_ALLOWED}"
