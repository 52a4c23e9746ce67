"""Source data of the pretraining tasks, as in-memory 2D arrays resized to one square size.

Where the data comes from (``DATA`` is a brainshift folder written by ``medtransfer data build-benchmark``):

* classification: natural ``DATA/sources/natural_classification.npz`` (or Fashion-MNIST read now);
  MRI ``DATA/sources/mri_classification.npz`` (the dominant brain lobe of the slice, from the warped AAL);
* segmentation: natural ``DATA/sources/natural_segmentation.npz`` (or composites built now);
  MRI axial slices of ``DATA/Dataset002_Anatomy``;
* restoration / rotation: natural ``DATA/sources/natural_ssl.npz`` (or photo crops cut now);
  MRI axial slices of ``DATA/Dataset001_BrainExtraction`` (images only).

Natural sources need no ``DATA`` (they are built from the Debian/PyPI packages on the fly); MRI sources do.
``DATA`` may also be a single nnU-Net dataset folder (your own MRI) for the MRI segmentation/self-supervised
sources.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from .options import SourceDomain, SourceTask

log = logging.getLogger(__name__)

ANATOMY_FOLDER = "Dataset002_Anatomy"
IMAGES_FOLDER = "Dataset001_BrainExtraction"
MIN_FOREGROUND = 0.02


@dataclass
class SourceData:
    """Images ``(N, S, S)`` float32 in [0, 1], optional labels, class names and a description for the meta.

    ``labels`` is ``(N,)`` for classification, ``(N, S, S)`` class indices for segmentation, ``None`` for
    self-supervised sources.
    """

    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def split(self, val_fraction: float, seed: int) -> tuple[SourceData, SourceData]:
        """A seeded random train/validation split (at least one item each)."""
        order = np.random.default_rng([seed, 7]).permutation(len(self))
        n_val = min(max(int(round(len(self) * val_fraction)), 1), len(self) - 1)
        if n_val < 1:
            raise DataError(f"need at least 2 source images to hold out validation data, got {len(self)}")
        return self.take(np.sort(order[n_val:])), self.take(np.sort(order[:n_val]))

    def take(self, index: np.ndarray) -> SourceData:
        labels = None if self.labels is None else self.labels[index]
        return SourceData(self.images[index], labels, list(self.class_names), dict(self.description))


def resize_stack(array: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    """Resize ``(N, H, W)`` to ``(N, size, size)``: bilinear with anti-aliasing for images, nearest for labels."""
    if array.shape[-2:] == (size, size):
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array))[:, None]
    if labels:
        out = F.interpolate(tensor.float(), size=(size, size), mode="nearest-exact").to(tensor.dtype)
    else:
        tensor = tensor.float()
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[:, 0].numpy()


def scale_unit(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1] (uint8 divided by 255, floats clipped)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz source file ({err})") from err


def _source_file(data: Path | None, name: str) -> Path | None:
    if data is None:
        return None
    for candidate in (data / "sources" / name, data / name):
        if candidate.is_file():
            return candidate
    return None


def load_source(
    task: SourceTask,
    domain: SourceDomain,
    data: str | Path | None,
    *,
    size: int,
    count: int,
    seed: int = 0,
    domains: Sequence[str] | None = None,
) -> SourceData:
    """The source of ``task`` x ``domain`` at ``size x size`` (at most ``count`` images).

    Raises:
        ConfigError: an MRI source without ``data``.
        DataError: missing or malformed source files.
    """
    data = Path(data) if data is not None else None
    if task in (SourceTask.ROTATION, SourceTask.RESTORATION):
        kind = "ssl"
    elif task in (SourceTask.CLASSIFICATION, SourceTask.SEGMENTATION):
        kind = task.value
    else:
        raise ConfigError(f"task {task.value!r} has no single source dataset")
    if domain is SourceDomain.NATURAL:
        source = _natural(kind, data, size, count, seed)
    else:
        if data is None:
            raise ConfigError(
                f"the MRI {kind} source needs --data (a brainshift folder from `medtransfer data build-benchmark`)"
            )
        source = _mri(kind, data, size, count, seed, domains)
    labels = source.labels
    if labels is not None and labels.ndim == 3:
        labels = resize_stack(labels, size, labels=True)
    source = SourceData(resize_stack(source.images, size), labels, source.class_names, source.description)
    source.description.update(size=size, count=len(source))
    log.info("%s %s source: %d images of %dx%d", domain.value, kind, len(source), size, size)
    return source


def _subsample(source: SourceData, count: int, seed: int) -> SourceData:
    if len(source) <= count:
        return source
    return source.take(np.sort(np.random.default_rng([seed, 11]).permutation(len(source))[:count]))


def _natural(kind: str, data: Path | None, size: int, count: int, seed: int) -> SourceData:
    from ..bench import natural
    from ..bench.sources import FASHION_MNIST_CLASSES

    file = _source_file(data, f"natural_{kind}.npz")
    arrays = _npz(file) if file is not None else None
    origin = str(file) if file is not None else "built now from the installed packages"
    if kind == "classification":
        if arrays is None:
            arrays = natural.fashion_classification(count, seed)
        names = [str(n) for n in arrays.get("class_names", FASHION_MNIST_CLASSES)]
        images, labels = scale_unit(arrays["images"]), arrays["labels"].astype(np.int64)
        desc = {"source": "Fashion-MNIST (10 product classes)", "origin": origin}
        return _subsample(SourceData(images, labels, names, desc), count, seed)
    if kind == "segmentation":
        if arrays is None:
            images, labels = natural.pasted_segmentation(count, size, seed)
            arrays = {"images": images, "labels": labels}
        names = [str(n) for n in arrays.get("class_names", natural.SEGMENTATION_CLASSES)]
        desc = {"source": "Fashion-MNIST items pasted on scikit-image photos (11 classes)", "origin": origin}
        source = SourceData(scale_unit(arrays["images"]), arrays["labels"].astype(np.int64), names, desc)
        return _subsample(source, count, seed)
    images = arrays["images"] if arrays is not None else natural.photo_crops(count, size, seed)
    desc = {"source": "scikit-image photo crops", "origin": origin}
    return _subsample(SourceData(scale_unit(images), None, [], desc), count, seed)


def _mri(kind: str, data: Path, size: int, count: int, seed: int, domains: Sequence[str] | None) -> SourceData:
    if kind == "classification":
        file = _source_file(data, "mri_classification.npz")
        if file is None:
            raise DataError(
                f"{data}: no sources/mri_classification.npz; build it with `medtransfer data build-benchmark`"
            )
        arrays = _npz(file)
        names = [str(n) for n in arrays.get("class_names", [])]
        desc = {
            "source": "brainshift T1 slices labelled with the dominant brain lobe (warped AAL)",
            "origin": str(file),
        }
        images, labels = arrays["images"], arrays["labels"]
        if domains:
            keep = _classification_domains(file, arrays, domains)
            images, labels = images[keep], labels[keep]
            desc["domains"] = sorted(domains)
        source = SourceData(scale_unit(images), labels.astype(np.int64), names, desc)
        return _subsample(source, count, seed)
    folder = _dataset_folder(data, ANATOMY_FOLDER if kind == "segmentation" else IMAGES_FOLDER)
    log.warning(
        "%s: the MRI %s source reads every case of this dataset (%s); fine-tune and test on another build or on "
        "subjects it does not hold, or the test scans will have been seen in pretraining",
        folder,
        "self-supervised" if kind == "ssl" else kind,
        "labels included" if kind == "segmentation" else "images only",
    )
    return mri_slices(folder, size=size, count=count, seed=seed, domains=domains, with_labels=kind == "segmentation")


def _classification_domains(file: Path, arrays: dict, domains: Sequence[str]) -> np.ndarray:
    """Which slices of ``mri_classification.npz`` come from heads of ``domains`` (its ``subjects`` are
    ``source_<domain>_<index>``; files of simulator 1 name no head, and every slice is kept with a warning).

    Raises:
        DataError: no slice comes from any of ``domains`` (the message names the domains the file holds).
    """
    if "subjects" not in arrays:
        log.warning(
            "%s: names no head per slice (built before brainshift simulator 2); --domains cannot restrict "
            "the MRI classification source, every slice is used",
            file,
        )
        return np.ones(len(arrays["labels"]), dtype=bool)
    from ..bench.sources_build import source_head_domain

    subject_domains = np.asarray([source_head_domain(s) for s in arrays["subjects"]])
    keep = np.isin(subject_domains, list(domains))
    if not keep.any():
        raise DataError(
            f"{file}: no slice from domains {', '.join(domains)}; it holds {', '.join(sorted(set(subject_domains)))}"
        )
    return keep


def _dataset_folder(data: Path, preferred: str) -> Path:
    if (data / preferred).is_dir():
        return data / preferred
    if (data / "dataset.json").is_file() or (data / "imagesTr").is_dir():
        return data
    raise DataError(f"{data}: neither a brainshift folder with {preferred}/ nor an nnU-Net dataset folder")


def mri_slices(
    folder: Path,
    *,
    size: int,
    count: int,
    seed: int = 0,
    domains: Sequence[str] | None = None,
    with_labels: bool = True,
    axis: int = 2,
) -> SourceData:
    """Axial slices (RAS axis ``axis``) of the cases of an MRI dataset, preprocessed as fine-tuning does,
    zero-padded to squares and resized to ``size x size``.

    Slices with less than 2% foreground (label > 0, or image > 0.1 without labels) are dropped; at most
    ``count`` slices are kept (a seeded random choice).
    """
    from ..data.io import load_nifti
    from ..data.layouts import load_dataset
    from ..data.preprocess import PreprocessConfig, preprocess_case, split_channels

    dataset = load_dataset(folder)
    cases = [c for c in dataset.cases if not domains or c.domain in domains]
    if with_labels:
        cases = [c for c in cases if c.label is not None]
    if not cases:
        raise DataError(f"{folder}: no {'labelled ' if with_labels else ''}case in domains {list(domains or [])}")
    names = dataset.label_names or {0: "background", 1: "foreground"}
    lut = np.full(max(names) + 1, -1, dtype=np.int64)
    lut[sorted(names)] = np.arange(len(names))
    images, labels = [], []
    for case in cases:
        channels = [v for p in case.images for v in split_channels(load_nifti(p, dtype="float32"))]
        label = load_nifti(case.label) if with_labels else None
        image, lab, _ = preprocess_case(channels[:1], PreprocessConfig(), label)
        volume = np.moveaxis(image[0], axis, 0)
        if with_labels:
            raw = np.moveaxis(lab.astype(np.int64), axis, 0)
            if raw.max() >= len(lut) or (lut[raw] < 0).any():
                raise DataError(f"{case.label}: label values {np.unique(raw).tolist()} not declared in dataset.json")
            target = lut[raw]
            keep = (target > 0).mean(axis=(1, 2)) >= MIN_FOREGROUND
            labels.extend(resize_stack(_square(target[keep]), size, labels=True))
        else:
            keep = (volume > 0.1).mean(axis=(1, 2)) >= MIN_FOREGROUND
        images.extend(resize_stack(_square(volume[keep]), size))
    if not images:
        raise DataError(f"{folder}: no slice with at least {MIN_FOREGROUND:.0%} foreground")
    desc = {
        "source": f"{folder.name} axial slices" + (" with labels" if with_labels else ""),
        "origin": str(folder),
        "cases": len(cases),
        "domains": sorted({str(c.domain) for c in cases}),
    }
    class_names = [str(names[v]) for v in sorted(names)] if with_labels else []
    source = SourceData(np.stack(images), np.stack(labels) if with_labels else None, class_names, desc)
    return _subsample(source, count, seed)


def _square(stack: np.ndarray) -> np.ndarray:
    """Zero-pad ``(N, H, W)`` symmetrically to ``(N, M, M)`` with ``M = max(H, W)`` (keeps the aspect ratio)."""
    h, w = stack.shape[1:]
    side = max(h, w)
    pad = ((0, 0), ((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2))
    return np.pad(stack, pad)
