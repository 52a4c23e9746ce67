"""The registered strategies: each is a parameter dataclass plus a rule turning it into a StrategyConfig.

Parameters carry their documentation in ``field(metadata={"help": ...})``; ``medtransfer strategies`` and
:func:`medtransfer.transfer.list_strategies` show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from .bn import BNMode
from .registry import StrategyEntry, add_strategy, register_strategy
from .spottune import DETAILS as SPOTTUNE_DETAILS
from .spottune import SpotTuneParams, applied_spottune
from .strategy import Init, StrategyConfig, Train

BN_HELP = "norm layers of frozen stages: 'frozen' (eval mode, statistics fixed) or 'adapt' (statistics update)"


def _bn_field():
    return field(default="frozen", metadata={"help": BN_HELP})


def _positive(name: str, value: float, *, upper: float | None = None) -> None:
    if value <= 0 or (upper is not None and value > upper):
        allowed = f"in (0, {upper}]" if upper is not None else "> 0"
        raise ConfigError(f"strategy parameter {name} must be {allowed}, got {value}")


@dataclass(frozen=True)
class NoParams:
    """No parameters."""


@dataclass(frozen=True)
class KParams:
    k: int = field(default=1, metadata={"help": "number of stages (counted in model.stage_names() order)"})
    bn_mode: str = _bn_field()


@dataclass(frozen=True)
class BNParams:
    bn_mode: str = _bn_field()


@dataclass(frozen=True)
class DiscriminativeParams:
    decay: float = field(default=0.5, metadata={"help": "lr of stage i of n is lr * decay**(n-1-i) (head: lr)"})


@dataclass(frozen=True)
class GradualParams:
    every: int = field(default=1, metadata={"help": "unfreeze one more stage (output to input) every N epochs"})
    start: int = field(default=1, metadata={"help": "stages trained at epoch 0, counted from the output"})
    bn_mode: str = _bn_field()


@dataclass(frozen=True)
class HybridParams:
    k: int = field(default=2, metadata={"help": "lowest stages keeping pretrained weights (0 = all fresh)"})


@register_strategy("scratch", NoParams, "random initialisation, train everything (the control)")
def _scratch(p: NoParams) -> StrategyConfig:
    return StrategyConfig(init=Init.SCRATCH)


@register_strategy("full", NoParams, "load the pretrained weights and fine-tune every stage")
def _full(p: NoParams) -> StrategyConfig:
    return StrategyConfig()


@register_strategy("first_k", KParams, "pretrained; train only the first k stages (DART 'first layers': k=1)")
def _first_k(p: KParams) -> StrategyConfig:
    _positive("k", p.k)
    return StrategyConfig(train=Train.FIRST, k=p.k, bn_mode=BNMode.parse(p.bn_mode))


@register_strategy("last_k", KParams, "pretrained; train only the last k stages (DART 'last layers': k=1)")
def _last_k(p: KParams) -> StrategyConfig:
    _positive("k", p.k)
    return StrategyConfig(train=Train.LAST, k=p.k, bn_mode=BNMode.parse(p.bn_mode))


@register_strategy("frozen_encoder", BNParams, "pretrained; freeze the encoder, train decoder and head")
def _frozen_encoder(p: BNParams) -> StrategyConfig:
    return StrategyConfig(train=Train.DECODER, bn_mode=BNMode.parse(p.bn_mode))


@register_strategy("bn_only", NoParams, "pretrained; train only normalisation layers (affine and statistics; Karani)")
def _bn_only(p: NoParams) -> StrategyConfig:
    return StrategyConfig(train=Train.NORM)


@register_strategy("discriminative", DiscriminativeParams, "pretrained; all stages, lr decaying towards the input")
def _discriminative(p: DiscriminativeParams) -> StrategyConfig:
    _positive("decay", p.decay, upper=1.0)
    return StrategyConfig(lr_decay=float(p.decay))


@register_strategy(
    "gradual_unfreeze",
    GradualParams,
    "pretrained; train the last stages, unfreeze one more stage towards the input every N epochs (ULMFiT)",
)
def _gradual(p: GradualParams) -> StrategyConfig:
    _positive("every", p.every)
    _positive("start", p.start)
    return StrategyConfig(train=Train.LAST, k=p.start, unfreeze_every=p.every, bn_mode=BNMode.parse(p.bn_mode))


@register_strategy(
    "mean_var",
    NoParams,
    "Transfusion mean-var init: each layer drawn from N(mean, var) of the pretrained layer; train everything",
)
def _mean_var(p: NoParams) -> StrategyConfig:
    return StrategyConfig(init=Init.MEAN_VAR)


@register_strategy(
    "hybrid_k",
    HybridParams,
    "Transfusion hybrid: pretrained weights for the lowest k stages, fresh init above; train everything",
)
def _hybrid_k(p: HybridParams) -> StrategyConfig:
    if p.k < 0:
        raise ConfigError(f"strategy parameter k must be >= 0, got {p.k}")
    return StrategyConfig(keep_lowest=p.k)


@register_strategy("reinit_head", NoParams, "pretrained; re-initialise the head, fine-tune every stage")
def _reinit_head(p: NoParams) -> StrategyConfig:
    return StrategyConfig(reinit=("head",))


add_strategy(
    StrategyEntry(
        "spottune",
        SpotTuneParams,
        None,
        "SpotTUnet: a learned per-stage choice between a frozen and a fine-tuned copy of the pretrained stage",
        prepare=applied_spottune,
        details=SPOTTUNE_DETAILS,
    )
)
