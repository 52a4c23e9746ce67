"""Run checkpoints: ``last`` (resumable, every N steps) and ``best`` (by validation Dice), rank 0 only.

The files follow :mod:`medtransfer.checkpoint`; the ``trainer`` section holds everything a resume needs
(optimiser, scheduler, scaler, step counters, RNG states, data position, history) as weights-only data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"


class CheckpointManager:
    """Writes and finds a run's checkpoints.

    Args:
        directory: the run folder's checkpoint directory.
        model_spec: ``{"name": <registry name>, "config": {...}}`` so that the model can be rebuilt.
        meta: provenance stored in every checkpoint (strategy plan, load audit, preprocessing, labels, ...).
    """

    def __init__(
        self, directory: str | os.PathLike, model_spec: dict[str, Any] | None = None, meta: dict | None = None
    ) -> None:
        self.directory = Path(directory)
        self.model_spec = model_spec or {"name": None, "config": {}}
        self.meta = dict(meta or {})

    @property
    def last_path(self) -> Path:
        return self.directory / LAST

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    def save(self, name: str, state_dict: dict, trainer_state: dict | None, meta: dict | None = None) -> Path:
        """Write checkpoint ``name`` (``last``/``best``) atomically."""
        path = self.last_path if name == "last" else self.best_path if name == "best" else self.directory / name
        payload = {"model": self.model_spec, "state_dict": state_dict, "meta": {**self.meta, **(meta or {})}}
        if trainer_state is not None:
            payload["trainer"] = trainer_state
        save_checkpoint(path, payload)
        logger.debug("saved %s", path)
        return path

    def load_last(self) -> dict[str, Any] | None:
        """The resumable checkpoint, or ``None`` when the run has not written one yet."""
        if not self.last_path.is_file():
            return None
        return load_checkpoint(self.last_path)
