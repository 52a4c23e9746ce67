"""``run_classification``: fine-tune for an image-level target (Transfusion's setting) and score the test cases.

The source model (a segmentation network, e.g. a grid-trained source) gets a classification head (global pooling
of the deepest features + a linear layer) and is trained on the labelled cases' slices under any registered
strategy (``mean_var``, ``hybrid_k:2``, ``full``, ``scratch``, ...), validating every epoch (the convergence
curve).  The test cases' slices are then classified and scored per case.  The cases come from the same
:func:`~medtransfer.finetune.select.select_cases` as segmentation runs.

Targets (:class:`ClassificationOptions`):

- ``lesion`` (default): per slice, "lesion present" (at least ``min_voxels`` foreground voxels in the slice);
  meant for the lesion datasets of brainshift (``Dataset003_MSLesion``, ``Dataset004_StrokeLesion``);
- ``metadata:<column>``: a case-level class from ``metadata.csv`` (e.g. ``metadata:cohort``, brainshift's MRI
  classification label), broadcast to every slice of the case; classes are the column's sorted values.

Run folder: ``config.yaml``, ``history.jsonl`` (per epoch: ``train_loss``, ``val_accuracy``,
``val_balanced_accuracy``, ``val_auc``), ``model.pt``, ``metrics_per_case.json`` and ``summary.json`` (written
last: metrics, per-case rows, history, strategy and the selected cases).  Per-case rows: ``accuracy``,
``balanced_accuracy``, ``auc`` (``None`` when a case has one class only), ``n_slices``, ``n_positive``.  Metrics
add the convergence speed: ``val_balanced_accuracy_auc`` (mean of the curve) and ``epochs_to_reach`` (first
epoch with validation balanced accuracy >= ``reach``; ``None`` if never).  More: docs/beyond.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.layouts import CaseDataset, load_dataset
from ..data.preprocess import PreprocessConfig
from ..errors import ConfigError, DataError
from ..train.batches import StepBatchSampler, TrainBatches
from ..train.config import TrainConfig
from ..train.history import write_jsonl
from ..train.rng import seed_everything
from ..transfer.apply import apply_strategy, check_strategy_task
from ..transfer.registry import Task
from ..utils import write_json_atomic, write_yaml_atomic
from .build import build_model, load_source
from .classification import (
    ClassificationLoss,
    ClassificationValidator,
    SliceClassificationDataset,
    area_under_curve,
    epochs_to_reach,
)
from .config import FinetuneConfig
from .data import common_slice_shape, prepare_cases
from .fit import fit
from .select import label_map, select_cases

log = logging.getLogger(__name__)

METRICS = ("accuracy", "balanced_accuracy", "auc")
SLICE_DIVISOR = 16
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ClassificationOptions:
    """The image-level target.

    Attributes:
        target: ``lesion`` or ``metadata:COLUMN``.
        min_voxels: foreground voxels a slice needs to count as "lesion present".
        reach: validation balanced accuracy that ``epochs_to_reach`` waits for.
    """

    target: str = "lesion"
    min_voxels: int = 1
    reach: float = 0.8

    def __post_init__(self) -> None:
        target = str(self.target)
        if target != "lesion" and not (target.startswith("metadata:") and target.partition(":")[2]):
            raise ConfigError(f"classification target must be 'lesion' or 'metadata:COLUMN', got {target!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, *, where: str) -> ClassificationOptions:
        unknown = sorted(set(values or {}) - set(cls.__dataclass_fields__))
        if unknown:
            allowed = tuple(cls.__dataclass_fields__)
            raise ConfigError(f"{where}: unknown classification option(s) {unknown}; allowed: {allowed}")
        try:
            return cls(**(values or {}))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err

    @property
    def column(self) -> str | None:
        """The metadata column of a ``metadata:COLUMN`` target (``None`` for lesions)."""
        return self.target.partition(":")[2] if self.target != "lesion" else None


def run_classification(
    config: FinetuneConfig, options: ClassificationOptions, *, max_test_cases: int | None = None
) -> Path:
    """Train and score a classification target as ``config`` says; writes the run folder (module doc), returns it.

    Raises:
        ConfigError / DataError: bad options, dataset, checkpoint or budget, a split without validation or test
            cases, or a strategy that cannot serve classification.
    """
    from ..checkpoint import save_checkpoint

    if config.every_kth_slice is not None:
        raise ConfigError("classification takes whole labelled scans (n_labelled), not every_kth_slice")
    check_strategy_task(config.strategy, Task.CLASSIFICATION)
    out = Path(config.out)
    dataset = load_dataset(config.data)
    selection = select_cases(config, dataset)
    val_ids = list(selection.val_ids)
    test_ids = selection.test_ids[:max_test_cases] if max_test_cases else selection.test_ids
    if not val_ids or not test_ids:
        raise ConfigError(
            f"{dataset.root}: the split of domain {config.target_domain!r} needs validation and test cases"
        )
    source = load_source(config)
    classes = target_classes(options, dataset)
    case_class = case_classes(options, dataset, classes)
    preprocess = PreprocessConfig.from_dict(config.preprocess)
    values = sorted(label_map(dataset).values())
    ids = [*selection.labelled_ids, *val_ids, *test_ids]
    prepared = {
        c.case_id: c for c in prepare_cases([dataset.get(c) for c in ids], preprocess, values, config.cache_dir)
    }
    train_ds, val_ds = (
        slice_dataset([prepared[c] for c in part], options, case_class, config.slice_axis)
        for part in (selection.labelled_ids, val_ids)
    )
    seed_everything(config.seed)  # the head (and any fresh stage) starts the same whatever ran before
    model, spec = build_model(config, source, dataset.num_channels, num_classes=max(len(classes), 2))
    train_cfg = TrainConfig.from_dict({**config.train, "progress": False, "val_every": 1, "seed": config.seed})
    applied = apply_strategy(config.strategy, model, source, seed=config.seed, task=Task.CLASSIFICATION)
    sampler = StepBatchSampler(len(train_ds), train_cfg.batch_size, train_cfg.steps_per_epoch, config.seed)
    fitted = fit(
        applied,
        model,
        train_cfg,
        TrainBatches(train_ds, sampler, 0),
        loss=ClassificationLoss(),
        validator=ClassificationValidator(val_ds),
    )
    history = [dict(r) for r in fitted.result.history]
    write_yaml_atomic(out / "config.yaml", {**config.to_dict(), "classification": asdict(options)})
    write_jsonl(out / "history.jsonl", history)
    save_checkpoint(out / "model.pt", {"model": spec, "state_dict": fitted.model.state_dict(), "meta": {}})
    rows = [score_case(fitted.model, prepared[c], options, case_class, config.slice_axis) for c in test_ids]
    metrics = _aggregate(rows)
    metrics["val_balanced_accuracy_auc"] = area_under_curve(history, "val_balanced_accuracy")
    metrics["epochs_to_reach"] = epochs_to_reach(history, "val_balanced_accuracy", float(options.reach))
    write_json_atomic(out / "metrics_per_case.json", {"per_case": rows, "metrics": metrics})
    summary = {"metrics": metrics, "per_case": rows, "history": history, "strategy": applied.description}
    write_json_atomic(out / SUMMARY, {"status": "done", **summary, **selection.to_dict(), "test_cases": test_ids})
    log.info("%s: %s", out, ", ".join(f"{k}={v}" for k, v in metrics.items()))
    return out


def target_classes(options: ClassificationOptions, dataset: CaseDataset) -> list[str]:
    """Class names: ``["absent", "present"]`` for lesions, else the sorted values of the metadata column."""
    if options.column is None:
        return ["absent", "present"]
    columns = sorted({str(k) for c in dataset.cases for k in (c.metadata or {})})
    if options.column not in columns:
        from ..errors import did_you_mean

        raise DataError(
            f"{dataset.root}: "
            + did_you_mean(options.column, columns, what="metadata column (--classify metadata:NAME)")
        )
    found = {
        str(c.metadata.get(options.column)) for c in dataset.cases if c.metadata.get(options.column) not in (None, "")
    }
    values = sorted(found)
    if len(values) < 2:
        raise DataError(
            f"{dataset.root}: metadata column {options.column!r} needs at least two classes, found {values}"
        )
    return values


def case_classes(options: ClassificationOptions, dataset: CaseDataset, classes: list[str]) -> dict[str, int] | None:
    """Case id -> class index for a ``metadata:<column>`` target (``None`` for lesion targets)."""
    if options.column is None:
        return None
    out = {}
    for case in dataset.cases:
        value = case.metadata.get(options.column)
        if value not in (None, ""):
            out[case.case_id] = classes.index(str(value))
    return out


def slice_dataset(cases, options: ClassificationOptions, case_class: dict[str, int] | None, axis: int):
    """The slices of ``cases`` with their targets, padded to one in-plane shape."""
    shape = common_slice_shape(cases, axis, SLICE_DIVISOR)
    targets = None
    if case_class is not None:
        missing = [c.case_id for c in cases if c.case_id not in case_class]
        if missing:
            raise DataError(f"cases {missing} have no value in metadata column {options.column!r}")
        targets = {c.case_id: [case_class[c.case_id]] * c.image.shape[axis + 1] for c in cases}
    return SliceClassificationDataset(cases, axis, shape, int(options.min_voxels), targets=targets)


def score_case(model, case, options: ClassificationOptions, case_class, axis: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy and AUC of one test case's slices."""
    import torch

    data = slice_dataset([case], options, case_class, axis)
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
