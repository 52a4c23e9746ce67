"""Per-epoch metrics history (JSON lines, for convergence curves) and progress lines."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from ..utils import to_json, write_text_atomic

logger = logging.getLogger("medtransfer.train")


class MetricsHistory:
    """Epoch records kept in memory and mirrored to ``history.jsonl`` (rewritten atomically each epoch).

    The records also travel in the resumable checkpoint, so a resumed run's file never holds duplicates.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))
        self.flush()

    def flush(self) -> None:
        if self.path is not None:
            write_jsonl(self.path, self.records)

    def state_dict(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]

    def load_state_dict(self, records: list[dict[str, Any]]) -> None:
        self.records = [dict(r) for r in records]
        self.flush()


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines, atomically."""
    write_text_atomic(path, "".join(to_json(r) + "\n" for r in records))


def format_epoch_line(record: dict[str, Any], epochs: int) -> str:
    """``epoch 3/20  loss 0.4123  lr 1.0e-03  val_dice 0.8123  12.3 s``."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}", f"loss {record['train_loss']:.4f}", f"lr {record['lr']:.1e}"]
    for key, value in record.items():
        if key.startswith("val_") and isinstance(value, float) and not math.isnan(value):
            parts.append(f"{key} {value:.4f}")
    parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)


def log_epoch(record: dict[str, Any], epochs: int) -> None:
    logger.info(format_epoch_line(record, epochs))
