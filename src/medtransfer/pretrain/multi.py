"""Med3D-style multi-dataset pretraining (Chen, Ma & Zheng 2019): one shared encoder, one decoder + head per
dataset, batches drawn across the datasets.  Only the shared encoder transfers.

Every branch is the decoder and head of the same registered architecture (built with the dataset's number of
classes), so the encoder's parameter names are exactly those of a single-task model: a multi-dataset
checkpoint loads into any model of that architecture with :func:`medtransfer.models.load_pretrained`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError, did_you_mean


class Mixing(StrEnum):
    """How the items of an epoch are spread over the datasets."""

    PROPORTIONAL = "proportional"  # by dataset size
    BALANCED = "balanced"  # round-robin: every dataset equally often


class MultiHeadModel(nn.Module):
    """Shared encoder, ``branches[name] = {decoder, head}`` per dataset.

    Args:
        model_name: registry name of the architecture (``unet``, ``resnet18_unet``, ...).
        config: its config without ``out_channels``/``head``.
        classes: dataset name -> number of output channels of its head.
    """

    def __init__(self, model_name: str, config: Mapping[str, Any], classes: Mapping[str, int]) -> None:
        from ..models import create_model

        super().__init__()
        if len(classes) < 1:
            raise ConfigError("multi-dataset pretraining needs at least one dataset")
        self.names = list(classes)
        self.branches = nn.ModuleDict()
        self.encoder: nn.Module | None = None
        for name, n_out in classes.items():
            model = create_model(model_name, **{**config, "out_channels": int(n_out), "head": "segmentation"})
            if self.encoder is None:
                self.encoder = model.encoder
                self.spec = {"name": model_name, "config": dict(model.model_config)}
                self.stage_names = model.stage_names()
            self.branches[name] = nn.ModuleDict({"decoder": model.decoder, "head": model.head})

    def branch(self, name: str) -> nn.ModuleDict:
        if name not in self.branches:
            raise ConfigError(did_you_mean(name, self.names, what="dataset branch"))
        return self.branches[name]

    def forward_features(self, features: Sequence[torch.Tensor], name: str) -> torch.Tensor:
        branch = self.branch(name)
        return branch["head"](branch["decoder"](features))

    def forward(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        """Logits of the branch ``name`` (default: the first dataset)."""
        return self.forward_features(self.encoder(x), name or self.names[0])

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The shared encoder under the single-model key names (``encoder.*``)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("encoder.")}


class MultiSourceDataset(Dataset):
    """The union of several datasets; items carry ``dataset`` (the branch index).

    Args:
        datasets: name -> map-style dataset of ``{"image", "label"}`` items (same image size).
        mixing: ``proportional`` (every item once per pass) or ``balanced`` (round-robin over datasets, small
            ones repeated).
    """

    def __init__(self, datasets: Mapping[str, Dataset], mixing: str | Mixing = Mixing.BALANCED) -> None:
        try:
            self.mixing = Mixing(str(mixing))
        except ValueError:
            raise ConfigError(did_you_mean(str(mixing), [m.value for m in Mixing], what="mixing")) from None
        self.names, self.datasets = list(datasets), list(datasets.values())
        self.sizes = [len(d) for d in self.datasets]
        if not self.datasets or min(self.sizes) < 1:
            raise ConfigError(f"every dataset of multi-dataset pretraining needs items, got sizes {self.sizes}")
        self.offsets = torch.tensor([0, *self.sizes]).cumsum(0).tolist()

    def __len__(self) -> int:
        if self.mixing is Mixing.BALANCED:
            return max(self.sizes) * len(self.sizes)
        return sum(self.sizes)

    def locate(self, i: int) -> tuple[int, int]:
        """``(dataset index, item index)`` of global item ``i``."""
        if self.mixing is Mixing.BALANCED:
            d = i % len(self.sizes)
            return d, (i // len(self.sizes)) % self.sizes[d]
        d = next(k for k in range(len(self.sizes)) if i < self.offsets[k + 1])
        return d, i - self.offsets[d]

    def __getitem__(self, i: int) -> dict:
        d, j = self.locate(i)
        return {**self.datasets[d][j], "dataset": d}


class BranchDataset(Dataset):
    """One dataset's items tagged with its branch index (held-out data of one branch)."""

    def __init__(self, dataset: Dataset, index: int) -> None:
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "dataset": self.index}
