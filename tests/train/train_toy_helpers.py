"""A tiny segmentation problem and network shared by the training tests (not a test module)."""

from __future__ import annotations

import time

import torch
from torch import nn

from medtransfer.train import StepBatchSampler, TrainBatches, TrainConfig


class SquaresDataset(torch.utils.data.Dataset):
    """16x16 noisy images with a bright square; the label is the square.  ``delay`` slows each item."""

    def __init__(self, n: int = 24, seed: int = 0, delay: float = 0.0, cases: int = 4) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            label = torch.zeros(1, 16, 16)
            r, c = torch.randint(1, 9, (2,), generator=g).tolist()
            label[0, r : r + 6, c : c + 6] = 1
            image = label * 2 - 1 + 0.5 * torch.randn(1, 16, 16, generator=g)
            self.items.append({"image": image, "label": label.long(), "case": f"case{i % cases}"})
        self.delay = delay

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if self.delay:
            time.sleep(self.delay)
        item = dict(self.items[i])
        item["image"] = item["image"] + 0.05 * torch.randn(1, 16, 16)  # uses the global RNG, as augmentation does
        return item


def toy_net(out_channels: int = 1, dropout: float = 0.1) -> nn.Module:
    """Conv-BN-ReLU-Dropout-Conv: BatchNorm and dropout exercise module state and the global RNG."""
    torch.manual_seed(123)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout2d(dropout),
        nn.Conv2d(8, out_channels, 3, padding=1),
    )


def toy_batches(config: TrainConfig, dataset=None) -> TrainBatches:
    dataset = dataset if dataset is not None else SquaresDataset()
    sampler = StepBatchSampler(len(dataset), config.batch_size, config.steps_per_epoch, seed=config.seed)
    return TrainBatches(dataset, sampler)


def toy_config(**changes) -> TrainConfig:
    values = {
        "epochs": 3,
        "steps_per_epoch": 4,
        "batch_size": 4,
        "lr": 0.05,
        "optimizer": "sgd",
        "schedule": "step",
        "step_epoch": 2,
        "loss": "bce",
        "precision": "fp32",
        "device": "cpu",
        "checkpoint_every_steps": 2,
        "progress": False,
    }
    return TrainConfig.from_dict({**values, **changes})
