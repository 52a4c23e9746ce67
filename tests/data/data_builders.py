"""Builders for tiny NIfTI datasets (8^3 volumes) in every layout, written under ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import write_dataset_json

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def tiny_pair(seed: int = 0, shape=(8, 8, 8)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright cube and its label (value 1 inside the cube)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[2:6, 2:6, 3:7] = 1
    image = (label * 100 + rng.normal(10, 1, shape)).astype(np.float32)
    return image, label


def build_nnunet(root: Path, n: int = 3, channels=("T1",), test: int = 0) -> Path:
    """nnU-Net raw layout with ``n`` labelled cases and ``test`` unlabelled ones."""
    for i in range(n):
        image, label = tiny_pair(i)
        for c in range(len(channels)):
            save_nifti(root / "imagesTr" / f"case{i:03d}_{c:04d}.nii.gz", image + c, AFFINE)
        save_nifti(root / "labelsTr" / f"case{i:03d}.nii.gz", label, AFFINE)
    for i in range(test):
        image, _ = tiny_pair(100 + i)
        for c in range(len(channels)):
            save_nifti(root / "imagesTs" / f"test{i:03d}_{c:04d}.nii.gz", image, AFFINE)
    write_dataset_json(root, {"background": 0, "target": 1}, list(channels), n)
    return root


def build_datalist(root: Path, n: int = 3, channels: int = 1) -> Path:
    """MSD-style: 4D images when ``channels > 1``, a ``datalist.json`` with relative paths."""
    entries = []
    for i in range(n):
        image, label = tiny_pair(i)
        if channels > 1:
            image = np.stack([image] * channels, axis=-1)
        save_nifti(root / "imagesTr" / f"s{i}.nii.gz", image, AFFINE)
        save_nifti(root / "labelsTr" / f"s{i}.nii.gz", label, AFFINE)
        entries.append({"image": f"./imagesTr/s{i}.nii.gz", "label": f"./labelsTr/s{i}.nii.gz"})
    content = {
        "labels": {"0": "background", "1": "target"},
        "modality": {str(c): f"ch{c}" for c in range(channels)},
        "training": entries,
    }
    (root / "datalist.json").write_text(json.dumps(content))
    return root / "datalist.json"


def build_cc359(root: Path, names=("CC0001_philips_15_55_M", "CC0002_siemens_3_40_F", "CC0003_ge_15_60_M")) -> Path:
    for i, name in enumerate(names):
        image, label = tiny_pair(i)
        save_nifti(root / "Original" / f"{name}.nii.gz", image, AFFINE)
        save_nifti(root / "Silver-standard" / f"{name}_ss.nii.gz", label, AFFINE)
    return root


def build_folders(root: Path, n: int = 3) -> Path:
    for i in range(n):
        image, label = tiny_pair(i)
        save_nifti(root / "images" / f"scan{i}.nii.gz", image, AFFINE)
        save_nifti(root / "labels" / f"scan{i}.nii.gz", label, AFFINE)
    return root
