"""``run_multi``: Med3D-style multi-dataset pretraining with :class:`medtransfer.train.Trainer`.

Each step's batch mixes items of several datasets (:class:`~.multi.MultiSourceDataset`); the shared encoder
runs once on the whole batch, every dataset's items go through their own decoder + head, and the step loss is
the item-weighted mean of the per-dataset losses (Dice + CE).  The written checkpoint holds the shared encoder
only (``encoder.*``) with the single-task model spec, so finetune loads it like any other source; the per-dataset
branches stay in ``OUT.run/checkpoint_last.pt``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..errors import ConfigError, DataError
from ..train import CheckpointManager, MetricsHistory, StepBatchSampler, TrainBatches, TrainConfig, Trainer
from ..train.losses import create_loss
from ..train.precision import to_memory_format
from ..train.rng import seed_everything
from .config import PretrainConfig
from .datasets import SegmentationDataset
from .evaluation import SegmentationValidator
from .multi import BranchDataset, MultiHeadModel, MultiSourceDataset
from .options import SourceDomain
from .run import final_metrics, run_dir, source_meta
from .sources import SourceData, mri_slices

log = logging.getLogger(__name__)


class MultiSourceTrainer(Trainer):
    """A :class:`Trainer` whose steps route each item to its dataset's branch (single process; no DDP)."""

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The item-weighted mean of the per-dataset losses; the shared encoder runs once on the whole batch."""
        model: MultiHeadModel = self.model
        image = to_memory_format(batch["image"].to(self.plan.device), self.plan.channels_last)
        label, which = batch["label"].to(self.plan.device), batch["dataset"].to(self.plan.device)
        with self.plan.autocast():
            features = model.encoder(image)
        loss = image.new_zeros((), dtype=torch.float32)
        for index in which.unique().tolist():
            mask = which == index
            with self.plan.autocast():
                logits = model.forward_features([f[mask] for f in features], model.names[index])
            loss = loss + self.loss_fn(logits, label[mask]) * (mask.sum() / len(mask))
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> torch.Tensor:
        model: MultiHeadModel = self.model
        image = to_memory_format(batch["image"].to(self.plan.device), self.plan.channels_last)
        with self.plan.autocast():
            return model(image, model.names[int(batch["dataset"][0])]).float()


class MultiValidator:
    """Dice of every branch on its own held-out slices; ``dice`` is their mean."""

    def __init__(self, validators: dict[str, SegmentationValidator]) -> None:
        self.validators = validators

    def __call__(self, step) -> dict[str, float]:
        scores = {f"dice_{name}": v(step)["dice"] for name, v in self.validators.items()}
        finite = [s for s in scores.values() if not math.isnan(s)]
        return {"dice": sum(finite) / len(finite) if finite else math.nan, **scores}


def load_multi_sources(config: PretrainConfig) -> dict[str, SourceData]:
    """Dataset branch name -> labelled slices, for each entry of ``config.datasets``."""
    if config.domain is not SourceDomain.MRI:
        raise ConfigError("multi-dataset pretraining draws from several MRI segmentation datasets: use --domain mri")
    if config.data is None:
        raise ConfigError("multi-dataset pretraining needs --data (a brainshift folder or dataset folders)")
    root = Path(config.data)
    sources = {}
    for entry in config.datasets:
        folder = root / entry if (root / entry).is_dir() else Path(entry)
        if not folder.is_dir():
            raise DataError(f"{folder}: dataset folder of multi-dataset pretraining not found (under {root})")
        name = folder.name.replace(".", "_").replace("-", "_")
        sources[name] = mri_slices(
            folder, size=config.size, count=config.count, seed=config.seed, domains=config.domains
        )
    if len(sources) < 2:
        raise ConfigError(f"multi-dataset pretraining needs at least two datasets, got {list(sources)}")
    return sources


def run_multi(config: PretrainConfig, *, resume: bool = False, sources: dict[str, SourceData] | None = None) -> Path:
    """Train the shared encoder on every dataset of ``config.datasets`` (or the given in-memory ``sources``)."""
    out = Path(config.out)
    seed_everything(config.seed)
    sources = sources if sources is not None else load_multi_sources(config)
    splits = {name: src.split(config.val_fraction, config.seed) for name, src in sources.items()}
    classes = {name: max(len(src.class_names), int(src.labels.max()) + 1) for name, src in sources.items()}
    model = MultiHeadModel(config.model, config.architecture_config(), classes)
    train_set = MultiSourceDataset(
        {n: SegmentationDataset(tr, augment=True) for n, (tr, _) in splits.items()}, config.mixing
    )
    validator = MultiValidator(
        {
            n: SegmentationValidator(BranchDataset(SegmentationDataset(va), i), classes[n])
            for i, (n, (_, va)) in enumerate(splits.items())
        }
    )
    meta = source_meta(config, model.spec, model.stage_names, None)
    meta["data"] = {name: src.description for name, src in sources.items()}
    meta["branches"] = {name: {"classes": classes[name], "class_names": sources[name].class_names} for name in classes}
    meta["mixing"] = train_set.mixing.value
    train_cfg = TrainConfig.from_dict(config.train_values("dice_ce"))
    start = time.perf_counter()
    trainer = MultiSourceTrainer(
        model,
        train_cfg,
        TrainBatches(
            train_set, StepBatchSampler(len(train_set), train_cfg.batch_size, train_cfg.steps_per_epoch, config.seed)
        ),
        loss=create_loss("dice_ce"),
        validator=validator,
        checkpoints=CheckpointManager(run_dir(out), {"name": "multi_head", "config": {}}, meta),
        history=MetricsHistory(run_dir(out) / "history.jsonl"),
        spatial_dims=int(model.spec["config"].get("spatial_dims", 2)),
    )
    result = trainer.fit(resume=resume)
    first = result.history[0]["train_loss"] if result.history else math.nan
    metrics = final_metrics(result.history, first, result.history[-1]["train_loss"] if result.history else math.nan)
    meta.update(steps=result.global_step, epochs=len(result.history), metrics=metrics, history=result.history)
    meta["seconds"] = time.perf_counter() - start
    state = {k: v.detach().cpu().contiguous() for k, v in model.encoder_state_dict().items()}
    save_checkpoint(out, {"model": model.spec, "state_dict": state, "meta": meta})
    log.info("wrote %s (shared encoder of %d datasets): dice %.3f", out, len(classes), metrics.get("dice", math.nan))
    return out
