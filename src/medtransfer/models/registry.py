"""The model registry: ``create_model(name, **config)``, ``list_models()``, ``register_model``.

Registry keys are lowercase snake_case.  ``create_model`` validates the config keys against the factory's
signature (did-you-mean on typos) and records ``model_name``/``model_config`` on the model so that a checkpoint
stores ``{"name": ..., "config": ...}`` and rebuilds it with ``create_model(name, **config)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its factory, a one-line description and the factory arguments fixed by the name."""

    name: str
    factory: Callable[..., nn.Module]
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        """Config key -> default value (``inspect.Parameter.empty`` when required)."""
        sig = inspect.signature(self.factory)
        return {k: p.default for k, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD and k not in self.fixed}

    def build(self, **config: Any) -> nn.Module:
        return self.factory(**self.fixed, **config)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, description: str = "", **fixed: Any) -> Callable:
    """Decorator registering a model class or factory under ``name``; ``fixed`` arguments are bound to it."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        assert name not in _REGISTRY, f"model {name!r} registered twice"
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        _REGISTRY[name] = ModelSpec(name, factory, doc, dict(fixed))
        return factory

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; unknown names raise :class:`ConfigError` with suggestions."""
    if name not in _REGISTRY:
        raise ConfigError(did_you_mean(name, _REGISTRY, what="model"))
    return _REGISTRY[name]


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the registered model ``name`` with ``config``.

    Common keys: ``spatial_dims`` (2|3), ``in_channels``, ``out_channels``, ``features``, ``depth``, ``norm``
    (``batch``|``instance``|``group``), ``head`` (``segmentation``|``classification``|``restoration``),
    ``num_classes``.  Each model documents the keys it takes.  ``inflate`` (``wacker``|``center``|``i3d``) with
    ``spatial_dims=3`` builds the 2D model and inflates it (see :mod:`medtransfer.models.inflate`), so a
    Wacker-style slice-wise 3D model is rebuilt from its checkpoint config like any other.

    Raises:
        ConfigError: unknown model name or config key.

    Example:
        >>> model = create_model("unet", spatial_dims=2, in_channels=1, out_channels=2, features=8, depth=2)
        >>> model.model_name, model.model_config["features"]
        ('unet', 8)
    """
    spec = get_model_spec(name)
    allowed = spec.parameters()
    build = dict(config)
    inflate = build.pop("inflate", None)
    for key in build:
        if key not in allowed:
            raise ConfigError(did_you_mean(key, [*allowed, "inflate"], what=f"config key of model {name!r}"))
    if inflate is not None:
        model = _create_inflated(spec, inflate, build)
    else:
        model = spec.build(**build)
    model.model_name = name
    model.model_config = dict(config)
    return model


def _create_inflated(spec: ModelSpec, mode: str, config: dict[str, Any]) -> nn.Module:
    from .inflate import inflate_2d_to_3d

    if config.get("spatial_dims", 3) != 3:
        raise ConfigError(f"inflate={mode!r} builds a 3D model; spatial_dims must be 3, got {config['spatial_dims']}")
    return inflate_2d_to_3d(spec.build(**{**config, "spatial_dims": 2}), mode)
