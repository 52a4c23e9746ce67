"""``medtransfer finetune --classify TARGET``: an image-level classification target (Transfusion's setting).

The run is the grid's ``classification`` cell (:mod:`medtransfer.experiments.cells_classify`) on one dataset
folder: the source checkpoint (or a fresh model) gets a classification head and is trained on the labelled
scans' slices with the chosen strategy; the held-out test scans are scored (accuracy, balanced accuracy, AUC)
and the per-epoch validation curve is kept for convergence comparisons.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FINETUNE_KEYS = ("model", "model_config", "train", "preprocess", "slice_axis", "split_seed", "val_fraction")


def classification_cell_config(config, target: str) -> dict[str, Any]:
    """The ``classification`` cell config equivalent to a :class:`FinetuneConfig` and a class ``target``."""
    data = Path(config.data)
    finetune = {key: getattr(config, key) for key in FINETUNE_KEYS}
    finetune |= {"test_fraction": config.test_fraction, "max_val_cases": config.max_val_cases}
    return {
        "kind": "classification",
        "target": "classification",
        "data": {"root": str(data.parent), "datasets": {"classification": data.name}},
        "source": {"name": "init", "checkpoint": config.init} if config.init else {"name": "none"},
        "strategy": config.strategy,
        "budget": {"n_labelled": config.n_labelled},
        "seed": config.seed,
        "domain": {"target": config.target_domain} if config.target_domain else {},
        "finetune": finetune,
        "classification": {"target": target},
        "grid": {"cell_id": str(config.out)},
    }


def run_classification(args: argparse.Namespace, config) -> int:
    """Train and score a classification target; writes config.yaml, history.jsonl, model.pt, summary.json."""
    from ..errors import ConfigError
    from ..experiments.cells_classify import run_classification_cell
    from ..utils import write_json_atomic, write_yaml_atomic

    if args.unlabelled is not None:
        raise ConfigError("--classify and --unlabelled cannot be combined (pseudo-labels are for segmentation)")
    if config.every_kth_slice is not None:
        raise ConfigError("--classify takes whole labelled scans (--n-labelled), not --every-kth-slice")
    cell = classification_cell_config(config, args.classify)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml_atomic(out / "config.yaml", cell)
    result = run_classification_cell(cell, out, resume=False)
    write_json_atomic(out / "summary.json", {"status": "done", **result})  # written last
    metrics = result["metrics"]
    print("  ".join(f"{key} {value:.4f}" for key, value in metrics.items() if isinstance(value, float)))
    print(out)
    return 0
