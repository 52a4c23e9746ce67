"""A transfer strategy is data: a :class:`StrategyConfig` says what to initialise, what to train, how fast.

One :class:`Strategy` class executes every config; the registry (:mod:`medtransfer.transfer.registry`) maps
names and user parameters to configs.  Everything is expressed in the model's named stages
(``model.stage_names()``, ordered from input to output), so "first k" and "last k" mean one thing everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..models.loading import LoadAudit, load_pretrained
from .bn import BNMode, freeze_norm_stats, norm_layers, release_norm_stats
from .init import mean_var_init, reset_parameters

log = logging.getLogger(__name__)


class Init(StrEnum):
    """Where the starting weights come from."""

    PRETRAINED = "pretrained"
    SCRATCH = "scratch"
    MEAN_VAR = "mean_var"


class Train(StrEnum):
    """Which stages are trained."""

    ALL = "all"
    FIRST = "first"  # the first k stages
    LAST = "last"  # the last k stages (growing by one every ``unfreeze_every`` epochs if set)
    DECODER = "decoder"  # everything but the encoder
    NORM = "norm"  # only normalisation layers (affine parameters and statistics)


@dataclass(frozen=True)
class StrategyConfig:
    """Everything a strategy decides.

    Attributes:
        init: start from the pretrained weights, from scratch, or from mean-var draws of the pretrained ones.
        keep_lowest: with pretrained init, keep pretrained weights only in the lowest ``keep_lowest`` stages and
            re-initialise the rest (Transfusion's hybrid); ``None`` keeps all.
        reinit: stages re-initialised after loading (e.g. ``("head",)``).
        train: which stages are trained; ``k`` is the number of stages for ``first``/``last``.
        lr_decay: discriminative learning rates: stage ``i`` of ``n`` gets ``lr_decay ** (n - 1 - i)``.
        unfreeze_every: gradual unfreezing: with ``train="last"``, one more stage every this many epochs.
        bn_mode: norm layers of frozen stages keep frozen statistics or adapt them.
    """

    init: Init = Init.PRETRAINED
    keep_lowest: int | None = None
    reinit: tuple[str, ...] = ()
    train: Train = Train.ALL
    k: int | None = None
    lr_decay: float | None = None
    unfreeze_every: int | None = None
    bn_mode: BNMode = BNMode.FROZEN


@dataclass(frozen=True)
class StrategyPlan:
    """What :meth:`Strategy.prepare` did.

    Attributes:
        param_groups: optimizer groups, one per stage that is (or will become) trainable:
            ``{"params": [...], "lr_scale": float, "name": stage}``; multiply the base lr by ``lr_scale``
            (see :meth:`optimizer_groups`).  Frozen parameters have ``requires_grad=False`` and no gradient,
            so optimisers leave them untouched.
        description: JSON-serialisable account of the strategy for the run folder: per stage ``trainable``,
            ``trainable_params``/``params``, ``init`` (``pretrained``/``fresh``/``mean_var``), ``lr_scale`` and
            ``norm_stats`` (``train``, ``frozen`` or ``adapt``); plus the config and the load audit.
        audit: the :class:`LoadAudit` of the pretrained weights, if any were loaded.
    """

    param_groups: list[dict[str, Any]]
    description: dict[str, Any]
    audit: LoadAudit | None = None

    def optimizer_groups(self, lr: float, **defaults: Any) -> list[dict[str, Any]]:
        """Param groups with ``lr = lr * lr_scale`` (plus ``defaults`` such as weight decay)."""
        return [{**defaults, **g, "lr": lr * g["lr_scale"]} for g in self.param_groups]


@dataclass(frozen=True)
class Strategy:
    """A named, parametrised transfer strategy (build with :func:`medtransfer.transfer.create_strategy`).

    Example:
        >>> from medtransfer.models import create_model
        >>> from medtransfer.transfer import create_strategy
        >>> source = create_model("unet", features=4, depth=2).state_dict()
        >>> model = create_model("unet", features=4, depth=2)
        >>> plan = create_strategy("first_k:2").prepare(model, source)
        >>> [g["name"] for g in plan.param_groups]
        ['input', 'enc1']
    """

    name: str
    params: Any
    config: StrategyConfig = field(default_factory=StrategyConfig)

    @property
    def spec(self) -> str:
        """The canonical ``NAME:key=value,...`` string of this strategy."""
        args = ",".join(f"{k}={v}" for k, v in asdict(self.params).items())
        return f"{self.name}:{args}" if args else self.name

    def prepare(
        self,
        model: nn.Module,
        pretrained_state: dict | str | None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> StrategyPlan:
        """Initialise ``model`` in place, set ``requires_grad`` and norm modes, return the optimiser plan.

        Args:
            model: a model with named stages (any :mod:`medtransfer.models` model).
            pretrained_state: state dict, checkpoint dict or path of the source weights; ignored by ``scratch``.
            seed: seeds re-initialisation and mean-var draws (reproducible strategies).
            generator: alternative to ``seed`` for the mean-var draws.

        Raises:
            ConfigError: the strategy needs pretrained weights and none were given, or ``k`` does not fit.
        """
        cfg, stages = self.config, _stages(model)
        self._check_k(stages)
        audit = self._initialise(model, pretrained_state, stages, seed, generator)
        trainable = self.trainable_stages(model, epoch=0)
        if cfg.train is Train.NORM and not trainable:
            name = getattr(model, "model_name", None) or type(model).__name__
            raise ConfigError(
                f"strategy {self.spec}: {name} has no normalisation layer with affine parameters, so there is nothing "
                "to train; choose a strategy that trains weights (e.g. last_k, frozen_encoder, full)"
            )
        self._apply_trainable(model, stages, trainable)
        groups = self._param_groups(model, stages)
        description = self._describe(model, stages, trainable, audit)
        frozen = [s for s in stages if s not in trainable]
        norms = f" (their norm statistics {cfg.bn_mode.value})" if frozen else ""
        log.info("strategy %s: trainable stages %s; frozen %s%s", self.spec, trainable, frozen or "none", norms)
        return StrategyPlan(groups, description, audit)

    def on_epoch_start(self, model: nn.Module, epoch: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Gradual unfreezing at the start of ``epoch`` (0-based); no-op for other strategies.

        Stateless (depends only on ``epoch``), so resumed runs land in the same state.  Returns ``True`` if the
        trainable set changed.  The optimiser already holds every stage that will ever train (see
        :attr:`StrategyPlan.param_groups`), so it needs no change.
        """
        if self.config.unfreeze_every is None:
            return False
        stages = _stages(model)
        trainable = self.trainable_stages(model, epoch)
        before = [s for s, m in stages.items() if any(p.requires_grad for p in m.parameters())]
        if before == trainable:
            return False
        self._apply_trainable(model, stages, trainable)
        log.info("epoch %d: unfroze stages, now training %s", epoch, trainable)
        return True

    def trainable_stages(self, model: nn.Module, epoch: int = 0) -> list[str]:
        """Names of the stages trained at ``epoch`` (for ``train="norm"``: the stages holding norm layers)."""
        stages, cfg = _stages(model), self.config
        names = list(stages)
        if cfg.train is Train.FIRST:
            return names[: cfg.k]
        if cfg.train is Train.LAST:
            k = cfg.k + (epoch // cfg.unfreeze_every if cfg.unfreeze_every else 0)
            return names[max(len(names) - k, 0) :]
        if cfg.train is Train.DECODER:
            encoder = set(model.encoder.stage_modules())
            return [n for n in names if n not in encoder]
        if cfg.train is Train.NORM:  # stages whose norm layers have affine parameters (InstanceNorm may have none)
            return [n for n in names if any(p.numel() for layer in norm_layers(stages[n]) for p in layer.parameters())]
        return names

    # -- steps of prepare -------------------------------------------------------------------------------

    def _check_k(self, stages: dict[str, nn.Module]) -> None:
        cfg, n = self.config, len(stages)
        for what, value, low in (("k", cfg.k, 1), ("k (stages kept)", cfg.keep_lowest, 0)):
            if value is not None and not low <= value <= n:
                raise ConfigError(
                    f"strategy {self.spec}: {what}={value} must be in [{low}, {n}] for this model, "
                    f"whose stages are {list(stages)}"
                )

    def _initialise(self, model, pretrained_state, stages, seed, generator) -> LoadAudit | None:
        cfg = self.config
        if cfg.init is Init.SCRATCH:
            if seed is not None:
                reset_parameters(stages.values(), seed, getattr(model, "init_weights", None))
            return None
        if pretrained_state is None:
            raise ConfigError(f"strategy {self.name!r} starts from pretrained weights; give a checkpoint (--init)")
        audit = load_pretrained(model, pretrained_state)
        if cfg.init is Init.MEAN_VAR:
            if generator is None and seed is not None:
                generator = torch.Generator().manual_seed(seed)
            mean_var_init(model, generator, only=set(audit.loaded))  # a tensor not loaded keeps its fresh init
        names = list(stages)
        fresh = list(cfg.reinit)
        if cfg.keep_lowest is not None:
            fresh += names[cfg.keep_lowest :]
        unknown = [s for s in fresh if s not in stages]
        if unknown:
            raise ConfigError(f"strategy {self.spec}: unknown stages {unknown}; the model has {names}")
        reset_parameters([stages[s] for s in dict.fromkeys(fresh)], seed, getattr(model, "init_weights", None))
        return audit

    def _apply_trainable(self, model: nn.Module, stages: dict[str, nn.Module], trainable: list[str]) -> None:
        norm_only = self.config.train is Train.NORM
        for name, module in stages.items():
            on = name in trainable
            for param in module.parameters():
                param.requires_grad_(on and not norm_only)
            if norm_only:
                for layer in norm_layers(module):
                    for param in layer.parameters():
                        param.requires_grad_(True)
            frozen_norms = not on and self.config.bn_mode is BNMode.FROZEN
            if frozen_norms:
                freeze_norm_stats(module)
            else:
                release_norm_stats(module, training=model.training)

    def _param_groups(self, model: nn.Module, stages: dict[str, nn.Module]) -> list[dict[str, Any]]:
        cfg, names = self.config, list(stages)
        ever = self.trainable_stages(model, epoch=10**9) if cfg.unfreeze_every else None
        groups = []
        for i, (name, module) in enumerate(stages.items()):
            params = [p for p in module.parameters() if p.requires_grad or (ever is not None and name in ever)]
            if params:
                scale = cfg.lr_decay ** (len(names) - 1 - i) if cfg.lr_decay is not None else 1.0
                groups.append({"params": params, "lr_scale": float(scale), "name": name})
        return groups

    def _describe(self, model, stages, trainable, audit) -> dict[str, Any]:
        cfg, groups = self.config, {g["name"]: g["lr_scale"] for g in self._param_groups(model, stages)}
        fresh = set(cfg.reinit) | (set(list(stages)[cfg.keep_lowest :]) if cfg.keep_lowest is not None else set())
        fresh |= _unloaded_stages(model, audit)
        rows = []
        for name, module in stages.items():
            n_params = sum(p.numel() for p in module.parameters())
            n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
            rows.append(
                {
                    "stage": name,
                    "trainable": name in trainable,
                    "trainable_params": n_train,
                    "params": n_params,
                    "init": _stage_init(cfg.init, name in fresh),
                    "lr_scale": groups.get(name),
                    "norm_stats": "train" if name in trainable else cfg.bn_mode.value,
                }
            )
        return {
            "strategy": self.name,
            "spec": self.spec,
            "params": asdict(self.params),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "stages": rows,
            "load_audit": None if audit is None else audit.to_dict(),
        }


def _stages(model: nn.Module) -> dict[str, nn.Module]:
    if not hasattr(model, "stage_modules"):
        raise ConfigError(f"{type(model).__name__} has no named stages; use a medtransfer.models model")
    return model.stage_modules()


def _unloaded_stages(model: nn.Module, audit: LoadAudit | None) -> set[str]:
    """Stages holding tensors none of which came from the source (all missing from it or of another shape: e.g. a
    classification source's decoder and head in a segmentation U-Net): they start from their fresh init."""
    if audit is None or not hasattr(model, "parameter_stages"):
        return set()
    owner = model.parameter_stages()
    held = set(owner.values())
    return held - {owner[k] for k in audit.loaded if k in owner}


def _stage_init(init: Init, fresh: bool) -> str:
    """How a stage was initialised: ``pretrained``, ``fresh`` (random: re-initialised, or none of its tensors in the
    source) or ``mean_var`` (Transfusion draws)."""
    if init is Init.SCRATCH or fresh:
        return "fresh"
    return "mean_var" if init is Init.MEAN_VAR else "pretrained"
