"""Registry of cell functions, chosen by a grid's ``defaults.kind``.

Each entry maps a kind to a ``"module:function"`` path imported on first use, so that a grid of one kind
never imports the libraries of another and so that spawned workers find the function by reference.

- ``finetune``: the real job (fine-tune on the target domain, predict and score its test cases; ``baseline``
  and ``oracle`` strategies as references), ``medtransfer.experiments.cells:run_finetune_cell``.
- ``teacher_student``: noisy-student rounds on the target's unlabelled cases after a finetune round
  (``medtransfer.experiments.cells_semi:run_teacher_student_cell``).
- ``classification``: an image-level target (lesion present per slice, or a metadata class) under any init
  strategy; accuracy, balanced accuracy, AUC (``medtransfer.experiments.cells_classify:run_classification_cell``).
- ``dummy``: a TEST / DRY-RUN kind that trains nothing: it sleeps ``dummy.sleep_s`` seconds, then writes
  made-up per-case metrics derived from the cell's config (deterministic per cell).  Use it to try a grid
  file, an executor or a cluster before spending compute; never report its numbers.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..utils import write_json_atomic

log = logging.getLogger(__name__)

CELL_KINDS: dict[str, str | Callable] = {
    "finetune": "medtransfer.experiments.cells:run_finetune_cell",
    "teacher_student": "medtransfer.experiments.cells_semi:run_teacher_student_cell",
    "classification": "medtransfer.experiments.cells_classify:run_classification_cell",
    "dummy": "medtransfer.experiments.kinds:run_dummy_cell",
}


DUMMY_KEYS = ("sleep_s", "n_cases", "fail", "crash", "level", "noise", "case_sd")  # the options of run_dummy_cell
_EXTRA_SECTIONS: dict[str, tuple[str, ...]] = {}


def register_cell_kind(name: str, function: str | Callable, *, sections: tuple[str, ...] = ()) -> None:
    """Register a cell function (a module-level callable or its ``"module:function"`` path) as ``name``.

    ``sections`` are the top-level config keys the function reads besides the built-in ones (grid files are
    checked against every key they may hold, see :mod:`medtransfer.experiments.config_keys`).
    """
    CELL_KINDS[name] = function
    _EXTRA_SECTIONS[name] = tuple(sections)


def extra_sections() -> list[str]:
    """The top-level config keys that registered (non built-in) cell kinds read."""
    return sorted({key for keys in _EXTRA_SECTIONS.values() for key in keys})


def list_cell_kinds() -> list[str]:
    """Names of the registered cell kinds."""
    return sorted(CELL_KINDS)


def get_cell_function(kind: str | None, *, where: str = "grid") -> Callable:
    """The cell function registered as ``kind``.

    Raises:
        ConfigError: ``kind`` is missing or unknown, or its module is not available in this installation.
    """
    if kind is None:
        raise ConfigError(f"{where}: set defaults.kind to the job each cell runs ({', '.join(list_cell_kinds())})")
    if kind not in CELL_KINDS:
        raise ConfigError(f"{where}: defaults.kind: {did_you_mean(str(kind), CELL_KINDS, what='cell kind')}")
    target = CELL_KINDS[kind]
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}: cell kind {kind!r} needs {target}, which is not available: {err}") from err


def run_dummy_cell(config: dict[str, Any], run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """The ``dummy`` TEST / DRY-RUN cell: made-up metrics, no training (see the module docstring).

    Options under ``config["dummy"]``: ``sleep_s`` (0), ``n_cases`` (4), ``fail`` (False: raise to test
    failure handling), ``crash`` (False: end the whole process at once with ``os._exit``, as a segfault or the
    out-of-memory killer would; only for testing worker pools), ``level`` (the cell's mean Dice; default a
    value in [0.5, 0.8) derived from the strategy; set it per arm with an override to plant an effect),
    ``noise`` (0.05: per-case standard deviation of the arm's own noise) and ``case_sd`` (0: standard deviation
    of a per-case difficulty shared by every arm of the same target and seed, so arms pair on cases).  It
    appends one line per attempt to ``attempts.log`` so tests can count attempts.
    """
    import numpy as np

    options = config.get("dummy") or {}
    with open(run_dir / "attempts.log", "a") as f:  # a partial output: an interrupted cell resumes
        f.write(f"{'resume' if resume else 'start'}\n")
    time.sleep(float(options.get("sleep_s", 0.0)))
    if options.get("crash"):
        os._exit(70)
    if options.get("fail"):
        raise RuntimeError(f"dummy cell {config.get('grid', {}).get('cell_id')} asked to fail (dummy.fail)")
    key = f"{config.get('target')}|{config.get('strategy')}|{config.get('source', {}).get('name')}"
    n_cases, seed = int(options.get("n_cases", 4)), int(config.get("seed", 0))
    rng = np.random.default_rng([zlib.crc32(key.encode()), seed])
    level = float(options.get("level", 0.5 + 0.3 * (zlib.crc32(str(config.get("strategy")).encode()) % 100) / 100))
    shared = np.random.default_rng([zlib.crc32(str(config.get("target")).encode()), seed, 1])
    difficulty = float(options.get("case_sd", 0.0)) * shared.standard_normal(n_cases)
    noise = float(options.get("noise", 0.05)) * rng.standard_normal(n_cases)
    dice = np.clip(level + difficulty + noise, 0.0, 1.0)
    per_case = [{"case": f"case{i:03d}", "dice": float(d)} for i, d in enumerate(dice)]
    write_json_atomic(run_dir / "metrics.json", {"per_case": per_case})
    return {"metrics": {"dice": float(dice.mean())}, "per_case": per_case, "dummy": True}
