"""The ``classification`` cell kind: an image-level target (Transfusion's setting) as a grid arm.

A cell becomes one :func:`medtransfer.finetune.run_classification` run (its folder: ``train/`` of the cell)
on the cell's cases: the source model gets a classification head and is trained on the labelled cases' slices
under any registered strategy, validating every epoch (the convergence curve); the test cases that run held out
(capped by ``eval.max_test_cases``) are scored per case.  Targets and metrics: :mod:`medtransfer.finetune.classify`.

Cell config keys: those of the ``finetune`` cell (``target``, ``source``, ``strategy``, ``budget``, ``seed``,
``domain``, ``data``, ``finetune`` for the model, preprocessing and ``train`` options) plus::

    classification: {target: lesion, min_voxels: 1, reach: 0.8}

Run folder: ``train/`` (the classification run: ``history.jsonl``, ``model.pt``, ``summary.json``, ...) and
``metrics_per_case.json``.  The report compares the per-case rows with
``medtransfer report RESULTS --metric balanced_accuracy`` (or ``accuracy`` / ``auc``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..utils import write_json_atomic
from .cells import SUMMARY, TRAIN_DIR, cell_id, finetune_config, set_threads, target_domain
from .sources import resolve_dataset, resolve_source

log = logging.getLogger(__name__)


def run_classification_cell(config: dict[str, Any], run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """The ``classification`` cell function (runner protocol: returns metrics, per-case rows and history)."""
    from ..finetune import ClassificationOptions, run_classification

    run_dir = Path(run_dir)
    options = ClassificationOptions.from_dict(config.get("classification"), where=f"cell {cell_id(config)}")
    set_threads(config)
    data = resolve_dataset(config)
    strategy = str(config.get("strategy") or "scratch")
    checkpoint = resolve_source(config, run_dir) if strategy != "scratch" else None
    ft = finetune_config(config, data, target_domain(config), checkpoint, run_dir / TRAIN_DIR)
    limit = (config.get("eval") or {}).get("max_test_cases")
    out = run_classification(ft, options, max_test_cases=int(limit) if limit else None)
    summary = json.loads((out / SUMMARY).read_text())
    metrics, rows = summary["metrics"], summary["per_case"]
    write_json_atomic(run_dir / "metrics_per_case.json", {"per_case": rows, "metrics": metrics})
    log.info("cell %s: %s", cell_id(config), ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return {"metrics": metrics, "per_case": rows, "history": summary["history"], "strategy": summary["strategy"]}
