"""Resumable, deterministic batches from a map-style dataset.

The indices of step ``s`` of epoch ``e`` are a pure function of ``(seed, e, s)``: the epoch's index stream is a
concatenation of random permutations drawn from a generator seeded by ``(seed, e)``.  Resuming therefore needs
only ``(epoch, step)`` to continue exactly where a killed run stopped.  Under DDP every rank takes a disjoint
share of each global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate


class StepBatchSampler:
    """Global batch indices per ``(epoch, step)``.

    Args:
        num_items: length of the dataset.
        batch_size: global batch size (over all ranks).
        steps_per_epoch: batches per epoch.
        seed: run seed.
        rank: this process's rank; ``world_size``: number of processes.

    Example:
        >>> sampler = StepBatchSampler(10, batch_size=4, steps_per_epoch=5, seed=0)
        >>> sampler.indices(epoch=0, step=0) == sampler.indices(epoch=0, step=0)
        True
    """

    def __init__(
        self, num_items: int, batch_size: int, steps_per_epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_items < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.num_items, self.batch_size, self.steps_per_epoch = num_items, batch_size, steps_per_epoch
        self.seed, self.rank, self.world_size = seed, rank, world_size

    @functools.lru_cache(maxsize=2)  # noqa: B019  (tiny cache keyed by epoch; the sampler lives as long as a run)
    def _epoch_stream(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        needed = self.batch_size * self.steps_per_epoch
        reps = -(-needed // self.num_items)
        return torch.cat([torch.randperm(self.num_items, generator=generator) for _ in range(reps)])[:needed]

    def global_indices(self, epoch: int, step: int) -> list[int]:
        """Indices of the whole (all-rank) batch of ``step`` in ``epoch``."""
        start = step * self.batch_size
        return self._epoch_stream(epoch)[start : start + self.batch_size].tolist()

    def indices(self, epoch: int, step: int) -> list[int]:
        """This rank's share of the batch."""
        return self.global_indices(epoch, step)[self.rank :: self.world_size]


class TrainBatches:
    """Batches of a map-style dataset for ``(epoch, step)``; its position is the only state it needs.

    Args:
        dataset: map-style dataset of dicts (``{"image", "label", ...}``).
        sampler: a :class:`StepBatchSampler`.
        num_workers: data-loader workers; 0 keeps resumed runs bit-identical (worker seeds are not saved).
    """

    def __init__(self, dataset: Dataset, sampler: StepBatchSampler, num_workers: int = 0) -> None:
        self.dataset, self.sampler, self.num_workers = dataset, sampler, num_workers

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, Any]]:
        """Yield the batches of ``epoch`` from ``start_step`` on."""
        plan: Sequence[list[int]] = [self.sampler.indices(epoch, s) for s in range(start_step, self.steps_per_epoch)]
        if self.num_workers == 0:
            for idx in plan:
                yield default_collate([self.dataset[i] for i in idx])
            return
        # each rank's workers augment with a stream of their own
        rank = int(getattr(self.sampler, "rank", 0))
        generator = torch.Generator().manual_seed(
            self.sampler.seed * 7919 + epoch * 131 + start_step + rank * 1_000_003
        )
        loader = DataLoader(self.dataset, batch_sampler=plan, num_workers=self.num_workers, generator=generator)
        yield from loader

    def state_dict(self) -> dict[str, Any]:
        """Extra state of the dataset (when it has any); the position is kept by the trainer."""
        state_fn = getattr(self.dataset, "state_dict", None)
        return {"dataset": state_fn()} if callable(state_fn) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "dataset" in state and callable(getattr(self.dataset, "load_state_dict", None)):
            self.dataset.load_state_dict(state["dataset"])
