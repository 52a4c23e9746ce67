"""Training engine: config, losses, optimisers and schedules, resumable trainer, fast paths, DDP."""

from __future__ import annotations

from .batches import StepBatchSampler, TrainBatches
from .checkpointing import CheckpointManager
from .config import OptimizerName, Precision, ScheduleName, TrainConfig
from .history import MetricsHistory
from .losses import create_loss, list_losses
from .optim import create_optimizer
from .precision import PrecisionPlan, resolve_device, resolve_precision
from .rng import get_rng_state, seed_everything, set_rng_state
from .schedules import create_scheduler
from .trainer import Trainer, TrainResult
from .validation import DiceAccumulator, DiceValidator

__all__ = [
    "CheckpointManager",
    "DiceAccumulator",
    "DiceValidator",
    "MetricsHistory",
    "OptimizerName",
    "Precision",
    "PrecisionPlan",
    "ScheduleName",
    "StepBatchSampler",
    "TrainBatches",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "create_loss",
    "create_optimizer",
    "create_scheduler",
    "get_rng_state",
    "list_losses",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
    "set_rng_state",
]
