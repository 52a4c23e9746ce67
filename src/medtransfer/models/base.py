"""The contract every medtransfer model follows: encoder, decoder, head and *named stages*.

A stage is a named group of layers ordered from the input to the output (``input``, ``enc1``, ...,
``bottleneck``, ``dec3``, ..., ``dec1``, ``head``).  Transfer strategies speak only in stages, so "the first k
layers" or "the last k layers" mean the same thing for every architecture (as ``group_matcher`` does in timm).
Every parameter belongs to exactly one stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn


class Encoder(nn.Module):
    """Base encoder: ``stages`` in order; ``forward`` returns the output of every stage.

    Attributes:
        out_channels: channels of each stage's output, in stage order.
    """

    out_channels: tuple[int, ...] = ()

    def stage_modules(self) -> dict[str, nn.Module]:
        return dict(self.stages.items())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages.values():
            x = stage(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    """Base decoder: takes the encoder's feature list and returns one feature map for the head."""

    out_channels: int = 0

    def stage_modules(self) -> dict[str, nn.Module]:
        return dict(self.stages.items()) if hasattr(self, "stages") else {}


class SkipDecoder(Decoder):
    """A U-Net decoder: ``stages`` (deepest first) each up-sample and merge the encoder skip of their level."""

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for skip, stage in zip(reversed(features[:-1]), self.stages.values(), strict=True):
            x = stage(x, skip)
        return x


class NoDecoder(Decoder):
    """Decoder of encoder-only models (classification): passes on the deepest feature map."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return features[-1]


class StagedModel(nn.Module):
    """Encoder -> decoder -> head with named stages (the base class of every registered model).

    Attributes:
        spatial_dims: 2 or 3.
        model_name, model_config: set by :func:`medtransfer.models.create_model` so a checkpoint can rebuild
            the model (``create_model(model.model_name, **model.model_config)``).
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, head: nn.Module, *, spatial_dims: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.spatial_dims = spatial_dims
        self.model_name: str | None = None
        self.model_config: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, C, D, H, W) -> head output."""
        return self.head(self.decoder(self.encoder(x)))

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(output, encoder_features)`` (as timm's ``forward_intermediates``)."""
        features = self.encoder(x)
        return self.head(self.decoder(features)), features

    def stage_modules(self) -> dict[str, nn.Module]:
        """Stage name -> module, ordered from input to output."""
        return {**self.encoder.stage_modules(), **self.decoder.stage_modules(), "head": self.head}

    def stage_names(self) -> list[str]:
        """Stage names ordered from input to output."""
        return list(self.stage_modules())

    def parameter_stages(self) -> dict[str, str]:
        """Parameter (and buffer) name -> stage name, covering every entry of ``state_dict()``."""
        owner = {}
        for stage, module in self.stage_modules().items():
            for tensor in _tensors(module):
                owner[id(tensor)] = stage
        names = dict(self.named_parameters())
        names.update(self.named_buffers())
        mapping = {name: owner[id(t)] for name, t in names.items() if id(t) in owner}
        unassigned = sorted(set(names) - set(mapping))
        assert not unassigned, f"{type(self).__name__}: tensors outside any stage: {unassigned[:5]}"
        return mapping

    def group_matcher(self) -> dict[str, list[str]]:
        """Stage name -> parameter names (timm's ``group_matcher`` idea, resolved to explicit names)."""
        groups: dict[str, list[str]] = {name: [] for name in self.stage_names()}
        for param, stage in self.parameter_stages().items():
            groups[stage].append(param)
        return groups

    def init_weights(self, module: nn.Module) -> None:
        """Apply this model's own initialisation to ``module`` (the model or one of its stages) in place.

        Transfer strategies that re-initialise stages (``scratch`` with a seed, ``hybrid_k``, ``reinit_head``)
        reset them to PyTorch's defaults and then call this, so that a model with an initialisation of its own
        (nnU-Net's He init and zeroed residual norms) keeps it.  The default keeps PyTorch's defaults.
        """


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()
