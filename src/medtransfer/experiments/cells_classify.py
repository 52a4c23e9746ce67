"""The ``classification`` cell kind: an image-level target (Transfusion's setting) as a grid arm.

The source model (a segmentation network, e.g. a grid-trained source) gets a classification head (global
pooling of the deepest features + a linear layer) and is trained on the labelled cases' slices under any
registered strategy (``mean_var``, ``hybrid_k:2``, ``full``, ``scratch``, ...) with
:func:`medtransfer.train.classification.train_classification`, validating every epoch (the convergence
curve).  The test cases' slices are then classified and scored per case.

Targets (``classification.target``):

- ``lesion`` (default): per slice, "lesion present" (at least ``min_voxels`` foreground voxels in the slice);
  meant for the lesion datasets of brainshift (``Dataset003_MSLesion``, ``Dataset004_StrokeLesion``);
- ``metadata:<column>``: a case-level class from ``metadata.csv`` (e.g. ``metadata:cohort``, brainshift's MRI
  classification label), broadcast to every slice of the case; classes are the column's sorted values.

Cell config keys: those of the ``finetune`` cell (``target``, ``source``, ``strategy``, ``budget``, ``seed``,
``domain``, ``data``, ``finetune`` for the model, preprocessing and ``train`` options) plus::

    classification: {target: lesion, min_voxels: 1, reach: 0.8}

Run folder: ``history.jsonl`` (per epoch: ``train_loss``, ``val_accuracy``, ``val_balanced_accuracy``,
``val_auc``), ``model.pt``, ``metrics_per_case.json``.  Per-case rows: ``accuracy``, ``balanced_accuracy``,
``auc`` (``None`` when a case has one class only), ``n_slices``, ``n_positive``; the report compares them with
``medtransfer report RESULTS --metric balanced_accuracy`` (or ``accuracy`` / ``auc``).  Cell metrics add the
convergence speed: ``val_balanced_accuracy_auc`` (mean of the curve) and ``epochs_to_reach`` (first epoch with
validation balanced accuracy >= ``reach``; ``None`` if never).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..utils import write_json_atomic
from .cells import _cell_id, _set_threads, _split
from .sources import resolve_dataset, resolve_source

log = logging.getLogger(__name__)

OPTION_KEYS = ("target", "min_voxels", "reach")
METRICS = ("accuracy", "balanced_accuracy", "auc")


def run_classification_cell(config: dict[str, Any], run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """The ``classification`` cell function (runner protocol: returns metrics, per-case rows and history)."""
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data.layouts import load_dataset
    from ..train.classification import area_under_curve, epochs_to_reach, train_classification
    from ..train.config import TrainConfig

    run_dir = Path(run_dir)
    options = _options(config)
    _set_threads(config)
    dataset = load_dataset(resolve_dataset(config))
    domain = (config.get("domain") or {}).get("target") or (config.get("finetune") or {}).get("target_domain")
    strategy = str(config.get("strategy") or "scratch")
    checkpoint = resolve_source(config, run_dir) if strategy != "scratch" else None
    source = load_checkpoint(checkpoint) if checkpoint else None
    ft = config.get("finetune") or {}
    labelled, val_ids, test_ids = _cases(config, dataset, domain)
    classes = _classes(options["target"], dataset)
    options["case_class"] = _case_classes(options["target"], dataset, classes)
    prepared = _prepare(dataset, [*labelled, *val_ids, *test_ids], ft)
    train_ds, val_ds = (_slices([prepared[c] for c in ids], options, classes, ft) for ids in (labelled, val_ids))
    model, spec = _model(source, ft, dataset.num_channels, max(len(classes), 2))
    train_cfg = TrainConfig.from_dict({**(ft.get("train") or {}), "progress": False})
    run = train_classification(model, strategy, source, train_ds, val_ds, train_cfg, seed=int(config.get("seed", 0)))
    history = [dict(r) for r in run.history]
    _write_jsonl(run_dir / "history.jsonl", history)
    save_checkpoint(run_dir / "model.pt", {"model": spec, "state_dict": run.model.state_dict(), "meta": {}})
    rows = [_score_case(run.model, prepared[c], options, classes, ft) for c in test_ids]
    metrics = _aggregate(rows)
    metrics["val_balanced_accuracy_auc"] = area_under_curve(history, "val_balanced_accuracy")
    metrics["epochs_to_reach"] = epochs_to_reach(history, "val_balanced_accuracy", float(options["reach"]))
    write_json_atomic(run_dir / "metrics_per_case.json", {"per_case": rows, "metrics": metrics})
    log.info("cell %s: %s", _cell_id(config), ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return {"metrics": metrics, "per_case": rows, "history": history, "strategy": run.strategy}


def _options(config: dict[str, Any]) -> dict[str, Any]:
    options = {"target": "lesion", "min_voxels": 1, "reach": 0.8, **(config.get("classification") or {})}
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"cell {_cell_id(config)}: unknown classification option(s) {unknown}; allowed: {OPTION_KEYS}"
        )
    target = str(options["target"])
    if target != "lesion" and not (target.startswith("metadata:") and target.partition(":")[2]):
        raise ConfigError(f"cell {_cell_id(config)}: classification.target must be 'lesion' or 'metadata:COLUMN'")
    return options


def _cases(config: dict[str, Any], dataset, domain: str | None) -> tuple[list[str], list[str], list[str]]:
    """Labelled (the budget's scans), validation and test case ids of the target-domain split."""
    from ..data.splits import n_scans_budget

    ft = config.get("finetune") or {}
    _, split = _split(config, dataset, domain)
    train_pool = [dataset.get(c) for c in split.train]
    n = (config.get("budget") or {}).get("n_labelled", "all")
    n = len({c.subject for c in train_pool}) if n == "all" else int(n)
    labelled = list(n_scans_budget(train_pool, n, seed=int(config.get("seed", 0))).cases)
    val = list(split.val)[: int(ft.get("max_val_cases", len(split.val)) or len(split.val))]
    limit = (config.get("eval") or {}).get("max_test_cases")
    test = list(split.test)[: int(limit)] if limit else list(split.test)
    if not val or not test:
        raise ConfigError(f"{dataset.root}: the split of domain {domain!r} needs validation and test cases")
    return labelled, val, test


def _classes(target: str, dataset) -> list[str]:
    """Class names: ``["absent", "present"]`` for lesions, else the sorted values of the metadata column."""
    if target == "lesion":
        return ["absent", "present"]
    column = target.partition(":")[2]
    values = sorted({str(c.metadata.get(column)) for c in dataset.cases if c.metadata.get(column) not in (None, "")})
    if len(values) < 2:
        raise DataError(f"{dataset.root}: metadata column {column!r} needs at least two classes, found {values}")
    return values


def _case_classes(target: str, dataset, classes: list[str]) -> dict[str, int] | None:
    """Case id -> class index for a ``metadata:<column>`` target (``None`` for lesion targets)."""
    if target == "lesion":
        return None
    column = target.partition(":")[2]
    out = {}
    for case in dataset.cases:
        value = case.metadata.get(column)
        if value not in (None, ""):
            out[case.case_id] = classes.index(str(value))
    return out


def _prepare(dataset, case_ids: list[str], ft: dict[str, Any]) -> dict[str, Any]:
    from ..data.preprocess import PreprocessConfig
    from ..train.finetune import _label_map
    from ..train.finetune_data import prepare_cases

    values = sorted(_label_map(dataset).values())
    cases = prepare_cases(
        [dataset.get(c) for c in case_ids], PreprocessConfig.from_dict(ft.get("preprocess") or {}), values
    )
    return {c.case_id: c for c in cases}


def _slices(cases, options: dict[str, Any], classes: list[str], ft: dict[str, Any], shape=None):
    from ..train.classification import SliceClassificationDataset
    from ..train.finetune_data import common_slice_shape

    axis = int(ft.get("slice_axis", 2))
    shape = shape or common_slice_shape(cases, axis, 16)
    targets = None
    if options.get("case_class") is not None:
        missing = [c.case_id for c in cases if c.case_id not in options["case_class"]]
        if missing:
            raise DataError(f"cases {missing} have no value in metadata column {options['target'].partition(':')[2]!r}")
        targets = {c.case_id: [options["case_class"][c.case_id]] * c.image.shape[axis + 1] for c in cases}
    return SliceClassificationDataset(cases, axis, shape, int(options["min_voxels"]), targets=targets)


def _model(source: dict[str, Any] | None, ft: dict[str, Any], in_channels: int, num_classes: int):
    from ..models import create_model

    spec = (source or {}).get("model") or {}
    name = spec.get("name") or ft.get("model", "unet")
    drop = ("num_classes", "head", "out_channels")
    cfg = {k: v for k, v in (spec.get("config") or {}).items() if k not in drop}
    cfg.update({k: v for k, v in (ft.get("model_config") or {}).items() if k not in drop})
    cfg.update(in_channels=in_channels, head="classification", num_classes=num_classes)
    model = create_model(name, **cfg)
    return model, {"name": getattr(model, "model_name", name), "config": dict(getattr(model, "model_config", cfg))}


def _score_case(model, case, options: dict[str, Any], classes: list[str], ft: dict[str, Any]) -> dict[str, Any]:
    """Accuracy, balanced accuracy and AUC of one test case's slices."""
    import torch

    from ..train.classification import ClassificationValidator

    data = _slices([case], options, classes, ft)
    model.eval()
    with torch.no_grad():
        result = ClassificationValidator(data)(lambda batch: model(batch["image"]))
    targets = np.concatenate(data.targets)
    row = {"case": case.case_id, **{k: _finite(result.get(k)) for k in METRICS}}
    return row | {"n_slices": int(targets.size), "n_positive": int((targets > 0).sum())}


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for key in METRICS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
    return out


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    import json

    from ..utils import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)
