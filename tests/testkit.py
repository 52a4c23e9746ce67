"""Shared test data builders for the fine-tuning tests (train, experiments, semi, transfer).

Importable from any test module as ``testkit`` (pytest puts ``tests/``, the folder of the root conftest.py, on
``sys.path``); no test module imports another.
"""

from __future__ import annotations

import numpy as np
import torch

from medtransfer.checkpoint import save_checkpoint
from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import write_dataset_json
from medtransfer.models import create_model

# ---------------------------------------------------------------- two domains (grid cells, classification)

GRID_TRAIN = {"epochs": 3, "steps_per_epoch": 6, "batch_size": 8, "lr": 0.01, "optimizer": "adam", "device": "cpu"}


def two_domain_blobs(root, per_domain=5):
    """Blobs in noise; domain ``b`` has inverted, rescaled contrast (a domain shift)."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rows = ["case,subject,domain"]
    grid = np.indices((24, 24, 8)).astype(np.float32)
    for domain in ("a", "b"):
        for i in range(per_domain):
            centre = np.array([12 + rng.integers(-4, 5), 12 + rng.integers(-4, 5), 4])[:, None, None, None]
            scale = np.array([1, 1, 2])[:, None, None, None]
            label = (np.sqrt((((grid - centre) * scale) ** 2).sum(0)) < 6).astype(np.uint8)
            image = label * 1.0 + rng.normal(0, 0.25, label.shape)
            image = image if domain == "a" else 2.0 - 3.0 * image
            case = f"{domain}{i}"
            affine = np.diag([1.0, 1.0, 2.0, 1.0])
            save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image.astype(np.float32), affine)
            save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, affine)
            rows.append(f"{case},{case},{domain}")
    write_dataset_json(root, {"background": 0, "blob": 1}, ["T1"], 2 * per_domain)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------- one domain, three-class source (finetune CLI)

FINETUNE_MODEL = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "features": 4, "depth": 2}
FINETUNE_ARGS = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--lr", "0.01", "--device", "cpu"]


def blob_dataset(root, n=6):
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rows = ["case,subject,domain"]
    grid = np.indices((20, 20, 8)).astype(np.float32)
    for i in range(n):
        centre = np.array([10 + rng.integers(-3, 4), 10 + rng.integers(-3, 4), 4])[:, None, None, None]
        label = (np.sqrt((((grid - centre) * np.array([1, 1, 2])[:, None, None, None]) ** 2).sum(0)) < 5).astype(
            np.uint8
        )
        image = label * 1.0 + rng.normal(0, 0.2, label.shape) + 0.2
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        save_nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", image.astype(np.float32), affine)
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", label, affine)
        rows.append(f"c{i},s{i},{'a' if i % 2 else 'b'}")
    write_dataset_json(root, {"background": 0, "blob": 1}, ["T1"], n)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def source_checkpoint(path, config=None):
    """A freshly initialised (seed 0) U-Net checkpoint with ``config`` (default :data:`FINETUNE_MODEL`)."""
    config = dict(config or FINETUNE_MODEL)
    torch.manual_seed(0)
    model = create_model("unet", **config)
    save_checkpoint(path, {"model": {"name": "unet", "config": config}, "state_dict": model.state_dict()})
    return path


# ---------------------------------------------------------------- labelled + unlabelled folders (teacher-student)

SEMI_MODEL = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "features": 4, "depth": 2}


def semi_blob(rng, shape=(16, 16, 6)):
    grid = np.indices(shape).astype(np.float32)
    centre = np.array([8 + rng.integers(-3, 4), 8 + rng.integers(-3, 4), 3])[:, None, None, None]
    label = (np.sqrt(((grid - centre) ** 2).sum(0)) < 4).astype(np.uint8)
    return (label * 1.0 + rng.normal(0, 0.2, label.shape) + 0.2).astype(np.float32), label


def semi_datasets(root, n=6, n_unlabelled=2):
    rng = np.random.default_rng(0)
    data = root / "ds"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    rows = ["case,subject"]
    for i in range(n):
        image, label = semi_blob(rng)
        save_nifti(data / "imagesTr" / f"c{i}_0000.nii.gz", image, np.eye(4))
        save_nifti(data / "labelsTr" / f"c{i}.nii.gz", label, np.eye(4))
        rows.append(f"c{i},s{i}")
    write_dataset_json(data, {"background": 0, "blob": 1}, ["T1"], n)
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    unl = root / "unl"
    (unl / "images").mkdir(parents=True)
    for i in range(n_unlabelled):
        # larger than the labelled scans: every slice dataset is padded to one common shape
        save_nifti(unl / "images" / f"u{i}.nii.gz", semi_blob(rng, (20, 16, 6))[0], np.eye(4))
    return data, unl
