"""Write the pretraining sources of brainshift into ``OUT/sources/`` as compressed ``.npz`` files.

| file | keys | what |
|---|---|---|
| ``mri_classification.npz`` | images (N,S,S) float32, labels, views, subjects (N,), class_names | lobe slices (*) |
| ``natural_classification.npz`` | images (N,28,28) uint8, labels, test_images, test_labels, class_names | F-MNIST |
| ``natural_segmentation.npz`` | images (N,128,128) float32, labels (N,128,128) uint8, class_names | pasted items |
| ``natural_ssl.npz`` | images (N,128,128) float32 | photo crops for restoration |

(*) dominant-lobe slices of heads of their own, in no dataset (``subjects``: ``source_<domain>_<index>``; a build
with heads other than Colin27 alone adds ``heads`` (N,), the real head each slice's subject was built from).

The MRI segmentation source is ``Dataset002_Anatomy``; the MRI self-supervised source is any brainshift image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic_path
from .natural import SEGMENTATION_CLASSES, fashion_classification, pasted_segmentation, photo_crops
from .sources import FASHION_MNIST_CLASSES
from .thumbnails import LOBES

NATURAL_SIZE = 128
SOURCE_HEAD_PREFIX = "source_"


def source_head_id(domain: str, index: int) -> str:
    """The id ``mri_classification.npz`` gives a head of its own: ``source_<domain>_<index>``."""
    return f"{SOURCE_HEAD_PREFIX}{domain}_{index:03d}"


def source_head_domain(head: str) -> str:
    """The scanner profile of a head id made by :func:`source_head_id`."""
    return str(head).removeprefix(SOURCE_HEAD_PREFIX).rpartition("_")[0]


def save_npz(path: Path, **arrays) -> None:
    """``np.savez_compressed`` atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def write_mri_classification(out: Path, slices: list[dict], heads: bool = False) -> None:
    """Stack the per-case dominant-lobe slices into one file (``heads``: with each slice's head)."""
    images = [im for s in slices for im in s["images"]]
    if not images:
        return
    save_npz(
        out / "mri_classification.npz",
        images=np.stack(images).astype(np.float32),
        labels=np.asarray([lb for s in slices for lb in s["labels"]], dtype=np.int64),
        views=np.asarray([v for s in slices for v in s["views"]]),
        subjects=np.asarray([sub for s in slices for sub in s["subjects"]]),
        class_names=np.asarray(LOBES),
        **({"heads": np.asarray([h for s in slices for h in s["heads"]])} if heads else {}),
    )


def write_sources(out: Path, mri_slices: list[dict], *, seed: int, count: int, heads: bool = False) -> None:
    """All four source files (see the module docstring; ``heads``: record each MRI slice's head)."""
    write_mri_classification(out, mri_slices, heads)
    fashion = fashion_classification(max(count, 1) * 5, seed)
    save_npz(out / "natural_classification.npz", **fashion, class_names=np.asarray(FASHION_MNIST_CLASSES))
    images, labels = pasted_segmentation(count, NATURAL_SIZE, seed)
    save_npz(
        out / "natural_segmentation.npz", images=images, labels=labels, class_names=np.asarray(SEGMENTATION_CLASSES)
    )
    save_npz(out / "natural_ssl.npz", images=photo_crops(count, NATURAL_SIZE, seed))
