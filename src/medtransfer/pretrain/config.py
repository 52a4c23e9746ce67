"""``PretrainConfig``: everything that decides a pretraining run (frozen, built from dicts with checked keys)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, check_seed, did_you_mean
from .options import SourceDomain, SourceTask, parse_domain, parse_task

# One architecture for every source (Zoetmulder et al.): only the source differs, never the network.
DEFAULT_MODEL = "unet"
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"spatial_dims": 2, "in_channels": 1, "features": 16, "depth": 4}
MULTI_DATASETS = ("Dataset001_BrainExtraction", "Dataset002_Anatomy")


@dataclass(frozen=True)
class PretrainConfig:
    """A pretraining run.

    Attributes:
        task: see :class:`SourceTask`.
        domain: ``natural`` or ``mri``.
        out: the checkpoint to write; the resumable state goes to ``<out>.run/``.
        data: brainshift folder (MRI sources; natural ones are built when absent) or an nnU-Net dataset.
        model: registry name of the architecture; ``model_config`` its config (head/classes are set per task).
        size: square image size every source is resized to (a multiple of ``2 ** depth``).
        count: at most this many source images.
        epochs, steps_per_epoch, batch_size, lr, optimizer, schedule: training (see ``TrainConfig``).
        val_fraction: held-out share of the source images for the source metrics.
        domains: MRI scanner profiles to draw from (default: all).
        restoration_loss: ``mse`` (Models Genesis) or ``l1``.
        datasets: multi-dataset pretraining: dataset folders (names under ``data`` or paths).
        mixing: multi-dataset batches: ``balanced`` (round-robin) or ``proportional``.
        weights: import task: the weights file (ImageNet ResNet state dict, HED ``.weights.h5``) or an nnU-Net
            model folder.
        fold: import of an nnU-Net model folder: its ``fold_N`` (``0``, ``1``, ... or ``all``; default 0).
        seed, device, precision, progress, checkpoint_every_steps: as in ``TrainConfig``.
    """

    task: SourceTask
    domain: SourceDomain = SourceDomain.NATURAL
    out: str = "source.pt"
    data: str | None = None
    model: str = DEFAULT_MODEL
    model_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL_CONFIG))
    size: int = 64
    count: int = 2000
    epochs: int = 5
    steps_per_epoch: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "cosine"
    val_fraction: float = 0.1
    domains: tuple[str, ...] | None = None
    restoration_loss: str = "mse"
    datasets: tuple[str, ...] = MULTI_DATASETS
    mixing: str = "balanced"
    weights: str | None = None
    fold: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    progress: bool = True
    checkpoint_every_steps: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", parse_task(self.task))
        object.__setattr__(self, "domain", parse_domain(self.domain))
        object.__setattr__(self, "model_config", dict(self.model_config))
        if self.domains is not None:
            object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        check_seed(self.seed, "pretrain: --seed")
        depth = int(self.model_config.get("depth", 4))
        if self.size < 8 or self.size % (2**depth):
            raise ConfigError(f"pretrain: size must be a multiple of 2**depth = {2**depth}, got {self.size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"pretrain: val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.count < 2:
            raise ConfigError(f"pretrain: count must be >= 2, got {self.count}")
        if self.restoration_loss not in ("mse", "l1"):
            raise ConfigError(did_you_mean(self.restoration_loss, ["mse", "l1"], what="restoration loss"))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        """Build from a mapping; unknown keys are a :class:`ConfigError` with suggestions."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                raise ConfigError(did_you_mean(key, names, what="pretrain config key"))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain serialisable dict."""
        out = dataclasses.asdict(self)
        out["task"], out["domain"] = self.task.value, self.domain.value
        out["domains"] = list(self.domains) if self.domains is not None else None
        out["datasets"] = list(self.datasets)
        return out

    def architecture_config(self) -> dict[str, Any]:
        """``model_config`` for ``model``: for another model than the shared U-Net the U-Net defaults are dropped
        (only ``spatial_dims``, ``in_channels`` and the keys the user changed are kept)."""
        if self.model == DEFAULT_MODEL:
            return dict(self.model_config)
        return {
            k: v
            for k, v in self.model_config.items()
            if k in ("spatial_dims", "in_channels") or DEFAULT_MODEL_CONFIG.get(k, object()) != v
        }

    def train_values(self, loss: str) -> dict[str, Any]:
        """The ``TrainConfig`` fields of this run."""
        return {
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "loss": loss,
            "seed": self.seed,
            "device": self.device,
            "precision": self.precision,
            "progress": self.progress,
            "checkpoint_every_steps": self.checkpoint_every_steps,
            "val_every": 1,
        }
