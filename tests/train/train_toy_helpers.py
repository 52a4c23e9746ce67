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


def toy_unet() -> nn.Module:
    """A small 2D U-Net of the model registry (BatchNorm, two down-samplings), the same weights every call."""
    from medtransfer.models import create_model

    torch.manual_seed(0)
    return create_model("unet", spatial_dims=2, in_channels=1, out_channels=1, features=4, depth=2)


def write_cube_dataset(root, n: int = 3, size: int = 12):
    """An nnU-Net raw dataset of ``n`` noisy (size, size, 4) scans, each with a bright box as its label."""
    import numpy as np

    from medtransfer.data.io import save_nifti
    from medtransfer.data.layouts import write_dataset_json

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        label = np.zeros((size, size, 4), dtype=np.uint8)
        corner = rng.integers(1, size // 2, 2)
        label[corner[0] : corner[0] + size // 2, corner[1] : corner[1] + size // 2] = 1
        image = (label + rng.normal(0, 0.2, label.shape)).astype(np.float32)
        save_nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", image, np.eye(4))
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", label, np.eye(4))
    write_dataset_json(root, {"background": 0, "box": 1}, ["T1"], n)
    return root


class Killed(Exception):
    """Raised by :func:`stop_after`'s data stream: the training process "dies" there."""


def stop_after(epoch_fn, total_steps: int):
    """Wrap ``TrainBatches.epoch`` so that the stream raises :class:`Killed` after ``total_steps`` batches."""
    seen = [0]

    def epoch(e, start=0):
        for batch in epoch_fn(e, start):
            if seen[0] == total_steps:
                raise Killed
            seen[0] += 1
            yield batch

    return epoch
