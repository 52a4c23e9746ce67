"""Tiny in-memory sources shared by the pretraining tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medtransfer.pretrain.sources import SourceData

TINY_MODEL = {"spatial_dims": 2, "in_channels": 1, "features": 8, "depth": 2}


def tiny_config(task: str, out, **overrides) -> dict:
    """A pretraining config that runs in a few seconds on one core."""
    values = dict(
        task=task,
        domain="natural",
        out=str(out),
        size=16,
        epochs=2,
        steps_per_epoch=25,
        batch_size=16,
        lr=3e-3,
        val_fraction=0.25,
        progress=False,
        device="cpu",
        precision="fp32",
        model_config=dict(TINY_MODEL),
    )
    values.update(overrides)
    return values


def _smooth_background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(-0.2, 0.2, (2, n, 1, 1))
    return (0.3 + a * yy + b * xx).astype(np.float32)


def quadrant_classes(n: int = 160, size: int = 16, seed: int = 0) -> SourceData:
    """Four classes: a bright square in quadrant ``k``, on a smooth background with noise."""
    rng = np.random.default_rng(seed)
    images = _smooth_background(rng, n, size) + rng.normal(0, 0.05, (n, size, size)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    half, side = size // 2, size // 4
    for i, k in enumerate(labels):
        y0, x0 = (k // 2) * half, (k % 2) * half
        y, x = y0 + int(rng.integers(0, half - side + 1)), x0 + int(rng.integers(0, half - side + 1))
        images[i, y : y + side, x : x + side] = 0.9
    names = ["top-left", "top-right", "bottom-left", "bottom-right"]
    return SourceData(np.clip(images, 0, 1), labels.astype(np.int64), names, {"source": "quadrant squares"})


def blob_segmentation(n: int = 120, size: int = 16, seed: int = 0) -> SourceData:
    """Two foreground classes: bright squares (1) and dark squares (2) on a mid-grey noisy background."""
    rng = np.random.default_rng(seed)
    images = 0.5 + rng.normal(0, 0.05, (n, size, size)).astype(np.float32)
    labels = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for cls, tone in ((1, 0.95), (2, 0.05)):
            side = int(rng.integers(3, 7))
            y, x = (int(rng.integers(0, size - side + 1)) for _ in range(2))
            images[i, y : y + side, x : x + side] = tone
            labels[i, y : y + side, x : x + side] = cls
    names = ["background", "bright", "dark"]
    return SourceData(np.clip(images, 0, 1), labels, names, {"source": "squares"})


def smooth_images(n: int = 120, size: int = 16, seed: int = 0) -> SourceData:
    """Self-supervised source: smooth gradients with a bright disc (unlabelled), upright by construction."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.15, size * 0.4), rng.uniform(size * 0.2, size * 0.8)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < (size * 0.15) ** 2
        images[i] = 0.2 + 0.5 * yy / size + 0.3 * disc
    return SourceData(np.clip(images, 0, 1), None, [], {"source": "smooth gradients with a disc near the top"})


@pytest.fixture
def one_thread():
    """Run a training test on one intra-op thread: on a shared, busy machine OpenMP spinning over 2 threads made
    these tiny models ~10x slower in CPU time."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_tiny_nnunet(root: Path, labels: dict[str, int], cases: int = 2, seed: int = 0) -> Path:
    """A tiny nnU-Net raw dataset: ``cases`` 12x10x6 volumes at 2 mm, one bright box per case labelled with the
    labels' foreground values in turn."""
    from medtransfer.data.layouts import write_dataset_json

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    values = [v for v in labels.values() if v > 0]
    for i in range(cases):
        image = rng.random((12, 10, 6)).astype(np.float32) * 0.2
        label = np.zeros((12, 10, 6), dtype=np.uint8)
        label[3:9, 2:8, 1:5] = values[i % len(values)]
        image[label > 0] += 1.0
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    write_dataset_json(root, labels, ["T1"], cases)
    return root
