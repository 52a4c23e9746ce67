"""Normalisation layers of frozen stages: frozen statistics or adapting statistics (an explicit choice).

* ``frozen``: the layer stays in eval mode even when ``model.train()`` is called (as ``timm.utils.freeze`` and
  SMP's ``freeze_encoder`` do): running statistics do not change and the layer normalises with them;
* ``adapt``: the layer follows the model's mode, so running statistics of frozen layers still update during
  fine-tuning (the DART code's behaviour: the affine parameters are frozen, the statistics are not).

The eval mode is made sticky by an instance-level ``train`` override, so ``layer.training`` is ``False`` after
``model.train()`` and the override survives ``copy.deepcopy``; :func:`release_norm_stats` removes it.
"""

from __future__ import annotations

import types
from enum import StrEnum

from torch import nn

from ..errors import ConfigError, did_you_mean

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class BNMode(StrEnum):
    """What the normalisation layers of frozen stages do during fine-tuning."""

    FROZEN = "frozen"
    ADAPT = "adapt"

    @classmethod
    def parse(cls, value: str | BNMode) -> BNMode:
        try:
            return cls(str(value).lower())
        except ValueError as err:
            raise ConfigError(did_you_mean(str(value), [m.value for m in cls], what="bn_mode")) from err


def norm_layers(module: nn.Module) -> list[nn.Module]:
    """All normalisation layers (batch, instance, group, layer norm) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, NORM_TYPES)]


def _stay_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_norm_stats(module: nn.Module) -> int:
    """Put every norm layer of ``module`` in eval mode for good (survives ``.train()``).  Returns the count."""
    layers = norm_layers(module)
    for layer in layers:
        layer.train = types.MethodType(_stay_eval, layer)
        nn.Module.train(layer, False)
    return len(layers)


def release_norm_stats(module: nn.Module, training: bool | None = None) -> None:
    """Undo :func:`freeze_norm_stats`; the layers take ``training`` (default: the mode of ``module``)."""
    training = module.training if training is None else training
    for layer in norm_layers(module):
        if "train" in layer.__dict__:
            del layer.__dict__["train"]
        layer.train(training)


def has_frozen_stats(layer: nn.Module) -> bool:
    """Whether ``layer`` was frozen by :func:`freeze_norm_stats`."""
    return "train" in layer.__dict__
