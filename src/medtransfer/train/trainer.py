"""The training loop with nnU-Net's hook names; data, validation, logging and checkpointing are injected.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from medtransfer.train import StepBatchSampler, TrainBatches, TrainConfig, Trainer
    >>> data = [{"image": torch.randn(1, 8, 8), "label": torch.zeros(1, 8, 8)} for _ in range(4)]
    >>> config = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, progress=False, device="cpu")
    >>> batches = TrainBatches(data, StepBatchSampler(4, 2, 2, seed=0))
    >>> result = Trainer(nn.Conv2d(1, 1, 3, padding=1), config, batches).fit()
    >>> result.global_step
    2
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import TrainBatches
from .checkpointing import CheckpointManager
from .compile import compile_model
from .config import TrainConfig
from .distributed import DistributedContext, current_context, unwrap_model, wrap_model
from .history import MetricsHistory, log_epoch
from .losses import create_loss
from .optim import create_optimizer
from .precision import model_to_plan, resolve_device, resolve_precision, to_memory_format
from .rng import get_rng_state, seed_everything, set_rng_state
from .schedules import create_scheduler

logger = logging.getLogger(__name__)

EpochHook = Callable[[nn.Module, int, torch.optim.Optimizer], Any]
Validator = Callable[[Callable[[dict[str, Any]], torch.Tensor]], dict[str, float]]


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    global_step: int
    best_metric: float
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None


class Trainer:
    """Trains ``model`` as ``config`` says.

    Args:
        model: the network (moved to the device and memory format of the precision plan).
        config: a :class:`TrainConfig`.
        data: :class:`TrainBatches` (resumable by position).
        loss: a loss module; default ``create_loss(config.loss)``.
        param_groups: optimiser groups with ``lr_scale`` (a strategy plan's); default all parameters.
        validator: ``validator(validation_step) -> {"dice": ...}`` on held-out subjects.
        checkpoints: where ``last``/``best`` go; ``None`` keeps nothing on disk.
        history: per-epoch records (JSON lines).
        epoch_start_hooks: ``hook(model, epoch, optimizer)`` at every epoch start (gradual unfreezing, ...).
        spatial_dims: 2 or 3 (memory format of the model).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        data: TrainBatches,
        *,
        loss: nn.Module | None = None,
        param_groups: Iterable[dict[str, Any]] | None = None,
        validator: Validator | None = None,
        checkpoints: CheckpointManager | None = None,
        history: MetricsHistory | None = None,
        epoch_start_hooks: Sequence[EpochHook] = (),
        spatial_dims: int = 2,
        context: DistributedContext | None = None,
    ) -> None:
        self.config, self.data, self.validator = config, data, validator
        self.checkpoints, self.history = checkpoints, history or MetricsHistory()
        self.hooks = list(epoch_start_hooks)
        self.ctx = context or current_context()
        device = resolve_device(config.device)
        if device.type == "cuda" and self.ctx.enabled and device.index is None:
            device = torch.device("cuda", self.ctx.local_rank)
        self.plan = resolve_precision(config.precision, device, config.channels_last, model=model)
        self.model = model_to_plan(model, self.plan, spatial_dims)
        self.network = self._wrap(self.model)
        self.loss_fn = loss if loss is not None else create_loss(config.loss)
        self.optimizer = create_optimizer(self.model, config, param_groups)
        self.scheduler = create_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.plan.grad_scaling)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.best_metric = -math.inf
        logger.info("training on %s, precision %s, channels_last=%s", device, self.plan.name, self.plan.channels_last)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The network the training step runs: DDP around ``model`` under a process group, compiled when asked
        (checkpoints use the plain ``self.model``)."""
        network = wrap_model(model, self.ctx, self.plan.device)
        return compile_model(network) if self.config.compile else network

    # ----------------------------------------------------------------------------------------------- steps
    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The loss of ``batch`` (the forward half of :meth:`train_step`); override to route items differently
        (multi-dataset pretraining sends each dataset's items through its own head)."""
        image = to_memory_format(batch["image"].to(self.plan.device, non_blocking=True), self.plan.channels_last)
        label = batch["label"].to(self.plan.device, non_blocking=True)
        with self.plan.autocast():
            logits = self.network(image)
        return self.loss_fn(logits, label)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One optimiser step on ``batch``: :meth:`compute_loss`, backward, clipping, step; returns
        ``{"loss": ...}`` (detached)."""
        loss = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits (float32) of the model in eval mode for ``batch["image"]``."""
        image = to_memory_format(batch["image"].to(self.plan.device), self.plan.channels_last)
        with self.plan.autocast():
            return self.model(image).float()

    # ---------------------------------------------------------------------------------------------- hooks
    def on_epoch_start(self, epoch: int) -> None:
        """Train mode, then the epoch hooks (strategies may freeze/unfreeze or fix norm layers here)."""
        self.network.train()
        changed = False
        for hook in self.hooks:
            changed = bool(hook(self.model, epoch, self.optimizer)) or changed
        if changed and self.ctx.enabled:
            # DDP registers the parameters that train when it wraps the model: a stage unfrozen since would train
            # on each rank alone (its gradients never averaged), so wrap again (every rank: the hooks depend on the
            # epoch only)
            self.network = self._wrap(self.model)

    def on_epoch_end(self, epoch: int, seconds: float) -> dict[str, Any]:
        """Validate, record the epoch, keep the best checkpoint and write the resumable one."""
        record = {
            "epoch": epoch,
            "step": self.global_step,
            "train_loss": self.loss_sum / max(self.loss_count, 1),
            "lr": max(group["lr"] for group in self.optimizer.param_groups),  # the head's under discriminative
            "seconds": seconds,
        }
        record.update(self.validate(epoch))
        self.epoch, self.step_in_epoch, self.loss_sum, self.loss_count = epoch + 1, 0, 0.0, 0
        if self.ctx.is_main:
            self.history.append(record)
            log_epoch(record, self.config.epochs)
        dice = record.get("val_dice", math.nan)
        # ties go to the later epoch: a validation Dice stuck at 0 (a small lesion not yet found) must not pin
        # "best" to the first, least trained model
        if not math.isnan(dice) and dice >= self.best_metric:
            self.best_metric = dice
            self.save_checkpoint("best", meta={"epoch": epoch, "val_dice": dice})
        self.save_checkpoint("last")
        return record

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation metrics (prefixed ``val_``) when due this epoch, on rank 0."""
        every, last = self.config.val_every, epoch + 1 == self.config.epochs
        if self.validator is None or not every or not ((epoch + 1) % every == 0 or last) or not self.ctx.is_main:
            return {}
        self.model.eval()
        metrics = self.validator(self.validation_step)
        self.network.train()
        for hook in self.hooks:  # re-apply per-epoch module modes (frozen BN) after eval()
            hook(self.model, epoch, self.optimizer)
        return {f"val_{k}": float(v) for k, v in metrics.items()}

    def save_checkpoint(self, name: str, meta: dict[str, Any] | None = None) -> Path | None:
        """Write checkpoint ``name`` (rank 0 only); ``last`` carries the full resumable state."""
        if self.checkpoints is None:
            return None
        # every rank's random state goes into "last" (a collective: every rank saves "last" at the same step)
        rng_by_rank = self._gather_rng() if name == "last" and self.ctx.enabled else None
        if not self.ctx.is_main:
            return None
        trainer_state = self.state_dict() if name == "last" else None
        if trainer_state is not None and rng_by_rank is not None:
            trainer_state["rng_by_rank"] = rng_by_rank
        meta = {"global_step": self.global_step, "precision": self.plan.name, **(meta or {})}
        return self.checkpoints.save(name, unwrap_model(self.model).state_dict(), trainer_state, meta)

    # ------------------------------------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``config.epochs``; with ``resume`` continue from the ``last`` checkpoint when there is one."""
        if not (resume and self.resume()):
            seed_everything(self.config.seed + self.ctx.rank)
        every, steps = self.config.checkpoint_every_steps, self.config.steps_per_epoch
        for epoch in range(self.epoch, self.config.epochs):
            self.on_epoch_start(epoch)
            start = time.perf_counter()
            bar = tqdm(
                self.data.epoch(epoch, self.step_in_epoch),
                total=steps,
                initial=self.step_in_epoch,
                desc=f"epoch {epoch + 1}/{self.config.epochs}",
                disable=not (self.config.progress and self.ctx.is_main),
                leave=False,
            )
            for batch in bar:
                loss = float(self.train_step(batch)["loss"])
                self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
                self.global_step, self.step_in_epoch = self.global_step + 1, self.step_in_epoch + 1
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if every and self.global_step % every == 0 and self.step_in_epoch < steps:
                    self.save_checkpoint("last")
            self.on_epoch_end(epoch, time.perf_counter() - start)
        return self._result()

    def _result(self) -> TrainResult:
        ckpt = self.checkpoints
        return TrainResult(
            global_step=self.global_step,
            best_metric=self.best_metric,
            history=self.history.state_dict(),
            last_checkpoint=ckpt.last_path if ckpt and ckpt.last_path.is_file() else None,
            best_checkpoint=ckpt.best_path if ckpt and ckpt.best_path.is_file() else None,
        )

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as weights-only-loadable data."""
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "best_metric": self.best_metric,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "data": self.data.state_dict(),
            "history": self.history.state_dict(),
            "config": self.config.to_dict(),
            "rng": get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the RNG states last, so nothing after them draws random numbers)."""
        for key in ("epoch", "step_in_epoch", "global_step", "loss_sum", "loss_count", "best_metric"):
            setattr(self, key, state[key])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.data.load_state_dict(state["data"])
        if self.ctx.is_main:
            self.history.load_state_dict(state["history"])
        by_rank = state.get("rng_by_rank")
        if self.ctx.enabled and by_rank is not None and len(by_rank) == self.ctx.world_size:
            set_rng_state(by_rank[self.ctx.rank])
        elif self.ctx.enabled and self.ctx.rank > 0:
            # a checkpoint without every rank's state (another world size, or an earlier version): rank 0's would
            # give every rank the same augmentation, so the others draw a stream of their own
            seed_everything((self.config.seed + self.ctx.rank) * 1_000_003 + self.global_step)
        else:
            set_rng_state(state["rng"])

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's :func:`get_rng_state`, in rank order (all ranks must call this)."""
        import torch.distributed as dist

        states: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(states, get_rng_state())
        return states

    def resume(self) -> bool:
        """Load the ``last`` checkpoint into model and trainer; ``False`` when there is none."""
        if self.checkpoints is None or (ckpt := self.checkpoints.load_last()) is None or "trainer" not in ckpt:
            logger.info("nothing to resume: starting a fresh run")
            return False
        unwrap_model(self.model).load_state_dict(ckpt["state_dict"])
        self.load_state_dict(ckpt["trainer"])
        logger.info("resumed at epoch %d, step %d", self.epoch + 1, self.global_step)
        return True
