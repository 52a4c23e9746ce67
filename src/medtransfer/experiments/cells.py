"""The ``finetune`` cell kind: fine-tune a source model on the target domain, predict and score its test cases.

A grid cell (:mod:`medtransfer.experiments.spec`) becomes one :func:`~medtransfer.finetune.run_finetune` run
plus an evaluation on exactly the test cases that run held out (its ``summary.json``'s ``test_cases``, capped by
``eval.max_test_cases``).  Cell config keys read here::

    target: brain                      # a key of data.datasets (or a dataset folder under data.root)
    source: {name, checkpoint}         # checkpoint path, a name listed under `sources:`, or none (scratch)
    strategy: full | first_k:1 | ... | baseline | oracle
    budget: {n_labelled: 3 | all, every_kth_slice: 8}
    seed: 0
    domain: {source: siemens_3t, target: ge_15t}     # optional domain pair (train/test on domain.target)
    data: {root: DIR, datasets: {brain: Dataset001_BrainExtraction}}
    finetune: {...}                    # FinetuneConfig keys: model, model_config, train, preprocess, split_seed, ...
    sources: {src: {domain: "{source_domain}", finetune: {...}}}   # source models trained once, cached
    eval: {max_test_cases: 8, tolerance_mm: 1.0, save_cases: 2, lesions: auto, checkpoint: last}
    resources: {num_cpus: 1}           # also the cell's torch threads (or set `threads`)

Two strategy names are references for the report rather than transfer strategies:

- ``baseline``: the source model applied to the target test cases as it is (no training at all);
- ``oracle``: trained from scratch on the target domain with every training subject labelled.

Run folder of a cell: ``train/`` (run_finetune's own run folder; absent for ``baseline``), ``predictions/``,
``reference/`` and ``images/`` for the first ``eval.save_cases`` test cases (the report's overlays), and
``metrics_per_case.json``.  The per-case rows carry ``dice``, ``iou``, ``surface_dice`` (at ``tolerance_mm``,
on the benchmark's 1 mm reference when it provides one, else on the working grid) and, for lesion targets,
``lesion_detection_rate`` with the lesion counts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..utils import write_json_atomic
from .sources import resolve_dataset, resolve_source

log = logging.getLogger(__name__)

TRAIN_DIR = "train"
SUMMARY = "summary.json"


def run_finetune_cell(config: dict[str, Any], run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """The ``finetune`` cell function (runner protocol: returns metrics, per-case rows and history)."""
    from ..data.layouts import load_dataset
    from ..finetune import run_finetune, select_cases

    run_dir = Path(run_dir)
    set_threads(config)
    data = resolve_dataset(config)
    dataset = load_dataset(data)
    domain = target_domain(config)
    strategy = str(config.get("strategy") or "scratch")
    needs_source = strategy not in ("scratch", "oracle")  # these never load the source weights
    checkpoint = resolve_source(config, run_dir) if needs_source else None
    ft = finetune_config(config, data, domain, checkpoint, run_dir / TRAIN_DIR)
    if strategy == "baseline":  # nothing is trained: the cases the run would hold out
        if checkpoint is None:
            raise ConfigError(f"cell {cell_id(config)}: strategy 'baseline' needs a source model (source: none)")
        model_path, history, held_out = Path(checkpoint), [], select_cases(ft, dataset).test_ids
    else:
        model_path = run_finetune(ft, resume=resume)
        history = read_history(model_path / "history.jsonl")
        held_out = json.loads((model_path / SUMMARY).read_text())["test_cases"]
    from .evaluate_cell import evaluate_test_cases

    test_ids = capped_test_ids(config, held_out, dataset, domain)
    rows = evaluate_test_cases(model_path, dataset, test_ids, run_dir, config.get("eval") or {})
    metrics = aggregate(rows)
    write_json_atomic(run_dir / "metrics_per_case.json", {"per_case": rows, "metrics": metrics})
    log.info("cell %s: %s", cell_id(config), ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return {"metrics": metrics, "per_case": rows, "history": history, "checkpoint": str(model_path)}


def target_domain(config: dict[str, Any]) -> str | None:
    """The cell's target domain: ``domain.target``, else ``finetune.target_domain``."""
    return (config.get("domain") or {}).get("target") or (config.get("finetune") or {}).get("target_domain")


def finetune_config(config: dict[str, Any], data: str, domain: str | None, checkpoint: str | None, out: Path):
    """The :class:`~medtransfer.finetune.FinetuneConfig` of a cell (``oracle``: from scratch, every label)."""
    from ..finetune import FinetuneConfig

    if str(config.get("strategy") or "scratch") == "oracle":  # the target-domain model with every label
        config = {**config, "strategy": "scratch", "budget": {"n_labelled": "all"}}
    return FinetuneConfig.from_cell(config, data=data, domain=domain, init=checkpoint, out=out)


def capped_test_ids(config: dict[str, Any], held_out: list[str], dataset, domain: str | None) -> list[str]:
    """The run's held-out test cases, capped by ``eval.max_test_cases``."""
    if not held_out:
        raise ConfigError(f"{dataset.root}: the split of domain {domain!r} has no test case; lower test_fraction")
    limit = (config.get("eval") or {}).get("max_test_cases")
    return list(held_out)[: int(limit)] if limit else list(held_out)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    import math

    keys = [k for k in ("dice", "iou", "surface_dice", "lesion_detection_rate") if any(k in r for r in rows)]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in rows if key in r and r[key] is not None and math.isfinite(float(r[key]))]
        if values:
            out[key] = sum(values) / len(values)
    return out


def read_history(path: Path) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` (empty when absent)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def set_threads(config: dict[str, Any]) -> None:
    """Intra-op threads of this cell: ``threads``, else ``resources.num_cpus`` (unset: torch's default).

    Several cells sharing a machine must not each spin up every core's worth of threads: on an oversubscribed
    CPU that makes a training step 10-100x slower.
    """
    threads = config.get("threads") or (config.get("resources") or {}).get("num_cpus")
    if threads:
        import torch

        torch.set_num_threads(max(int(threads), 1))


def cell_id(config: dict[str, Any]) -> str:
    return str((config.get("grid") or {}).get("cell_id", "?"))
