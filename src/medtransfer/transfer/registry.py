"""The strategy registry and the ``NAME[:ARGS]`` spec parser.

``create_strategy("first_k:2")``, ``create_strategy("discriminative:decay=0.5")``,
``create_strategy("gradual_unfreeze:every=2,bn_mode=adapt")`` or ``create_strategy({"name": "first_k", "k": 2})``.
Positional arguments fill the parameters in declaration order.

Most strategies are data (a :class:`StrategyConfig` built from their parameters).  A strategy that changes the
model itself (``spottune`` wraps it) registers a ``prepare`` hook instead; :func:`medtransfer.transfer.apply_strategy`
calls either kind.  An entry lists the fine-tuning tasks it serves (:class:`Task`); asking it for another is a
clear error (:meth:`StrategyEntry.check_task`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ConfigError, did_you_mean
from .strategy import Strategy, StrategyConfig


class Task(StrEnum):
    """The fine-tuning tasks a strategy may serve."""

    SEGMENTATION = "segmentation"
    CLASSIFICATION = "classification"
    TEACHER_STUDENT = "teacher_student"


ALL_TASKS = tuple(Task)


@dataclass(frozen=True)
class StrategyEntry:
    """A registered strategy.

    Attributes:
        name: registry key.
        params_cls: its parameter dataclass (fields with ``metadata["help"]``).
        build: ``params -> StrategyConfig`` for strategies that are data; ``None`` with ``prepare``.
        description: one line for ``medtransfer strategies``.
        prepare: ``(params, model, pretrained, seed) -> AppliedStrategy`` for strategies that replace the model
            or the loss (see :func:`medtransfer.transfer.apply_strategy`); ``None`` for data strategies.
        tasks: the fine-tuning tasks it serves.
        details: a longer explanation, shown by ``medtransfer strategies NAME``.
    """

    name: str
    params_cls: type
    build: Callable[[Any], StrategyConfig] | None
    description: str
    prepare: Callable[..., Any] | None = None
    tasks: tuple[Task, ...] = ALL_TASKS
    details: str = ""

    def check_task(self, task: Task | str) -> None:
        """Raise a :class:`ConfigError` when this strategy cannot serve ``task``."""
        task = Task(task)
        if task not in self.tasks:
            served = ", ".join(t.value for t in self.tasks)
            raise ConfigError(f"strategy {self.name!r} cannot be used for {task.value} (it serves: {served})")

    def parameters(self) -> list[dict[str, Any]]:
        """``[{"name", "type", "default", "help"}, ...]`` in declaration order."""
        return [
            {"name": f.name, "type": str(f.type), "default": f.default, "help": f.metadata.get("help", "")}
            for f in dataclasses.fields(self.params_cls)
        ]


_REGISTRY: dict[str, StrategyEntry] = {}
_CASTS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def register_strategy(name: str, params_cls: type, description: str, **options: Any) -> Callable:
    """Decorator registering ``build(params) -> StrategyConfig`` under ``name``.

    ``options`` are the other :class:`StrategyEntry` fields (``tasks``, ``details``).
    """

    def wrap(build: Callable[[Any], StrategyConfig]) -> Callable[[Any], StrategyConfig]:
        add_strategy(StrategyEntry(name, params_cls, build, description, **options))
        return build

    return wrap


def add_strategy(entry: StrategyEntry) -> None:
    """Register ``entry`` (e.g. a strategy with a ``prepare`` hook)."""
    assert entry.name not in _REGISTRY, f"strategy {entry.name!r} registered twice"
    _REGISTRY[entry.name] = entry


def list_strategies() -> list[StrategyEntry]:
    """Every registered strategy, in registration order (scratch, full, first_k, ...)."""
    _load_builtins()
    return list(_REGISTRY.values())


def get_strategy_entry(name: str) -> StrategyEntry:
    _load_builtins()
    if name not in _REGISTRY:
        raise ConfigError(did_you_mean(name, _REGISTRY, what="strategy"))
    return _REGISTRY[name]


def parse_strategy_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"first_k:2"`` -> ``("first_k", {"k": 2})`` (values cast to the declared types)."""
    if isinstance(spec, Mapping):
        raw = dict(spec)
        name = raw.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"a strategy given as a mapping needs a 'name', got {spec!r}")
        args = dict(raw.pop("params", {}) or {}, **raw)
        positional: list[str] = []
    else:
        name, _, rest = str(spec).strip().partition(":")
        args, positional = {}, []
        for token in filter(None, (t.strip() for t in rest.split(","))):
            key, eq, value = token.partition("=")
            if eq:
                args[key.strip()] = value.strip()
            else:
                positional.append(token)
    entry = get_strategy_entry(name.strip())
    return entry.name, _bind(entry, positional, args)


def _bind(entry: StrategyEntry, positional: list[str], args: dict[str, Any]) -> dict[str, Any]:
    fields = dataclasses.fields(entry.params_cls)
    names = [f.name for f in fields]
    if len(positional) > len(names):
        raise ConfigError(f"strategy {entry.name!r} takes {len(names)} parameter(s) {names}, got {positional}")
    bound = dict(zip(names, positional, strict=False))
    for key, value in args.items():
        if key not in names:
            raise ConfigError(did_you_mean(key, names, what=f"parameter of strategy {entry.name!r}"))
        if key in bound:
            raise ConfigError(f"strategy {entry.name!r}: parameter {key!r} given twice")
        bound[key] = value
    types = {f.name: str(f.type) for f in fields}
    return {key: _cast(entry.name, key, value, types[key]) for key, value in bound.items()}


def _cast(strategy: str, key: str, value: Any, type_name: str) -> Any:
    cast = _CASTS.get(type_name, str)
    try:
        if cast is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return cast(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"strategy {strategy!r}: parameter {key} must be {type_name}, got {value!r}") from err


def create_strategy(spec: str | Mapping[str, Any] | Strategy) -> Strategy:
    """Build a :class:`Strategy` from ``NAME[:ARGS]`` or a mapping (a :class:`Strategy` is returned as is).

    Raises:
        ConfigError: unknown strategy or parameter (with suggestions), or a bad value.

    Example:
        >>> create_strategy("first_k:2").config.k
        2
        >>> create_strategy("discriminative:decay=0.25").config.lr_decay
        0.25
    """
    if isinstance(spec, Strategy):
        return spec
    name, args = parse_strategy_spec(spec)
    entry = _REGISTRY[name]
    if entry.build is None:
        raise ConfigError(
            f"strategy {name!r} changes the model itself; apply it with medtransfer.transfer.apply_strategy"
        )
    params = entry.params_cls(**args)
    return Strategy(name=name, params=params, config=entry.build(params))


def create_params(spec: str | Mapping[str, Any]) -> tuple[StrategyEntry, Any]:
    """The entry named by ``spec`` and its bound parameter dataclass."""
    name, args = parse_strategy_spec(spec)
    entry = _REGISTRY[name]
    return entry, entry.params_cls(**args)


def check_strategy(spec: str | Mapping[str, Any]) -> tuple[StrategyEntry, Any]:
    """:func:`create_params` plus the ranges the strategy's builder checks (``first_k:0`` is refused here, as in a
    run); what needs the model's stages (``first_k:99`` on a 5-stage model) is checked when the strategy is applied.

    Raises:
        ConfigError: unknown name, bad parameter, or a parameter out of its range.
    """
    entry, params = create_params(spec)
    if entry.build is not None:
        entry.build(params)
    return entry, params


def _load_builtins() -> None:
    from . import strategies  # noqa: F401  (registers the built-in strategies on first use)
