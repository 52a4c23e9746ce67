"""Training configuration: a frozen dataclass built from dicts or YAML, with validated options."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..utils import read_yaml_mapping


class Precision(StrEnum):
    """Numeric precision of the forward pass (``auto`` picks the fastest accurate one for the device)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


PRECISION_ENV = "MEDTRANSFER_PRECISION"


def pinned_precision() -> Precision | None:
    """The precision ``auto`` stands for when ``MEDTRANSFER_PRECISION`` is set (``None`` when unset or ``auto``).

    The variable pins what ``auto`` means on every device (e.g. ``fp32`` for the same numbers on every CPU; the
    test suite sets it); an explicit precision in a config or on the command line still wins.

    Raises:
        ConfigError: the variable holds something other than a precision.
    """
    value = os.environ.get(PRECISION_ENV, "").strip().lower()
    if value in ("", Precision.AUTO):
        return None
    try:
        return Precision(value)
    except ValueError:
        allowed = ", ".join(p.value for p in Precision)
        raise ConfigError(f"{PRECISION_ENV}: {value!r} is not a precision; allowed: {allowed} (or unset)") from None


class OptimizerName(StrEnum):
    """Optimisers: SGD with Nesterov momentum 0.9 (DART, nnU-Net), Adam, AdamW."""

    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class ScheduleName(StrEnum):
    """Learning-rate schedules (see :mod:`medtransfer.train.schedules`)."""

    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"
    POLY = "poly"


def parse_option(enum: type[StrEnum], value: Any, what: str) -> StrEnum:
    """``value`` as a member of ``enum`` or a :class:`ConfigError` with did-you-mean suggestions."""
    try:
        return enum(str(value).lower())
    except ValueError:
        raise ConfigError(did_you_mean(str(value), [m.value for m in enum], what=what)) from None


# the whole-number options and their least value; the real-valued ones and whether they must be > 0 (else >= 0)
_INT_MINIMUM = {
    "epochs": 1,
    "steps_per_epoch": 1,
    "batch_size": 1,
    "step_epoch": 0,
    "warmup_steps": 0,
    "seed": 0,
    "checkpoint_every_steps": 0,
    "val_every": 0,
    "num_workers": 0,
}
_REAL_SIGN = {"lr": True, "weight_decay": False, "gamma": True, "poly_exponent": True, "grad_clip": False}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained; runs differ by config, never by subclass.

    Attributes:
        epochs: number of epochs.
        steps_per_epoch: optimiser steps per epoch (batches are sampled, nnU-Net style).
        batch_size: images (slices or patches) per step, over all processes.
        lr: base learning rate; parameter groups scale it by their ``lr_scale``.
        optimizer: ``sgd`` (Nesterov, momentum 0.9), ``adam`` or ``adamw``.
        weight_decay: L2 / decoupled weight decay.
        schedule: ``constant``, ``step`` (DART: x ``gamma`` at ``step_epoch``), ``cosine`` or ``poly``.
        step_epoch: epoch at which the step schedule multiplies the lr by ``gamma``.
        gamma: factor of the step schedule.
        poly_exponent: exponent of the poly schedule (nnU-Net: 0.9).
        warmup_steps: linear warm-up steps before the schedule.
        loss: registry name of the loss (``ce``, ``bce``, ``dice``, ``dice_ce``, ``blob_dice_ce``, ``dice_topk``).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        channels_last: memory format; ``None`` follows the precision choice (on for the fast paths, and for
            fp32 on CPU when the model is BatchNorm-only).
        compile: run the training step through ``torch.compile`` (inductor; checkpoints stay plain); off by
            default: 4-9% faster per step on a 2-core CPU, but about a minute of compilation per input shape.
        seed: seed of every random number generator of the run.
        checkpoint_every_steps: write the resumable ``last`` checkpoint every this many steps (0: epoch ends).
        val_every: validate every this many epochs (0: never).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        grad_clip: max gradient norm (0: off).
        num_workers: data-loader worker processes (0 keeps the run bit-reproducible on resume).
        progress: show a tqdm bar per epoch.
    """

    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: OptimizerName = OptimizerName.SGD
    weight_decay: float = 0.0
    schedule: ScheduleName = ScheduleName.STEP
    step_epoch: int = 15
    gamma: float = 0.1
    poly_exponent: float = 0.9
    warmup_steps: int = 0
    loss: str = "bce"
    precision: Precision = Precision.AUTO
    channels_last: bool | None = None
    compile: bool = False
    seed: int = 0
    checkpoint_every_steps: int = 50
    val_every: int = 1
    device: str = "auto"
    grad_clip: float = 0.0
    num_workers: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", parse_option(OptimizerName, self.optimizer, "optimizer"))
        object.__setattr__(self, "schedule", parse_option(ScheduleName, self.schedule, "schedule"))
        object.__setattr__(self, "precision", parse_option(Precision, self.precision, "precision"))
        if self.precision == Precision.AUTO:
            pinned_precision()  # a bad MEDTRANSFER_PRECISION fails here, before a run folder is written
        for name, low in _INT_MINIMUM.items():
            value = getattr(self, name)
            if isinstance(value, bool):
                pass  # refused below: true/false is not a count
            elif isinstance(value, numbers.Integral):
                value = int(value)  # numpy integers too
            elif isinstance(value, numbers.Real) and float(value).is_integer():
                value = int(value)
            object.__setattr__(self, name, value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"train config: {name} must be a whole number, got {value!r}")
            if value < low:
                raise ConfigError(f"train config: {name} must be >= {low}, got {value!r}")
        for name, positive in _REAL_SIGN.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"train config: {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value) if not isinstance(value, int) else value)
            if (value <= 0) if positive else (value < 0):
                raise ConfigError(f"train config: {name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
        for name in ("compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"train config: {name} must be true or false, got {getattr(self, name)!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ConfigError(f"train config: channels_last must be true, false or null, got {self.channels_last!r}")
        for name in ("device", "loss"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"train config: {name} must be a name, got {getattr(self, name)!r}")

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run."""
        return self.epochs * self.steps_per_epoch

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
        """Build from a mapping (unknown keys are an error with suggestions); ``overrides`` win."""
        values = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                raise ConfigError(did_you_mean(key, names, what="train config key"))
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping (the whole file, or its ``train:`` section)."""
        data = read_yaml_mapping(path, what="train options")
        return cls.from_dict(data.get("train", data), **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict (enums as strings)."""
        out = dataclasses.asdict(self)
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in out.items()}

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
