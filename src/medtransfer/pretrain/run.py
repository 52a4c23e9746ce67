"""``run_pretrain``: train one source model and write its checkpoint with the metadata finetune and report need.

This module (with :mod:`.multi_run`, :mod:`.imports` and :mod:`.zoo`) is the orchestration top of ``pretrain``
and drives :class:`medtransfer.train.Trainer` (losses, optimisers, schedules, resumable ``last`` checkpoints):
pretraining resumes exactly like fine-tuning.  The rest of the package (corruptions, sources, datasets, the
multi-head model) imports nothing from ``train``.

Files::

    OUT                      the source checkpoint (medtransfer.checkpoint format): model spec, weights, meta
    OUT.run/checkpoint_last.pt   resumable trainer state (every ``checkpoint_every_steps`` and epoch end)
    OUT.run/history.jsonl    one line per epoch: train loss and the held-out source metrics
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import ConfigError
from ..models import create_model
from ..train import CheckpointManager, MetricsHistory, StepBatchSampler, TrainBatches, TrainConfig, Trainer
from ..train.losses import create_loss
from ..train.resume import check_same_options
from ..train.rng import seed_everything
from .config import PretrainConfig
from .datasets import ClassificationDataset, RestorationDataset, RotationDataset, SegmentationDataset
from .evaluation import (
    AccuracyValidator,
    RestorationLoss,
    RestorationValidator,
    SegmentationValidator,
    batches,
)
from .options import SourceTask
from .sources import SourceData, load_source

log = logging.getLogger(__name__)
CHECKPOINT_KIND = "medtransfer.source"
HELDOUT_LOSS_ITEMS = 64


def run_dir(out: str | Path) -> Path:
    """Folder of the resumable state of the run writing ``out``."""
    out = Path(out)
    return out.parent / f"{out.name}.run"


def run_pretrain(
    config: PretrainConfig | dict[str, Any], *, resume: bool = False, source: SourceData | None = None
) -> Path:
    """Pretrain as ``config`` says and write the source checkpoint; returns its path.

    With ``resume``, a finished run (checkpoint present) is returned as is and an interrupted one continues from
    ``OUT.run/checkpoint_last.pt``.  ``source`` replaces the task's source data (in-memory data, tests).

    Raises:
        ConfigError / DataError: bad options or source data (the message names the problem).
    """
    config = config if isinstance(config, PretrainConfig) else PretrainConfig.from_dict(config)
    out = Path(config.out)
    if resume and _finished(out, config):
        log.info("%s: already finished", out)
        return out
    if resume:
        _check_interrupted(out, config)
    if config.task is SourceTask.IMPORT:
        from .imports import import_weights

        return import_weights(config)
    if config.task is SourceTask.MULTI:
        from .multi_run import run_multi

        return run_multi(config, resume=resume)
    seed_everything(config.seed)
    if source is None:
        source = load_source(
            config.task,
            config.domain,
            config.data,
            size=config.size,
            count=config.count,
            seed=config.seed,
            domains=config.domains,
        )
    train_src, val_src = source.split(config.val_fraction, config.seed)
    parts = task_parts(config, train_src, val_src, num_classes=max(len(source.class_names), _num_classes(source)))
    model = create_model(config.model, **parts["model_config"])
    spec = {"name": model.model_name, "config": dict(model.model_config)}
    meta = source_meta(config, spec, model.stage_names(), source)
    train_cfg = TrainConfig.from_dict(config.train_values(parts["loss_name"]))
    start = time.perf_counter()
    loss_start = heldout_loss(model, parts["loss"], parts["val"])  # seeded init: the same value on resume
    trainer = Trainer(
        model,
        train_cfg,
        TrainBatches(
            parts["train"],
            StepBatchSampler(len(parts["train"]), train_cfg.batch_size, train_cfg.steps_per_epoch, config.seed),
        ),
        loss=parts["loss"],
        validator=parts["validator"],
        checkpoints=CheckpointManager(run_dir(out), spec, meta),
        history=MetricsHistory(run_dir(out) / "history.jsonl"),
        spatial_dims=int(spec["config"].get("spatial_dims", 2)),
    )
    result = trainer.fit(resume=resume)
    metrics = final_metrics(result.history, loss_start, heldout_loss(model, parts["loss"], parts["val"]))
    meta.update(steps=result.global_step, epochs=len(result.history), metrics=metrics, history=result.history)
    meta["seconds"] = time.perf_counter() - start
    save_checkpoint(out, {"model": spec, "state_dict": _cpu_state(model), "meta": meta})
    log.info("wrote %s: %s", out, _metrics_line(metrics))
    return out


def step_sampler(dataset: Dataset, train_cfg: TrainConfig) -> StepBatchSampler:
    """The trainer's resumable sampler over ``dataset``."""
    return StepBatchSampler(len(dataset), train_cfg.batch_size, train_cfg.steps_per_epoch, train_cfg.seed)


def _check_interrupted(out: Path, config: PretrainConfig) -> None:
    """An interrupted run (``OUT.run/checkpoint_last.pt``) continues only with the options it was started with.

    Raises:
        ConfigError: each changed option with its old and new value.
    """
    last = run_dir(out) / "checkpoint_last.pt"
    if not last.is_file():
        return
    meta = load_checkpoint(last).get("meta") or {}
    check_same_options(
        f"{out} was being pretrained",
        meta.get("pretrain_config") or {},
        config.to_dict(),
        f"resume it with the same options, or delete {run_dir(out)} to start again",
    )


def _finished(out: Path, config: PretrainConfig) -> bool:
    """Whether ``out`` is a finished source checkpoint of ``config``.

    Raises:
        ConfigError: ``out`` was pretrained with other options; returning it would hand back weights that do
            not match what was asked for.
    """
    if not out.is_file():
        return False
    meta = load_checkpoint(out).get("meta") or {}
    if meta.get("kind") != CHECKPOINT_KIND or "metrics" not in meta:
        raise ConfigError(
            f"{out}: exists and is not a finished pretrain checkpoint; --resume never replaces it: give another --out"
        )
    check_same_options(
        f"{out} was pretrained",
        meta.get("pretrain_config") or {},
        config.to_dict(),
        f"delete it and {run_dir(out)} to pretrain again, or choose another --out",
    )
    return True


def _num_classes(source: SourceData) -> int:
    return int(source.labels.max()) + 1 if source.labels is not None and source.labels.size else 0


def task_parts(config: PretrainConfig, train: SourceData, val: SourceData, num_classes: int) -> dict[str, Any]:
    """Model config, datasets, loss and validator of a single-dataset source task."""
    base = config.architecture_config()
    seed = config.seed
    if config.task is SourceTask.CLASSIFICATION:
        return {
            "model_config": {**base, "head": "classification", "num_classes": num_classes},
            "train": ClassificationDataset(train),
            "val": ClassificationDataset(val),
            "loss_name": "ce",
            "loss": create_loss("ce"),
            "validator": AccuracyValidator(ClassificationDataset(val), num_classes),
        }
    if config.task is SourceTask.ROTATION:
        val_set = RotationDataset(val, fixed=True, seed=seed)
        return {
            "model_config": {**base, "head": "classification", "num_classes": RotationDataset.num_classes},
            "train": RotationDataset(train),
            "val": val_set,
            "loss_name": "ce",
            "loss": create_loss("ce"),
            "validator": AccuracyValidator(val_set, RotationDataset.num_classes),
        }
    if config.task is SourceTask.SEGMENTATION:
        return {
            "model_config": {**base, "head": "segmentation", "out_channels": num_classes},
            "train": SegmentationDataset(train, augment=True),
            "val": SegmentationDataset(val),
            "loss_name": "dice_ce",
            "loss": create_loss("dice_ce"),
            "validator": SegmentationValidator(SegmentationDataset(val), num_classes),
        }
    if config.task is SourceTask.RESTORATION:
        val_set = RestorationDataset(val, fixed=True, seed=seed)
        return {
            "model_config": {**base, "head": "restoration"},
            "train": RestorationDataset(train),
            "val": val_set,
            "loss_name": config.restoration_loss,  # recorded; the loss module itself is passed to the trainer
            "loss": RestorationLoss(config.restoration_loss),
            "validator": RestorationValidator(val_set),
        }
    raise ConfigError(f"task {config.task.value!r} is not a single-dataset source task")


@torch.no_grad()
def heldout_loss(model: nn.Module, loss: nn.Module, dataset: Dataset, items: int = HELDOUT_LOSS_ITEMS) -> float:
    """The loss of ``model`` (eval mode, float32) on the first ``items`` held-out items."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    subset = torch.utils.data.Subset(dataset, range(min(items, len(dataset))))
    for batch in batches(subset, 32):
        value = loss(model(batch["image"].to(device)).float(), batch["label"].to(device))
        total, count = total + float(value) * len(batch["image"]), count + len(batch["image"])
    model.train(was_training)
    return total / max(count, 1)


def final_metrics(history: list[dict[str, Any]], loss_start: float, loss_end: float) -> dict[str, float]:
    """Held-out loss before/after training plus the last epoch's ``val_*`` metrics (prefix dropped)."""
    last = history[-1] if history else {}
    metrics = {k[4:]: float(v) for k, v in last.items() if k.startswith("val_")}
    metrics.update(
        loss_start=float(loss_start), loss_end=float(loss_end), train_loss=float(last.get("train_loss", "nan"))
    )
    return metrics


def source_meta(config: PretrainConfig, spec: dict, stage_names: list[str], source: SourceData | None) -> dict:
    """The provenance stored in a source checkpoint (read by finetune, report and ``medtransfer pretrain``)."""
    return {
        "kind": CHECKPOINT_KIND,
        "source_task": config.task.value,
        "source_domain": config.domain.value,
        "architecture": spec,
        "stage_names": stage_names,
        "transfers": "encoder" if config.task is SourceTask.MULTI else "all matching tensors",
        "data": dict(source.description) if source is not None else {},
        "class_names": list(source.class_names) if source is not None else [],
        "pretrain_config": config.to_dict(),
        "seed": config.seed,
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
