"""Preprocessing of one scan and its exact inverse for predictions.

Steps, in order (each optional through :class:`PreprocessConfig`):

1. reorient to canonical RAS+ (exact, :mod:`~medtransfer.data.orientation`);
2. resample to ``target_spacing`` (linear for images, nearest for labels);
3. clip intensities to percentiles (default 1-99, as in DART) and scale (see :class:`Scaling`);
4. crop to the head: bounding box of the foreground (intensity above ``crop_threshold`` of the clipped range,
   specks removed by a binary opening) plus ``crop_margin`` voxels.

:class:`PreprocessInfo` records everything needed to put a label or probability map predicted on the preprocessed
grid back onto the input file's grid (:func:`restore_to_input`); it converts to a plain dict for checkpoints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, did_you_mean
from .io import Volume
from .orientation import Reorientation, canonical_transform, reorient_affine, reorient_array
from .resample import resample_to_grid, resampled_grid

IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = 0.449, 0.226  # ImageNet's RGB means/stds averaged (deepbet's values)

logger = logging.getLogger(__name__)


class Scaling(StrEnum):
    """Intensity scaling after clipping."""

    UNIT = "unit"  # (x - low) / (high - low): [0, 1]
    ZSCORE = "zscore"  # (x - mean) / std over the cropped volume
    MAX = "max"  # x / high: divided by the (clipped) maximum, as deepbrain
    ZSCORE_IMAGENET = "zscore_imagenet"  # z-score mapped to ImageNet's grey mean/std: 0.449 + 0.226 z, as deepbet
    NONE = "none"


def _numbers(values: Any) -> tuple[float, ...] | None:
    """``values`` as a tuple of floats, or ``None`` when it is not a list of numbers (a string "3,3,3", a scalar)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        return None
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans are preprocessed (the DART defaults: 1-99 percentile clip, [0, 1] scaling).

    Attributes:
        target_spacing: mm per voxel along R, A, S (``None`` keeps the input spacing).
        clip_percentiles: lower and upper intensity percentiles, or ``None`` for no clipping.
        scaling: see :class:`Scaling`.
        crop_to_foreground: crop to the head's bounding box.
        crop_threshold: foreground = intensity above this fraction of the clipped range (0.1, as FSL BET's
            robust threshold ``t2 + 0.1 (t98 - t2)``).
        crop_margin: voxels kept around the bounding box.
        canonical: reorient to RAS+ first.

    Example:
        >>> cfg = PreprocessConfig(target_spacing=(1.0, 0.95, 0.95))
        >>> PreprocessConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    target_spacing: tuple[float, float, float] | None = None
    clip_percentiles: tuple[float, float] | None = (1.0, 99.0)
    scaling: Scaling = Scaling.UNIT
    crop_to_foreground: bool = True
    crop_threshold: float = 0.1
    crop_margin: int = 2
    canonical: bool = True

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            spacing = _numbers(self.target_spacing)
            if spacing is None or len(spacing) != 3 or min(spacing) <= 0 or not all(map(math.isfinite, spacing)):
                raise ConfigError(
                    f"target_spacing must be three positive numbers (mm) such as [1.5, 1.5, 1.5], got "
                    f"{self.target_spacing!r}"
                )
            object.__setattr__(self, "target_spacing", spacing)
        if self.clip_percentiles is not None:
            pair = _numbers(self.clip_percentiles)
            if pair is None or len(pair) != 2 or not 0 <= pair[0] < pair[1] <= 100:
                raise ConfigError(
                    f"clip_percentiles must be two numbers with 0 <= low < high <= 100, got {self.clip_percentiles!r}"
                )
            object.__setattr__(self, "clip_percentiles", pair)
        for name in ("crop_to_foreground", "canonical"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.crop_threshold, bool) or not isinstance(self.crop_threshold, (int, float)):
            raise ConfigError(f"crop_threshold must be a number, got {self.crop_threshold!r}")
        if isinstance(self.crop_margin, bool) or not isinstance(self.crop_margin, int):
            raise ConfigError(f"crop_margin must be a whole number, got {self.crop_margin!r}")
        try:
            object.__setattr__(self, "scaling", Scaling(self.scaling))
        except ValueError as err:
            raise ConfigError(f"unknown scaling {self.scaling!r}; allowed: {[s.value for s in Scaling]}") from err
        if self.crop_margin < 0:
            raise ConfigError(f"crop_margin must be >= 0, got {self.crop_margin}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scaling"] = self.scaling.value
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(did_you_mean(sorted(unknown)[0], sorted(known), what="preprocessing option"))
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)

    def fingerprint(self) -> str:
        """Short stable hash of the configuration (cache keys)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PreprocessInfo:
    """Geometry and intensity parameters of one preprocessed scan.

    Attributes:
        input_shape: spatial shape of the input file.
        input_affine: 4x4 affine of the input file.
        reorientation: input -> RAS+ transform (identity when ``canonical`` is off).
        grid_shape: shape after reorientation and resampling, before cropping.
        grid_affine: affine of that grid.
        crop_start: first voxel of the crop box in that grid.
        crop_stop: one past the last voxel of the crop box.
        intensity: per channel ``{"low", "high", "mean", "std"}`` used for clipping and scaling.
    """

    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    reorientation: Reorientation
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray
    crop_start: tuple[int, int, int]
    crop_stop: tuple[int, int, int]
    intensity: tuple[dict[str, float], ...] = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PreprocessInfo) and self.to_dict() == other.to_dict()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape of the preprocessed array."""
        return tuple(b - a for a, b in zip(self.crop_start, self.crop_stop, strict=True))

    @property
    def affine(self) -> np.ndarray:
        """Affine of the preprocessed (cropped) array."""
        shift = np.eye(4)
        shift[:3, 3] = self.crop_start
        return self.grid_affine @ shift

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.grid_affine[:3, :3] ** 2).sum(axis=0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "input_affine": np.asarray(self.input_affine).tolist(),
            "reorientation": self.reorientation.to_dict(),
            "grid_shape": list(self.grid_shape),
            "grid_affine": np.asarray(self.grid_affine).tolist(),
            "crop_start": list(self.crop_start),
            "crop_stop": list(self.crop_stop),
            "intensity": [dict(d) for d in self.intensity],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessInfo:
        return cls(
            input_shape=tuple(int(s) for s in data["input_shape"]),
            input_affine=np.asarray(data["input_affine"], dtype=np.float64),
            reorientation=Reorientation.from_dict(data["reorientation"]),
            grid_shape=tuple(int(s) for s in data["grid_shape"]),
            grid_affine=np.asarray(data["grid_affine"], dtype=np.float64),
            crop_start=tuple(int(s) for s in data["crop_start"]),
            crop_stop=tuple(int(s) for s in data["crop_stop"]),
            intensity=tuple(dict(d) for d in data.get("intensity", ())),
        )


def preprocess_image(volume: Volume, config: PreprocessConfig) -> tuple[np.ndarray, PreprocessInfo]:
    """Preprocess a single-channel 3D scan.

    Returns:
        ``(array, info)``: float32 ``(X, Y, Z)`` in RAS+ voxel order (when ``config.canonical``).
    """
    image, _, info = preprocess_case([volume], config)
    return image[0], info


def preprocess_case(
    channels: Sequence[Volume], config: PreprocessConfig, label: Volume | None = None
) -> tuple[np.ndarray, np.ndarray | None, PreprocessInfo]:
    """Preprocess the channels of one case (same grid) and its label together.

    Args:
        channels: one 3D volume per channel (split 4D files with :func:`split_channels`).
        config: preprocessing options.
        label: label map on the same grid, or ``None``.

    Returns:
        ``(image, label, info)``: float32 ``(C, X, Y, Z)``, uint8 ``(X, Y, Z)`` or ``None``, and the info.

    Raises:
        DataError: channels or label with a different shape than the first channel, or not 3D.
    """
    first = channels[0]
    if label is not None and label.array.ndim == 4 and label.array.shape[3] == 1:  # (X, Y, Z, 1): a 3D label
        label = Volume(label.array[..., 0], label.affine, label.source)
    _check_same_grid(channels, label)
    reorientation = (
        canonical_transform(first.affine, first.array.shape, source=first.source)
        if config.canonical
        else _identity(first)
    )
    grid_affine = reorient_affine(first.affine, reorientation)
    grid_shape = reorientation.output_shape
    if config.target_spacing is not None:
        new_shape, new_affine = resampled_grid(grid_shape, grid_affine, config.target_spacing)
        _refuse_huge_grid(first, new_shape, config.target_spacing)
    else:
        new_shape, new_affine = grid_shape, grid_affine

    def to_grid(array: np.ndarray, order: int) -> np.ndarray:
        ras = reorient_array(array, reorientation)
        return resample_to_grid(ras, grid_affine, new_shape, new_affine, order=order)

    images = [
        to_grid(_fill_non_finite(np.asarray(v.array, dtype=np.float32), config.clip_percentiles), 1) for v in channels
    ]
    clipped = [_clip(img, config.clip_percentiles, v) for img, v in zip(images, channels, strict=True)]
    lab = None if label is None else to_grid(_label_uint8(label), 0)
    start, stop = _crop_box(clipped, lab, config, new_shape)
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    out, intensity = [], []
    for img, low, high in clipped:
        scaled, stats = _scale(img[box], low, high, config.scaling)
        out.append(scaled)
        intensity.append(stats)
    info = PreprocessInfo(
        first.array.shape[:3], first.affine, reorientation, new_shape, new_affine, start, stop, tuple(intensity)
    )
    return np.stack(out).astype(np.float32), None if lab is None else np.ascontiguousarray(lab[box]), info


MIXED_SPACING_RATIO = 1.01  # voxel sizes further apart than this (largest / smallest per axis) count as mixed


def common_spacing(config: PreprocessConfig, images: Sequence[str | os.PathLike]) -> PreprocessConfig:
    """``config`` with ``target_spacing`` set to the median voxel size of ``images`` (read from their headers, along
    R, A, S when ``canonical``) where it keeps each scan's own spacing (``None``) and the scans' voxel sizes differ.

    nnU-Net resamples every training scan to the median spacing: a network trained on 1 mm and 3 mm scans as they
    are sees each structure at two sizes, and new scans are predicted at the median spacing (see
    ``finetune.segment.inference_preprocess``), a size it may not have trained on. Scans of one voxel size keep
    ``None`` (no resampling, as before); unreadable files are left to the reader to refuse.
    """
    if config.target_spacing is not None:
        return config
    import nibabel as nib

    spacings = []
    for path in images:
        try:
            img = nib.load(str(path))
            affine, shape = np.asarray(img.affine, dtype=np.float64), tuple(img.shape[:3])
            if config.canonical:
                affine = reorient_affine(affine, canonical_transform(affine, shape, source=str(path)))
        except Exception:  # noqa: BLE001 - the reader names the file and what is wrong with it later
            continue
        spacings.append(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    if len(spacings) < 2:
        return config
    spacings = np.asarray(spacings)
    if np.all(spacings.max(axis=0) <= spacings.min(axis=0) * MIXED_SPACING_RATIO):
        return config
    median = tuple(round(float(v), 4) for v in np.median(spacings, axis=0))
    logger.info(
        "the training scans have different voxel sizes (%s mm): all are resampled to their median, %s mm, as new "
        "scans will be",
        ", ".join(sorted({" x ".join(f"{v:g}" for v in np.round(s, 3)) for s in spacings})),
        " x ".join(f"{v:g}" for v in median),
    )
    return dataclasses.replace(config, target_spacing=median)


def apply_to_label(label: Volume, info: PreprocessInfo) -> np.ndarray:
    """Put a label map of the input grid onto the preprocessed grid of ``info`` (nearest neighbour)."""
    if tuple(label.array.shape[:3]) != tuple(info.input_shape):
        raise DataError(f"label shape {label.array.shape} differs from the image's {info.input_shape}")
    ras = reorient_array(np.asarray(label.array), info.reorientation)
    grid_in = reorient_affine(info.input_affine, info.reorientation)
    grid = resample_to_grid(ras, grid_in, info.grid_shape, info.grid_affine, order=0)
    return grid[tuple(slice(a, b) for a, b in zip(info.crop_start, info.crop_stop, strict=True))]


def restore_to_input(array: np.ndarray, info: PreprocessInfo, *, order: int | None = None) -> np.ndarray:
    """Put a prediction made on the preprocessed grid back onto the input file's grid.

    Args:
        array: a label map ``(X, Y, Z)`` (integer) or per-class probabilities ``(C, X, Y, Z)`` on the preprocessed
            grid (``info.shape``).
        info: from :func:`preprocess_image` / :func:`preprocess_case`.
        order: interpolation order; default nearest (0) for integer arrays, linear (1) for floats.

    Returns:
        ``(X, Y, Z)`` or ``(C, X, Y, Z)`` with the input's spatial shape and voxel order: save it with
        ``info.input_affine``.  Outside the crop box labels are 0 and probabilities are background (channel 0 = 1).
    """
    spatial = array.shape[-3:]
    if tuple(spatial) != tuple(info.shape):
        raise DataError(f"prediction has spatial shape {tuple(spatial)}, expected {info.shape} (preprocessed grid)")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    order = (0 if np.issubdtype(array.dtype, np.integer) else 1) if order is None else order
    if array.ndim == 4:
        return np.stack([_restore(ch, info, order, float(c == 0)) for c, ch in enumerate(array)])
    return _restore(array, info, order, 0)


def _restore(array: np.ndarray, info: PreprocessInfo, order: int, fill: float) -> np.ndarray:
    full = np.full(info.grid_shape, fill, dtype=array.dtype)
    full[tuple(slice(a, b) for a, b in zip(info.crop_start, info.crop_stop, strict=True))] = array
    ras_affine = reorient_affine(info.input_affine, info.reorientation)
    ras_shape = info.reorientation.output_shape
    # the working grid covers the scan's field of view up to rounding (it can stop up to half a working voxel short
    # of the scan's outermost voxel centres): those take the edge value, as nnU-Net maps field of view onto field
    # of view, instead of being dropped as outside
    ras = resample_to_grid(full, info.grid_affine, ras_shape, ras_affine, order=order, extend_edges=True)
    return reorient_array(ras, info.reorientation, inverse=True)


def split_channels(volume: Volume) -> list[Volume]:
    """A 4D ``(X, Y, Z, C)`` volume as ``C`` 3D volumes (a 3D volume as a list of one)."""
    if volume.array.ndim == 3:
        return [volume]
    if volume.array.ndim == 4:
        return [Volume(volume.array[..., c], volume.affine, volume.source) for c in range(volume.array.shape[3])]
    raise DataError(f"{volume.where}expected a 3D image (or 4D with channels last), got shape {volume.array.shape}")


def _identity(volume: Volume) -> Reorientation:
    return Reorientation(((0, 1), (1, 1), (2, 1)), tuple(int(s) for s in volume.array.shape[:3]))


def _check_same_grid(channels: Sequence[Volume], label: Volume | None) -> None:
    if not channels:
        raise DataError("no image channels given")
    first = channels[0]
    shape = first.array.shape
    if len(shape) != 3:
        raise DataError(f"{first.where}each channel must be 3D, got shape {shape} (split 4D files with split_channels)")
    if label is not None and label.array.ndim != 3:
        raise DataError(f"{label.where}label has shape {label.array.shape}; labels must be 3D (one label map)")
    for i, v in enumerate([*channels[1:], *([label] if label is not None else [])]):
        what = "label" if label is not None and i == len(channels) - 1 else f"channel {i + 1}"
        if v.array.shape[:3] != shape:
            raise DataError(f"{v.where}{what} has shape {v.array.shape}, the first channel {shape}; they must match")
        shift = grid_offset_mm(first.affine, v.affine, shape)
        voxel = float(min(first.spacing[:3]))
        if shift > GRID_TOLERANCE_VOXELS * voxel and what == "label":
            # a label is the answer the network learns: combined voxel by voxel with a shifted or mirrored grid it
            # would teach the wrong voxels (nnU-Net's integrity check stops on it too)
            raise DataError(
                f"{v.where}the label lies on another grid than its image {first.source or ''} (a voxel moves by up "
                f"to {shift:.3g} mm between their affines, more than {GRID_TOLERANCE_VOXELS:g} voxel): resample the "
                "label onto the image's grid (nearest neighbour), or fix the affine of whichever header is wrong"
            )
        if shift > GRID_TOLERANCE_VOXELS * voxel:
            logger.warning(
                "%s%s lies on another grid than the first channel %s (a voxel moves by up to %.3g mm between their "
                "affines, more than %g voxel); they are combined voxel by voxel, as nnU-Net does: if the voxels do "
                "not correspond, resample it onto the first channel's grid (`medtransfer data check` lists such files)",
                v.where,
                what,
                first.source or "",
                shift,
                GRID_TOLERANCE_VOXELS,
            )


MAX_WORKING_VOXELS = 1_000_000_000  # 4 GB of float32 per channel: a scan far beyond any MRI field of view


def _refuse_huge_grid(first: Volume, shape: Sequence[int], spacing: Sequence[float]) -> None:
    """Refuse a scan whose working grid would not fit in memory: nearly always a wrong voxel size in the header
    (cm or m read as mm), which would otherwise end in a MemoryError after minutes."""
    voxels = int(np.prod([int(n) for n in shape]))
    if voxels <= MAX_WORKING_VOXELS:
        return
    extent = " x ".join(f"{n * s:.0f}" for n, s in zip(first.array.shape[:3], first.spacing[:3], strict=True))
    voxel = " x ".join(f"{s:g}" for s in first.spacing[:3])
    working = " x ".join(f"{s:g}" for s in spacing)
    raise DataError(
        f"{first.where}{extent} mm across (voxels of {voxel} mm): at the working spacing of {working} mm that is "
        f"{' x '.join(str(int(n)) for n in shape)} voxels, more than {MAX_WORKING_VOXELS:.0e}; check the voxel size "
        "in its header"
    )


GRID_TOLERANCE_VOXELS = 0.1  # the most two files of one case may disagree on a voxel's position, in voxels


def grid_offset_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between where the affines ``a`` and ``b`` put the same voxel of a grid of ``shape``
    (its corners: the distance is affine in the voxel index, so its maximum is at a corner)."""
    corners = np.array(np.meshgrid(*[[0, max(int(n) - 1, 0)] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    homogeneous = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((np.asarray(a) - np.asarray(b))[:3] @ homogeneous, axis=0).max())


def _label_uint8(label: Volume) -> np.ndarray:
    """The label map as uint8, refused (naming the file) unless every value is a whole number from 0 to 255: a
    plain cast would wrap FreeSurfer's 1026 to 2 and -1 to 255, and cut 0.5 to 0."""
    array = np.asarray(label.array)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            example = array[bad].flat[0]
            raise DataError(
                f"{label.where}{int(bad.sum())} label voxel(s) are not whole numbers (e.g. {example:g}); a label map "
                "holds integer class values"
            )
    elif array.dtype.kind not in "biu":
        raise DataError(f"{label.where}label data type {array.dtype}; a label map holds integer class values")
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if low < 0:
        raise DataError(
            f"{label.where}label values from {low:g} to {high:g}; allowed are whole numbers from 0 (background) to "
            "255: negative values are no classes (an image saved as a label, or a signed mask?)"
        )
    if high > 255:
        raise DataError(
            f"{label.where}label values from {low:g} to {high:g}; allowed are whole numbers from 0 to 255: remap "
            "larger codes (FreeSurfer's, say) to 1..N and declare them in dataset.json"
        )
    return array.astype(np.uint8)


def _fill_non_finite(image: np.ndarray, percentiles: tuple[float, float] | None) -> np.ndarray:
    """NaN and -inf set to the low clip value of the finite voxels, +inf to the high one, *before* resampling: a
    linear interpolation weight of 0 times inf is NaN, so an infinite voxel left in would spread over its
    neighbours (and along axes that are not resampled at all). Finite images are returned as they are; an image
    with no finite voxel is left for ``_clip`` to refuse."""
    finite_mask = np.isfinite(image)
    if finite_mask.all() or not finite_mask.any():
        return image
    low, high = _clip_range(image[finite_mask], percentiles)
    return np.nan_to_num(image, nan=low, posinf=high, neginf=low)


def _clip_range(finite: np.ndarray, percentiles: tuple[float, float] | None):
    """The clip values of an image's finite voxels (numpy scalars, whose type the scaling's arithmetic keeps): its
    percentiles, or its minimum and maximum."""
    return np.percentile(finite, percentiles) if percentiles else (finite.min(), finite.max())


def _clip(
    image: np.ndarray, percentiles: tuple[float, float] | None, volume: Volume
) -> tuple[np.ndarray, float, float]:
    """Clip to the percentiles of the finite voxels; NaN becomes the low value, +-inf the high / low value."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise DataError(f"{volume.where}image has no finite voxel (all NaN or inf); a scan needs intensities")
    low, high = _clip_range(finite, percentiles)
    return np.clip(np.nan_to_num(image, nan=low), low, high), float(low), float(high)


def _scale(image: np.ndarray, low: float, high: float, scaling: Scaling) -> tuple[np.ndarray, dict[str, float]]:
    stats = {"low": low, "high": high}
    if scaling == Scaling.UNIT:
        return (image - low) / max(high - low, 1e-8), stats
    if scaling in (Scaling.ZSCORE, Scaling.ZSCORE_IMAGENET):
        mean, std = float(image.mean()), float(image.std())
        z = (image - mean) / max(std, 1e-8)
        if scaling == Scaling.ZSCORE_IMAGENET:
            z = IMAGENET_GREY_MEAN + IMAGENET_GREY_STD * z
        return z, {**stats, "mean": mean, "std": std}
    if scaling == Scaling.MAX:
        return image / (high if abs(high) > 1e-8 else 1.0), stats
    return image, stats


def _crop_box(
    clipped: Sequence[tuple[np.ndarray, float, float]],
    label: np.ndarray | None,
    config: PreprocessConfig,
    shape: tuple[int, int, int],
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    if not config.crop_to_foreground:
        return (0, 0, 0), tuple(shape)
    from scipy import ndimage

    mask = np.zeros(shape, dtype=bool)
    for img, low, high in clipped:
        mask |= img > low + config.crop_threshold * (high - low)
    mask = ndimage.binary_opening(mask)
    if label is not None:
        mask |= label > 0
    if not mask.any():
        return (0, 0, 0), tuple(shape)
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    start = tuple(max(0, int(c[0]) - config.crop_margin) for c in coords)
    stop = tuple(min(n, int(c[-1]) + 1 + config.crop_margin) for c, n in zip(coords, shape, strict=True))
    return start, stop
