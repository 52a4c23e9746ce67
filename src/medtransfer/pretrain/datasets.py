"""Map-style torch datasets of the source tasks: items are ``{"image": (1, S, S), "label": ...}``.

Random corruptions draw their seed from torch's global generator, which the trainer seeds and saves in its
resumable checkpoint, so a resumed run sees the same corruptions.  Validation datasets (``fixed=True``) derive
the corruption from the item index: the same held-out pairs at every evaluation.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .genesis import GenesisCorruption
from .sources import SourceData


def _item_rng(index: int, fixed: bool, seed: int) -> np.random.Generator:
    if fixed:
        return np.random.default_rng([seed, index])
    return np.random.default_rng(int(torch.randint(0, 2**62, ())))


class ClassificationDataset(Dataset):
    """Image -> class index (``label`` is a 0-d int64 tensor)."""

    def __init__(self, source: SourceData) -> None:
        if source.labels is None or source.labels.ndim != 1:
            raise ValueError("a classification source needs one label per image")
        self.images, self.labels = torch.from_numpy(source.images), torch.from_numpy(source.labels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i][None], "label": self.labels[i]}


class SegmentationDataset(Dataset):
    """Image -> per-pixel class indices ``(1, S, S)``; random flips when ``augment``."""

    def __init__(self, source: SourceData, augment: bool = False) -> None:
        if source.labels is None or source.labels.ndim != 3:
            raise ValueError("a segmentation source needs one label map per image")
        self.images, self.labels = torch.from_numpy(source.images), torch.from_numpy(source.labels)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image, label = self.images[i][None], self.labels[i][None]
        if self.augment and bool(torch.rand(()) < 0.5):
            image, label = image.flip(-1), label.flip(-1)
        return {"image": image, "label": label}


class RestorationDataset(Dataset):
    """Models Genesis pairs: ``image`` = corrupted copy, ``label`` = the original ``(1, S, S)`` float32."""

    def __init__(
        self, source: SourceData, corruption: GenesisCorruption | None = None, fixed: bool = False, seed: int = 0
    ) -> None:
        self.images = source.images
        self.corruption = corruption or GenesisCorruption()
        self.fixed, self.seed = fixed, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        clean = np.clip(self.images[i], 0.0, 1.0).astype(np.float32)
        corrupted = self.corruption(clean, _item_rng(i, self.fixed, self.seed))
        return {"image": torch.from_numpy(corrupted)[None], "label": torch.from_numpy(clean)[None]}


class RotationDataset(Dataset):
    """Rotation prediction (Gidaris et al. 2018): the image turned by ``k x 90`` degrees, label ``k`` in 0..3.

    Training items draw ``k`` at random; validation items (``fixed``) cycle through all four rotations.
    """

    num_classes = 4

    def __init__(self, source: SourceData, fixed: bool = False, seed: int = 0) -> None:
        self.images = torch.from_numpy(source.images)
        self.fixed, self.seed = fixed, seed

    def __len__(self) -> int:
        return len(self.images) * (4 if self.fixed else 1)

    def __getitem__(self, i: int) -> dict:
        if self.fixed:
            index, k = i // 4, i % 4
        else:
            index, k = i, int(torch.randint(0, 4, ()))
        image = torch.rot90(self.images[index], k, dims=(-2, -1))[None]
        return {"image": image.contiguous(), "label": torch.tensor(k, dtype=torch.int64)}
