"""``run_finetune``: one fine-tuning run from a source checkpoint, a strategy and a label budget to a run folder.

Run folder (DESIGN.md)::

    RUN/config.yaml          resolved FinetuneConfig (train and preprocess sections fully resolved)
    RUN/env.json             versions, git commit, device, seed
    RUN/checkpoints/         checkpoint_best.pt, checkpoint_last.pt (meta: strategy plan, load audit, ...)
    RUN/history.jsonl        one line per epoch
    RUN/summary.json         written last, atomically: the run is done exactly when it exists
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..checkpoint import load_checkpoint
from ..data.layouts import CaseDataset, load_dataset
from ..data.preprocess import PreprocessConfig
from ..data.splits import Split, every_kth_slice_budget, n_scans_budget, split_by_subject
from ..errors import ConfigError, DataError
from ..utils import write_json_atomic, write_yaml_atomic
from .augment import create_augment
from .batches import StepBatchSampler, TrainBatches
from .checkpointing import CheckpointManager
from .config import TrainConfig
from .distributed import barrier, init_distributed
from .finetune_config import FinetuneConfig
from .finetune_data import PatchDataset, SliceDataset, common_slice_shape, prepare_cases
from .finetune_strategy import apply_strategy
from .history import MetricsHistory
from .losses import create_loss
from .rng import seed_everything
from .run_env import environment
from .trainer import Trainer
from .validation import DiceValidator

logger = logging.getLogger(__name__)

SUMMARY = "summary.json"


def run_finetune(config: FinetuneConfig | dict[str, Any], *, resume: bool = False) -> Path:
    """Fine-tune as ``config`` says and write the run folder; returns it.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the run is data-parallel: every rank trains on its share of each
    batch and rank 0 writes the run folder.  With ``resume`` a finished run (``summary.json`` present) is returned
    as is and an interrupted one continues from its last checkpoint.

    Raises:
        ConfigError / DataError: bad options, dataset, checkpoint or budget (message names the problem).
    """
    config = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    out = Path(config.out)
    if resume and (out / SUMMARY).is_file():
        logger.info("%s: already finished", out)
        return out
    start = time.perf_counter()
    dataset = load_dataset(config.data)
    labels = _label_map(dataset)
    preprocess = PreprocessConfig.from_dict(config.preprocess)
    ctx = init_distributed()  # a no-op unless started by torchrun with WORLD_SIZE > 1
    seed_everything(config.seed)
    model, spec, pretrained = build_model(config, dataset.num_channels, len(labels))
    spatial_dims = int(spec["config"].get("spatial_dims", 2))
    train_cfg = _train_config(config, len(labels))
    split, budget, train_cases, val_cases = _select(config, dataset, preprocess, labels)
    strategy = apply_strategy(config.strategy, model, pretrained, seed=config.seed)
    model = strategy.model if strategy.model is not None else model
    if ctx.is_main:
        resolved = {**config.to_dict(), "train": train_cfg.to_dict(), "preprocess": preprocess.to_dict()}
        write_yaml_atomic(out / "config.yaml", resolved)
        env = environment(train_cfg.device, config.seed, str(train_cfg.precision)) | {"world_size": ctx.world_size}
        write_json_atomic(out / "env.json", env)
    divisor = _divisor(spec)
    train_data, val_data = _datasets(config, train_cfg, spatial_dims, train_cases, val_cases, budget, divisor)
    meta = {
        "labels": labels,
        "preprocess": inference_preprocess(preprocess, train_cases).to_dict(),
        "inference": {"slice_axis": config.slice_axis, "divisor": divisor}
        | ({"patch_size": list(config.patch_size)} if spatial_dims == 3 else {}),
        "strategy": strategy.description,
        "load_audit": strategy.audit,
        "init": config.init,
        "target_domain": config.target_domain,
        "split": split.to_dict(),
        "budget": budget.to_dict(),
        "seed": config.seed,
    }
    trainer = Trainer(
        model,
        train_cfg,
        TrainBatches(
            train_data,
            StepBatchSampler(
                len(train_data), train_cfg.batch_size, train_cfg.steps_per_epoch, config.seed, ctx.rank, ctx.world_size
            ),
            train_cfg.num_workers,
        ),
        param_groups=strategy.param_groups,
        loss=strategy.wrap_loss(create_loss(train_cfg.loss)) if strategy.wrap_loss else None,
        validator=DiceValidator(val_data, num_classes=max(len(labels) - 1, 1)) if val_data is not None else None,
        checkpoints=CheckpointManager(out / "checkpoints", spec, meta),
        history=MetricsHistory(out / "history.jsonl"),
        epoch_start_hooks=strategy.hooks,
        spatial_dims=spatial_dims,
    )
    result = trainer.fit(resume=resume)
    if strategy.finish is not None and ctx.is_main:
        for path in (result.best_checkpoint, result.last_checkpoint):
            if path is not None:
                strategy.finish(path)
    if ctx.is_main:
        _write_summary(out, config, trainer, result, budget, split, time.perf_counter() - start)
    barrier(ctx)
    return out


def inference_preprocess(preprocess: PreprocessConfig, cases: list) -> PreprocessConfig:
    """The preprocessing that new scans get from the checkpoint: the training one, except that a run which kept
    each scan's own spacing (``target_spacing: null``) fixes the median voxel size of its training scans, as
    nnU-Net does.  A network trained on 3 mm voxels must see 3 mm voxels whatever the new scan's resolution; at
    the scan's own 1 mm it would see a head three times too large."""
    if preprocess.target_spacing is not None or not cases:
        return preprocess
    spacing = tuple(round(float(s), 4) for s in np.median([c.info.spacing for c in cases], axis=0))
    logger.info("new scans will be resampled to the training spacing %s mm", spacing)
    return dataclasses.replace(preprocess, target_spacing=spacing)


def _label_map(dataset: CaseDataset) -> dict[str, int]:
    """Label name -> value (background first); binary when the dataset declares no names."""
    names = dataset.label_names or {0: "background", 1: "foreground"}
    if 0 not in names:
        raise DataError(f"{dataset.root}: the dataset's labels must include 0 (background), got {names}")
    return {str(names[v]): int(v) for v in sorted(names)}


def _train_config(config: FinetuneConfig, num_labels: int) -> TrainConfig:
    """The run's TrainConfig: binary problems default to BCE (DART), multi-class to Dice + CE."""
    values = dict(config.train)
    values.setdefault("loss", "bce" if num_labels == 2 else "dice_ce")
    values.setdefault("seed", config.seed)
    return TrainConfig.from_dict(values)


def _divisor(spec: dict[str, Any]) -> int:
    depth = int(spec["config"].get("depth", 5))
    return max(2 ** max(depth - 1, 0), 1) * 2


def build_model(
    config: FinetuneConfig, in_channels: int, num_labels: int
) -> tuple[nn.Module, dict[str, Any], dict[str, Any] | None]:
    """The target model: the source's architecture (or ``config.model``) with the target's channels and classes.

    The weights are loaded by the strategy (:func:`apply_strategy`), which also records the load audit.

    Returns:
        ``(model, spec, source_checkpoint)``; the checkpoint is ``None`` without ``init``.
    """
    from ..models import create_model

    ckpt = load_checkpoint(config.init) if config.init else None
    source_spec = (ckpt or {}).get("model") or {}
    name = source_spec.get("name") or config.model
    model_cfg = {k: v for k, v in (source_spec.get("config") or {}).items() if k not in ("num_classes", "head")}
    model_cfg.update(config.model_config)
    model_cfg.update(in_channels=in_channels, out_channels=1 if num_labels == 2 else num_labels)
    model = create_model(name, **model_cfg)
    spec = {"name": getattr(model, "model_name", name), "config": dict(getattr(model, "model_config", model_cfg))}
    return model, spec, ckpt


def _select(config: FinetuneConfig, dataset: CaseDataset, preprocess: PreprocessConfig, labels: dict[str, int]):
    """Subject split of the target domain, the label budget, and the prepared train/val cases."""
    pool = [c for c in dataset.cases if config.target_domain is None or c.domain == config.target_domain]
    if not pool:
        domains = sorted({str(c.domain) for c in dataset.cases})
        raise ConfigError(f"{dataset.root}: no case of domain {config.target_domain!r}; domains: {domains}")
    split = split_by_subject(
        pool, test_fraction=config.test_fraction, val_fraction=config.val_fraction, seed=config.split_seed
    )
    train_pool = [dataset.get(c) for c in split.train]
    if not train_pool:
        raise DataError(f"{dataset.root}: no training subjects left after the split ({len(pool)} cases in the pool)")
    budget = n_scans_budget(train_pool, config.n_labelled, seed=config.seed)
    values = sorted(labels.values())
    progress = bool(config.train.get("progress", True))  # grid cells turn bars off: workers share a terminal
    train_cases = prepare_cases([dataset.get(c) for c in budget.cases], preprocess, values, config.cache_dir, progress)
    if config.every_kth_slice:
        n_slices = train_cases[0].label.shape[config.slice_axis]
        budget = every_kth_slice_budget(
            budget.cases[0], n_slices, config.every_kth_slice, axis=config.slice_axis, seed=config.seed
        )
    val_ids = list(split.val)[: config.max_val_cases]
    val_cases = [dataset.get(c) for c in val_ids]
    val_cases = prepare_cases(val_cases, preprocess, values, config.cache_dir, progress) if val_cases else []
    logger.info("labelled: %s; validation: %s", ", ".join(budget.cases), ", ".join(val_ids) or "none")
    return split, budget, train_cases, val_cases


def _datasets(config, train_cfg: TrainConfig, spatial_dims: int, train_cases, val_cases, budget, divisor: int):
    if spatial_dims == 2:
        shape = common_slice_shape(train_cases + val_cases, config.slice_axis, divisor)
        augment = create_augment(config.augment)
        train = SliceDataset(train_cases, config.slice_axis, shape, budget.slices, config.foreground_fraction, augment)
        val = SliceDataset(val_cases, config.slice_axis, shape) if val_cases else None
        return train, val
    length = train_cfg.batch_size * train_cfg.steps_per_epoch
    augment = create_augment(config.augment)
    train = PatchDataset(train_cases, config.patch_size, length, augment, config.foreground_fraction)
    return train, (PatchDataset(val_cases, config.patch_size) if val_cases else None)


def _write_summary(out: Path, config: FinetuneConfig, trainer: Trainer, result, budget, split: Split, seconds: float):
    history = result.history
    last = history[-1] if history else {}
    summary = {
        "status": "done",
        "init": config.init,
        "strategy": config.strategy,
        "target_domain": config.target_domain,
        "n_labelled": config.n_labelled,
        "every_kth_slice": config.every_kth_slice,
        "seed": config.seed,
        "labelled_cases": list(budget.cases),
        "labelled_slices": budget.num_slices,
        "val_cases": list(split.val)[: config.max_val_cases],
        "test_cases": list(split.test),
        "best_val_dice": result.best_metric if history and result.best_metric > float("-inf") else None,
        "final_val_dice": last.get("val_dice"),
        "final_train_loss": last.get("train_loss"),
        "epochs": len(history),
        "global_step": result.global_step,
        "precision": trainer.plan.name,
        "device": str(trainer.plan.device),
        "seconds": seconds,
        "checkpoint": str((result.best_checkpoint or result.last_checkpoint or Path()).relative_to(out))
        if (result.best_checkpoint or result.last_checkpoint)
        else None,
    }
    write_json_atomic(out / SUMMARY, summary)
