"""``run_finetune``: one segmentation fine-tuning run from a source checkpoint, a strategy and a label budget.

Run folder (docs/guide.md)::

    RUN/config.yaml          resolved FinetuneConfig (train and preprocess sections fully resolved)
    RUN/env.json             versions, git commit, device, seed
    RUN/checkpoints/         checkpoint_best.pt, checkpoint_last.pt (meta: strategy plan, load audit, ...)
    RUN/history.jsonl        one line per epoch
    RUN/summary.json         written last, atomically: the run is done exactly when it exists; it names the
                             labelled, validation and test cases (the grid scores exactly these test cases)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..data.layouts import CaseDataset, load_dataset
from ..data.preprocess import PreprocessConfig, common_spacing
from ..errors import ConfigError, DataError
from ..infer.postprocess import MIN_COMPONENT_KEY, log_lesion_prior, source_lesion_volumes, tune_on_validation
from ..train.augment import create_augment
from ..train.batches import StepBatchSampler, TrainBatches
from ..train.checkpointing import CheckpointManager
from ..train.config import TrainConfig
from ..train.distributed import barrier, init_distributed
from ..train.history import MetricsHistory
from ..train.resume import check_same_options
from ..train.rng import seed_everything
from ..train.run_env import environment
from ..train.validation import DiceValidator
from ..transfer.apply import apply_strategy, check_strategy_task
from ..transfer.registry import Task
from ..utils import write_json_atomic, write_yaml_atomic
from .build import InputLayout, build_model, load_source, relayout_source, size_divisor
from .config import FinetuneConfig
from .data import (
    ForegroundBatchSampler,
    LesionMix,
    PatchDataset,
    PreparedCase,
    SliceDataset,
    common_slice_shape,
    prepare_cases,
    with_mirror_channels,
)
from .fit import fit
from .select import Selection, label_map, select_cases
from .source_prep import adopt_source

logger = logging.getLogger(__name__)

SUMMARY = "summary.json"
CONFIG = "config.yaml"


def run_finetune(config: FinetuneConfig | dict[str, Any], *, resume: bool = False) -> Path:
    """Fine-tune as ``config`` says and write the run folder; returns it.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the run is data-parallel: every rank trains on its share of each
    batch and rank 0 writes the run folder.  With ``resume`` a finished run (``summary.json`` present) is returned
    as is and an interrupted one continues from its last checkpoint, provided it was made with the same options
    (:func:`check_resumable`).

    Raises:
        ConfigError / DataError: bad options, dataset, checkpoint or budget (message names the problem), or a
            resume with options other than the run's.
    """
    config = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(config)
    config = adopt_source(config)  # the source's preprocessing and patch size, where the run sets none
    check_strategy_task(config.strategy, Task.SEGMENTATION)
    out = Path(config.out)
    start = time.perf_counter()
    dataset = load_dataset(config.data)
    _refuse_out_among_the_scans(out, dataset)
    labels = label_map(dataset)
    preprocess = PreprocessConfig.from_dict(config.preprocess)
    ctx = init_distributed()  # a no-op unless started by torchrun with WORLD_SIZE > 1
    train_cfg = train_config(config, len(labels))
    selection = select_cases(config, dataset)
    scans = [dataset.get(c).images[0] for c in [*selection.labelled_ids, *selection.val_ids]]
    preprocess = common_spacing(preprocess, scans)  # mixed voxel sizes: the median, as nnU-Net and predict do
    resolved = resolved_config(config, selection, train_cfg, preprocess)
    if resume and check_resumable(out, resolved):
        logger.info("%s: already finished", out)
        return out
    seed_everything(config.seed)
    source = load_source(config)
    layout = InputLayout(dataset.num_channels, config.context_slices, config.symmetry_channel)
    model, spec = build_model(config, source, layout.total, num_labels=len(labels))
    spatial_dims = int(spec["config"].get("spatial_dims", 2))
    if config.context_slices and spatial_dims != 2:
        raise ConfigError(f"context_slices needs a 2D model, got a {spatial_dims}D {spec['name']}")
    if config.lesion_mix and spatial_dims != 2:
        raise ConfigError(f"lesion_mix carves lesions into 2D slices: it needs a 2D model, got a {spatial_dims}D one")
    train_cases, val_cases = _prepare(config, dataset, selection, preprocess, labels)
    if train_cases:
        selection = selection.with_slices(config, train_cases[0].label.shape[config.slice_axis])
    logger.info(
        "labelled: %s; validation: %s", ", ".join(selection.labelled_ids), ", ".join(selection.val_ids) or "none"
    )
    if train_cases and not any(np.any(np.asarray(c.label) > 0) for c in train_cases):
        logger.warning(
            "none of the %d labelled training case(s) has a foreground voxel (%s): the network can only learn "
            "background; check the labels (`medtransfer data check`)",
            len(train_cases),
            ", ".join(selection.labelled_ids[:5]) + (", ..." if len(selection.labelled_ids) > 5 else ""),
        )
    source, relayout = relayout_source(source, model, layout)
    strategy = apply_strategy(config.strategy, model, source, seed=config.seed)
    if relayout is not None:
        logger.info("source input channels re-laid out: %s -> %s", relayout["source"], relayout["target"])
        first = dict(model.named_parameters()).get(relayout["key"])
        if relayout["zero_channels"] and first is not None and not first.requires_grad:
            logger.warning(
                "strategy %s starts with the first convolution frozen: its %d input channels that start at zero "
                "(mirror channels, new neighbour slices) add nothing while it stays frozen",
                config.strategy,
                relayout["zero_channels"],
            )
    if ctx.is_main:
        write_yaml_atomic(out / CONFIG, resolved)
        env = environment(train_cfg.device, config.seed, str(train_cfg.precision)) | {"world_size": ctx.world_size}
        write_json_atomic(out / "env.json", env)
    divisor = size_divisor(spec, source)
    train_data, val_data = _datasets(config, train_cfg, spatial_dims, train_cases, val_cases, selection, divisor)
    meta = {
        "labels": labels,
        "preprocess": inference_preprocess(preprocess, train_cases).to_dict(),
        "inference": {"slice_axis": config.slice_axis, "divisor": divisor, "mirror": config.tta_mirror}
        | ({"patch_size": list(config.patch_size)} if spatial_dims == 3 else {"context": config.context_slices})
        | ({"symmetry": True} if config.symmetry_channel else {}),
        "strategy": strategy.description,
        "load_audit": strategy.audit,
        **({"input_relayout": relayout} if relayout is not None else {}),
        "init": config.init,
        "target_domain": config.target_domain,
        "split": selection.split.to_dict(),
        "budget": selection.budget.to_dict(),
        "seed": config.seed,
    }
    if isinstance(config.min_component_mm3, float):
        meta["postprocess"] = {MIN_COMPONENT_KEY: config.min_component_mm3}
    sampler = _sampler(config, train_cfg, train_data, ctx)
    fitted = fit(
        strategy,
        model,
        train_cfg,
        TrainBatches(train_data, sampler, train_cfg.num_workers),
        validator=DiceValidator(val_data, num_classes=max(len(labels) - 1, 1)) if val_data is not None else None,
        checkpoints=CheckpointManager(out / "checkpoints", spec, meta),
        history=MetricsHistory(out / "history.jsonl"),
        spatial_dims=spatial_dims,
        resume=resume,
        finish=ctx.is_main,
    )
    if ctx.is_main and config.min_component_mm3 == "auto":
        # the training labels bound the size (whole labelled scans only: a slice budget's user has no 3D lesions),
        # with the source's lesions where min_component_prior pools them
        train_ids = [] if config.every_kth_slice else selection.labelled_ids
        tune_postprocess(
            fitted.result,
            dataset,
            selection.val_ids,
            train_ids,
            test_ids=selection.test_ids,
            device=str(fitted.trainer.plan.device),
            source_volumes_mm3=source_lesion_volumes(source),
            prior=config.min_component_prior,
            source_given=source is not None,
        )
    if ctx.is_main:
        _write_summary(out, config, fitted, selection, time.perf_counter() - start)
    barrier(ctx)
    return out


def _sampler(config: FinetuneConfig, train_cfg: TrainConfig, train_data, ctx) -> StepBatchSampler:
    args = (train_cfg.batch_size, train_cfg.steps_per_epoch, config.seed, ctx.rank, ctx.world_size)
    if config.foreground_sampling == "batch" and isinstance(train_data, SliceDataset):
        fg = train_data.foreground_items()
        return ForegroundBatchSampler(len(train_data), fg, config.foreground_fraction, *args)
    return StepBatchSampler(len(train_data), *args)


def tune_postprocess(
    result,
    dataset: CaseDataset,
    val_ids,
    train_ids=(),
    *,
    test_ids=(),
    device: str = "cpu",
    source_volumes_mm3: dict[str, list[float]] | None = None,
    prior: str = "auto",
    source_given: bool = False,
) -> None:
    """Tune the minimum component size on the validation cases and store it in the run's checkpoints.

    Each checkpoint (best, last) predicts the validation scans as ``medtransfer predict`` would (its mirroring and
    2.5D stacking), and :func:`~medtransfer.infer.postprocess.tune_min_component` picks the size with the highest
    lesion F1 at or below the free size of the training labels (``train_ids``: half the 5 % prediction bound of their
    lesion volumes, :func:`~medtransfer.infer.postprocess.lesion_size_cap`; a handful of validation scans holds a
    few lesions, too few to be trusted to say that components of a size the training lesions have are noise), or a
    larger one up to their 20 % bound only where the validation F1 is strictly higher.
    ``meta["postprocess"]`` then records the size, both caps, the candidates' F1 and the cases, and every later
    prediction from that checkpoint applies it.  Without validation cases (every labelled scan trains) the size is
    the free size itself, the training labels' prior that a tuned run falls back on when its validation scans cannot
    tell the sizes apart; with neither validation cases nor two training lesions nothing is removed.  The
    validation scans are predicted in fp32 on ``device`` (the run's: a GPU run does not predict them on the CPU).
    ``source_volumes_mm3`` (the ``{case: lesion volumes}`` the source checkpoint's own caps came from) join the
    training lesions as ``prior`` says (:func:`~medtransfer.infer.postprocess.lesion_size_prior`); without
    validation cases or whole training scans only ``prior: pooled`` takes the size from them alone.
    ``source_given``: the run was fine-tuned from a checkpoint (the log then says when it recorded no lesions).
    ``test_ids``: the run's test scans; like the validation scans, the source's lesions on them are left out.
    """
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..infer import load_predictor

    if not val_ids and not train_ids and (source_volumes_mm3 is None or prior != "pooled"):
        logger.warning("min_component_mm3: auto needs validation cases or whole labelled scans; no post-processing")
        return
    source_given = source_given or source_volumes_mm3 is not None
    for path in dict.fromkeys(p for p in (result.best_checkpoint, result.last_checkpoint) if p is not None):
        predict = None
        if val_ids:
            predictor = load_predictor(path, device=device, precision="fp32")
            predictor.postprocess = {}
            predict = predictor.predict
        tuned = tune_on_validation(predict, dataset, val_ids, train_ids, source_volumes_mm3, prior, test_ids)
        ckpt = load_checkpoint(path)
        ckpt["meta"]["postprocess"] = tuned
        save_checkpoint(path, ckpt)
        cap, evidence = tuned["max_mm3_from_training_lesions"], tuned["max_mm3_if_validation_better"]
        if path == (result.best_checkpoint or result.last_checkpoint):
            log_lesion_prior(tuned["lesion_prior"], source_given)
        logger.info(
            "%s: min component %g mm³ (free up to %s, up to %s if validation F1 is higher; validation lesion F1 %s)",
            path.name,
            tuned[MIN_COMPONENT_KEY],
            "-" if cap is None else f"{cap:g}",
            "-" if evidence is None else f"{evidence:g}",
            {size: round(f1, 3) for size, f1 in tuned["val_lesion_f1"].items()},
        )


def resolved_config(
    config: FinetuneConfig, selection: Selection, train_cfg: TrainConfig, preprocess: PreprocessConfig
) -> dict[str, Any]:
    """What ``config.yaml`` records: every option resolved (budget size, train and preprocess sections) and the cases
    they select (``cases``: training, validation and test ids, and the labelled ones), so that resuming after the
    dataset changed (cases added or removed re-draw the split: a test case could train) is refused."""
    split = selection.split
    return {
        **config.to_dict(),
        "n_labelled": selection.n_labelled,
        "train": train_cfg.to_dict(),
        "preprocess": preprocess.to_dict(),
        "cases": {
            "labelled": list(selection.budget.cases),
            "val": list(selection.val_ids),
            "test": list(split.test),
            "pool": list(split.train),
        },
    }


def _refuse_out_among_the_scans(out: Path, dataset: CaseDataset) -> None:
    """Refuse an ``out`` inside a folder of the dataset's scans or labels (``imagesTr/run``): the run's files there
    would break the dataset for every later command."""
    parents = {p.parent for case in (*dataset.cases, *dataset.test_cases) for p in case.files}
    folders = {folder.resolve() for folder in parents}
    target = out.resolve()
    inside = next((f for f in sorted(folders) if target == f or target.is_relative_to(f)), None)
    if inside is not None:
        raise ConfigError(
            f"{out}: lies in {inside}, a folder of the dataset's scans or labels; the run's files there would break "
            "the dataset: give an --out outside it"
        )


def check_resumable(out: Path, resolved: dict[str, Any]) -> bool:
    """Whether ``out`` holds a finished run; an earlier run there must have been made with ``resolved``.

    Raises:
        ConfigError: ``out`` holds a run made with other options (each named with its old and new value).
    """
    path = out / CONFIG
    if path.is_file():
        try:
            stored = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            reason = " ".join(str(err).split())
            raise ConfigError(f"{path}: unreadable ({reason}); it is not a run's config: choose another --out") from err
        if not isinstance(stored, dict):
            raise ConfigError(f"{path}: holds a {type(stored).__name__}, not a run's options; choose another --out")
        check_same_options(
            f"{out} was fine-tuned",
            stored,
            resolved,
            "resume it with the same options, or choose another --out (delete the folder to start it again)",
        )
    return (out / SUMMARY).is_file()


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


def train_config(config: FinetuneConfig, num_labels: int) -> TrainConfig:
    """The run's TrainConfig: binary problems default to BCE (DART), multi-class to Dice + CE."""
    values = dict(config.train)
    values.setdefault("loss", "bce" if num_labels == 2 else "dice_ce")
    values.setdefault("seed", config.seed)
    return TrainConfig.from_dict(values)


def _prepare(
    config: FinetuneConfig,
    dataset: CaseDataset,
    selection: Selection,
    preprocess: PreprocessConfig,
    labels: dict[str, int],
) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """The labelled and validation cases, preprocessed (through the cache when the run has one)."""
    values = sorted(labels.values())
    progress = bool(config.train.get("progress", True))  # grid cells turn bars off: workers share a terminal
    train = prepare_cases(
        [dataset.get(c) for c in selection.labelled_ids], preprocess, values, config.cache_dir, progress
    )
    val_cases = [dataset.get(c) for c in selection.val_ids]
    val = prepare_cases(val_cases, preprocess, values, config.cache_dir, progress) if val_cases else []
    for case in train + val:  # a 4D file in a one-file-per-channel layout, say: before torch meets it
        if case.image.shape[0] != dataset.num_channels:
            files = ", ".join(str(p) for p in dataset.get(case.case_id).images)
            raise DataError(
                f"{files}: case {case.case_id} has {case.image.shape[0]} image channel(s), the dataset declares "
                f"{dataset.num_channels}; give every case the dataset's channels (one 3D file per channel, or one "
                "4D file holding them all)"
            )
    if config.symmetry_channel:
        train, val = [with_mirror_channels(c) for c in train], [with_mirror_channels(c) for c in val]
    return train, val


def _datasets(config, train_cfg: TrainConfig, spatial_dims: int, train_cases, val_cases, selection, divisor: int):
    if spatial_dims == 2:
        shape = common_slice_shape(train_cases + val_cases, config.slice_axis, divisor)
        augment = create_augment(config.augment)
        slices = selection.budget.slices
        fraction = config.foreground_fraction if config.foreground_sampling == "index" else 0.0
        k = config.context_slices
        mix = LesionMix(config.lesion_mix) if config.lesion_mix else None
        train = SliceDataset(train_cases, config.slice_axis, shape, slices, fraction, augment, k, mix)
        val = SliceDataset(val_cases, config.slice_axis, shape, context=k) if val_cases else None
        return train, val
    length = train_cfg.batch_size * train_cfg.steps_per_epoch
    augment = create_augment(config.augment)
    train = PatchDataset(train_cases, config.patch_size, length, augment, config.foreground_fraction)
    return train, (PatchDataset(val_cases, config.patch_size) if val_cases else None)


def _write_summary(out: Path, config: FinetuneConfig, fitted, selection: Selection, seconds: float) -> None:
    result, plan = fitted.result, fitted.trainer.plan
    history = result.history
    last = history[-1] if history else {}
    checkpoint = result.best_checkpoint or result.last_checkpoint
    summary = {
        "status": "done",
        "init": config.init,
        "strategy": config.strategy,
        "target_domain": config.target_domain,
        "n_labelled": selection.n_labelled,
        "every_kth_slice": config.every_kth_slice,
        "seed": config.seed,
        **selection.to_dict(),
        "labelled_slices": selection.budget.num_slices,
        "best_val_dice": result.best_metric if history and result.best_metric > float("-inf") else None,
        "final_val_dice": last.get("val_dice"),
        "final_train_loss": last.get("train_loss"),
        "epochs": len(history),
        "global_step": result.global_step,
        "precision": plan.name,
        "device": str(plan.device),
        "seconds": seconds,
        "checkpoint": str(checkpoint.relative_to(out)) if checkpoint else None,
    }
    write_json_atomic(out / SUMMARY, summary)
