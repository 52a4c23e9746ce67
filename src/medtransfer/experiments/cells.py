"""The ``finetune`` cell kind: fine-tune a source model on the target domain, predict and score its test cases.

A grid cell (:mod:`medtransfer.experiments.spec`) becomes one :func:`~medtransfer.train.finetune.run_finetune`
run plus an evaluation on the held-out test subjects of the target domain.  Cell config keys read here::

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

import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..utils import write_json_atomic
from .sources import resolve_dataset, resolve_source

log = logging.getLogger(__name__)

REFERENCE_STRATEGIES = ("baseline", "oracle")
TRAIN_DIR = "train"


def run_finetune_cell(config: dict[str, Any], run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """The ``finetune`` cell function (runner protocol: returns metrics, per-case rows and history)."""
    from ..data.layouts import load_dataset

    run_dir = Path(run_dir)
    _set_threads(config)
    data = resolve_dataset(config)
    dataset = load_dataset(data)
    domain = (config.get("domain") or {}).get("target") or (config.get("finetune") or {}).get("target_domain")
    strategy = str(config.get("strategy") or "scratch")
    needs_source = strategy not in ("scratch", "oracle")  # these never load the source weights
    checkpoint = resolve_source(config, run_dir) if needs_source else None
    if strategy == "baseline":
        if checkpoint is None:
            raise ConfigError(f"cell {_cell_id(config)}: strategy 'baseline' needs a source model (source: none)")
        model_path, history = Path(checkpoint), []
    else:
        ft = finetune_config(config, data, domain, checkpoint, run_dir / TRAIN_DIR, dataset)
        from ..train.finetune import run_finetune

        model_path = run_finetune(ft, resume=resume)
        history = _read_history(model_path / "history.jsonl")
    from .evaluate_cell import evaluate_test_cases

    test_ids = held_out_case_ids(config, dataset, domain)
    rows = evaluate_test_cases(model_path, dataset, test_ids, run_dir, config.get("eval") or {})
    metrics = _aggregate(rows)
    write_json_atomic(run_dir / "metrics_per_case.json", {"per_case": rows, "metrics": metrics})
    log.info("cell %s: %s", _cell_id(config), ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return {"metrics": metrics, "per_case": rows, "history": history, "checkpoint": str(model_path)}


def finetune_config(
    config: dict[str, Any], data: str, domain: str | None, checkpoint: str | None, out: Path, dataset
) -> dict[str, Any]:
    """The :class:`~medtransfer.train.finetune_config.FinetuneConfig` mapping of a cell."""
    values = dict(config.get("finetune") or {})
    strategy = str(config.get("strategy") or "scratch")
    budget = dict(config.get("budget") or {"n_labelled": "all"})
    if strategy == "oracle":  # the target-domain model with every label, from scratch
        strategy, checkpoint, budget = "scratch", None, {"n_labelled": "all"}
    n = budget.get("n_labelled", "all")
    if n == "all":
        n = len(train_subjects(config, dataset, domain))
    values.update(
        data=data,
        out=str(out),
        init=checkpoint if strategy != "scratch" else None,
        strategy=strategy,
        target_domain=domain,
        n_labelled=int(n),
        every_kth_slice=budget.get("every_kth_slice"),
        seed=int(config.get("seed", 0)),
    )
    return values


def _split(config: dict[str, Any], dataset, domain: str | None):
    from ..data.splits import split_by_subject

    ft = config.get("finetune") or {}
    pool = [c for c in dataset.cases if domain is None or c.domain == domain]
    if not pool:
        domains = sorted({str(c.domain) for c in dataset.cases})
        raise ConfigError(f"{dataset.root}: no case of domain {domain!r}; domains: {domains}")
    return pool, split_by_subject(
        pool,
        test_fraction=float(ft.get("test_fraction", 0.2)),
        val_fraction=float(ft.get("val_fraction", 0.2)),
        seed=int(ft.get("split_seed", 0)),
    )


def train_subjects(config: dict[str, Any], dataset, domain: str | None) -> list[str]:
    """Distinct subjects of the training part of the target-domain split (what ``n_labelled: all`` means)."""
    _, split = _split(config, dataset, domain)
    return sorted({dataset.get(c).subject for c in split.train})


def held_out_case_ids(config: dict[str, Any], dataset, domain: str | None) -> list[str]:
    """The held-out test cases of the target domain (the same split run_finetune makes), capped by eval."""
    _, split = _split(config, dataset, domain)
    limit = (config.get("eval") or {}).get("max_test_cases")
    ids = list(split.test)
    if not ids:
        raise ConfigError(f"{dataset.root}: the split of domain {domain!r} has no test case; lower test_fraction")
    return ids[: int(limit)] if limit else ids


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    import math

    keys = [k for k in ("dice", "iou", "surface_dice", "lesion_detection_rate") if any(k in r for r in rows)]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in rows if key in r and r[key] is not None and math.isfinite(float(r[key]))]
        if values:
            out[key] = sum(values) / len(values)
    return out


def _read_history(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _set_threads(config: dict[str, Any]) -> None:
    """Intra-op threads of this cell: ``threads``, else ``resources.num_cpus`` (unset: torch's default).

    Several cells sharing a machine must not each spin up every core's worth of threads: on an oversubscribed
    CPU that makes a training step 10-100x slower.
    """
    threads = config.get("threads") or (config.get("resources") or {}).get("num_cpus")
    if threads:
        import torch

        torch.set_num_threads(max(int(threads), 1))


def _cell_id(config: dict[str, Any]) -> str:
    return str((config.get("grid") or {}).get("cell_id", "?"))
