"""Torch datasets over the samplers of :mod:`medtransfer.data.samplers`.

Samples are dicts ``{"image": (C, H, W) or (C, D, H, W) float32 tensor, "label": (H, W) or (D, H, W) int64 tensor,
"case": id, ...}`` that torch's default collate batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .samplers import PatchSampler, SliceSampler


def to_torch(sample: dict[str, Any]) -> dict[str, Any]:
    """Convert a sampler's numpy sample to tensors (image float32, label int64)."""
    out = dict(sample)
    out["image"] = torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32))
    out["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"], dtype=np.int64))
    return out


class SampledDataset(IterableDataset):
    """``num_samples`` random samples per epoch from a sampler, split across ``DataLoader`` workers.

    The stream depends only on ``seed``, the epoch (:meth:`set_epoch`) and the worker index, so a run is reproducible.

    Example:
        >>> from medtransfer.data.samplers import InMemoryCase
        >>> case = InMemoryCase("a", np.zeros((1, 4, 5, 6), np.float32), np.ones((4, 5, 6), np.uint8))
        >>> ds = SampledDataset(SliceSampler([case], patch_size=(8, 8)), num_samples=3, seed=0)
        >>> [s["image"].shape for s in ds]
        [torch.Size([1, 8, 8]), torch.Size([1, 8, 8]), torch.Size([1, 8, 8])]
    """

    def __init__(self, sampler: SliceSampler | PatchSampler, num_samples: int, *, seed: int = 0) -> None:
        super().__init__()
        self.sampler, self.num_samples, self.seed, self.epoch = sampler, int(num_samples), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        for _ in range(worker, self.num_samples, workers):
            yield to_torch(self.sampler.sample(rng))


class SliceDataset(Dataset):
    """Every allowed slice of every case of a :class:`SliceSampler` (central crop/pad), in a fixed order.

    For evaluation, or epoch-based training over a slice budget.
    """

    def __init__(self, sampler: SliceSampler) -> None:
        super().__init__()
        self.sampler = sampler
        self.index = [(k, int(i)) for k, allowed in enumerate(sampler.allowed) for i in allowed]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return to_torch(self.sampler.get(*self.index[item]))
