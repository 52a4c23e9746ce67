"""Train a model prepared by a strategy: the one place a strategy meets the :class:`~medtransfer.train.Trainer`.

Segmentation (:mod:`.segment`), classification (:mod:`.classify`) and the teacher-student students
(:mod:`medtransfer.semi.teacher_student`) all train through :func:`fit`, so every registered strategy behaves
the same in each: its parameter groups and epoch hooks, its replacement model and loss wrapper (``spottune``)
and its finishing step (collapsing checkpoints and the trained model to the plain architecture).  Strategies:
``medtransfer strategies`` and docs/guide.md; SpotTUnet: docs/beyond.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..train.batches import TrainBatches
from ..train.checkpointing import CheckpointManager
from ..train.config import TrainConfig
from ..train.history import MetricsHistory
from ..train.losses import create_loss
from ..train.trainer import Trainer, TrainResult, Validator
from ..transfer.apply import AppliedStrategy


@dataclass
class Fitted:
    """What :func:`fit` returns: the trained model (plain architecture), the trainer's result and the trainer."""

    model: nn.Module
    result: TrainResult
    trainer: Trainer


def training_model(applied: AppliedStrategy, model: nn.Module) -> nn.Module:
    """The module that is trained: the strategy's replacement (SpotTune's gated model) or ``model`` itself."""
    return applied.model if applied.model is not None else model


def fit(
    applied: AppliedStrategy,
    model: nn.Module,
    config: TrainConfig,
    data: TrainBatches,
    *,
    loss: nn.Module | None = None,
    validator: Validator | None = None,
    checkpoints: CheckpointManager | None = None,
    history: MetricsHistory | None = None,
    spatial_dims: int = 2,
    resume: bool = False,
    finish: bool = True,
) -> Fitted:
    """Train ``model`` as prepared by ``applied`` (:func:`medtransfer.transfer.apply_strategy`).

    Args:
        applied: the applied strategy (param groups, epoch hooks, replacement model, loss wrapper, finish step).
        model: the model the strategy was applied to.
        config: training options.
        data: the resumable training batches.
        loss: the task loss (default ``create_loss(config.loss)``); the strategy may wrap it.
        validator, checkpoints, history, spatial_dims: as for :class:`~medtransfer.train.Trainer`.
        resume: continue from the ``last`` checkpoint when there is one.
        finish: run the strategy's finishing step on the written checkpoints (rank 0 only under DDP).
    """
    base = loss if loss is not None else create_loss(config.loss)
    trainer = Trainer(
        training_model(applied, model),
        config,
        data,
        loss=applied.wrap_loss(base) if applied.wrap_loss else base,
        param_groups=applied.param_groups,
        validator=validator,
        checkpoints=checkpoints,
        history=history,
        epoch_start_hooks=applied.hooks,
        spatial_dims=spatial_dims,
    )
    result = trainer.fit(resume=resume)
    if finish and applied.finish is not None:
        for path in (result.best_checkpoint, result.last_checkpoint):
            if path is not None:
                applied.finish(path)
    trained = applied.plain_model(trainer.model) if applied.plain_model is not None else trainer.model
    return Fitted(trained, result, trainer)
