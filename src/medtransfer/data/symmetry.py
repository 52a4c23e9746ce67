"""A left-right mirrored copy of a head scan about its mid-sagittal plane (a symmetry channel).

Strokes and most tumours lie in one hemisphere; a small cortical stroke on T1 looks like the sulci around it, but a
sulcus has a twin in the other hemisphere and a stroke does not.  Giving a network the scan mirrored about the
head's mid-sagittal plane as an extra channel lets it compare every spot with its contralateral twin (Wang et al.
2016, "A deep symmetry convnet for stroke lesion segmentation", ICIP; the symmetry-aware stroke networks since).

Arrays are preprocessed scans in RAS+ voxel order (:mod:`medtransfer.data.preprocess`): axis 0 runs left-right,
axis 2 inferior-superior.  The plane is vertical (it contains the S axis) with its normal turned by ``angle`` degrees
from the R axis about S (the head's yaw), at ``offset`` mm from the array's first voxel along that normal
(:class:`MidPlane`).  It is estimated on the first channel: the yaw and offset whose reflection of the volume
correlates best with the volume itself, a grid search on the volume block-averaged to ~3 mm (2 degree and
one-block steps) refined three times (to 0.25 degree, ~0.4 mm), about 3 s for a head at 1.5 mm on one core.
Pitch and roll are not estimated; a preprocessed head is not resliced, so its tilt in those directions stays in both
channels alike.

Spatial augmentation keeps the pair exact: a similarity transform ``A`` (flip, rotation, isotropic zoom) applied to
both channels gives ``A(mirror(x))``, which is the mirror of ``A(x)`` about the transformed plane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import DataError

MAX_ANGLE_DEG = 10.0  # yaw searched in [-10, 10] degrees: heads in a scanner are seldom turned further
MAX_SHIFT_FRACTION = 0.15  # the plane searched within 15 % of the left-right extent from the array's centre


@dataclass(frozen=True)
class MidPlane:
    """The mirror plane: normal ``(cos a, sin a, 0)`` (``a`` = ``angle`` in degrees, in mm space), ``n . q = offset``
    for points ``q`` in mm from voxel 0 (``q = spacing * voxel``)."""

    angle: float
    offset: float

    def normal(self) -> np.ndarray:
        a = np.deg2rad(self.angle)
        return np.array([np.cos(a), np.sin(a), 0.0])


def _reflection(plane: MidPlane, spacing: Sequence[float], dims: int) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, offset)`` of the voxel map ``p -> S^-1 F(S p)`` (``F``: the reflection in mm) for
    :func:`scipy.ndimage.affine_transform` on the first ``dims`` axes."""
    s = np.asarray(spacing, dtype=np.float64)[:dims]
    n = plane.normal()[:dims]
    reflect = np.eye(dims) - 2.0 * np.outer(n, n)
    matrix = (reflect * s[None, :]) / s[:, None]  # S^-1 (I - 2 n n^T) S
    return matrix, 2.0 * plane.offset * n / s


def mirror_volume(
    volume: np.ndarray, spacing: Sequence[float], plane: MidPlane, fill: float | None = None
) -> np.ndarray:
    """``volume`` (X, Y, Z) reflected about ``plane`` (linear interpolation; voxels mirrored from outside the array
    take ``fill``, by default the volume's minimum: the background of a preprocessed scan).

    Example (a plane through voxel 4 of 9, no yaw: voxel ``x`` takes voxel ``8 - x``'s value):
        >>> v = np.arange(9.0).reshape(9, 1, 1)
        >>> mirror_volume(v, (2.0, 1.0, 1.0), MidPlane(0.0, 8.0))[:, 0, 0].tolist()
        [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise DataError(f"mirror_volume needs a 3D volume, got shape {volume.shape}")
    matrix, offset = _reflection(plane, spacing, 3)
    cval = float(volume.min()) if fill is None else float(fill)
    return ndimage.affine_transform(volume, matrix, offset, order=1, mode="constant", cval=cval).astype(np.float32)


def _score(volume: np.ndarray, plane: MidPlane, spacing: Sequence[float]) -> float:
    """Pearson correlation of ``volume`` with its reflection about ``plane``."""
    matrix, offset = _reflection(plane, spacing, volume.ndim)
    mirrored = ndimage.affine_transform(volume, matrix, offset, order=1, mode="constant", cval=0.0)
    a, b = volume - volume.mean(), mirrored - mirrored.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else -1.0


def estimate_midplane(volume: np.ndarray, spacing: Sequence[float], step_mm: float = 3.0) -> MidPlane:
    """The mid-sagittal plane of a head ``volume`` (X, Y, Z) in RAS+ order with voxel ``spacing`` (mm).

    The volume is block-averaged to about ``step_mm`` per voxel; a grid search over yaw (``MAX_ANGLE_DEG``, 2 degree
    steps) and offset (``MAX_SHIFT_FRACTION`` of the left-right extent, steps of one coarse voxel) takes the
    reflection that correlates best with the volume, refined three times around the best (halving both steps each
    time: to 0.25 degree and an eighth of a coarse voxel).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise DataError(f"estimate_midplane needs a 3D volume, got shape {volume.shape}")
    spacing = tuple(float(s) for s in spacing[:3])
    factors = [max(1, min(n, int(round(step_mm / s)))) for n, s in zip(volume.shape, spacing, strict=True)]
    blocks = [n // f for n, f in zip(volume.shape, factors, strict=True)]
    coarse = volume[: blocks[0] * factors[0], : blocks[1] * factors[1], : blocks[2] * factors[2]]
    coarse = coarse.reshape(blocks[0], factors[0], blocks[1], factors[1], blocks[2], factors[2]).mean(
        axis=(1, 3, 5), dtype=np.float64
    )
    coarse -= coarse.min()  # background 0, as the reflection fills it
    coarse_spacing = [s * f for s, f in zip(spacing, factors, strict=True)]
    # planes through the block grid's own mm frame: its voxel 0 sits at half a block minus half a voxel
    origin = np.array([(f - 1) * s / 2.0 for s, f in zip(spacing, factors, strict=True)])
    extent = (np.array(coarse.shape) - 1) * np.array(coarse_spacing)
    step = coarse_spacing[0]
    reach = max(1, int(round(MAX_SHIFT_FRACTION * coarse.shape[0])))

    def plane(angle: float, shift: float) -> MidPlane:  # a plane ``shift`` mm from the block grid's centre
        return MidPlane(angle, float(MidPlane(angle, 0.0).normal() @ (extent / 2.0)) + shift)

    def best_of(candidates: list[tuple[float, float]]) -> tuple[float, float]:
        scores = [_score(coarse, plane(a, d), coarse_spacing) for a, d in candidates]
        return candidates[int(np.argmax(scores))]

    angles = np.arange(-MAX_ANGLE_DEG, MAX_ANGLE_DEG + 1e-9, 2.0)
    angle, shift = best_of([(float(a), step * k) for a in angles for k in range(-reach, reach + 1)])
    angle_step = 2.0
    for _ in range(3):
        angle_step, step = angle_step / 2.0, step / 2.0
        angle, shift = best_of(
            [
                (float(np.clip(angle + da, -MAX_ANGLE_DEG, MAX_ANGLE_DEG)), shift + ds)
                for da in (-angle_step, 0.0, angle_step)
                for ds in (-step, 0.0, step)
            ]
        )
    best = plane(angle, shift)
    # back to the full grid's mm frame (voxel 0 at 0): q_full = q_coarse + origin
    return MidPlane(best.angle, best.offset + float(best.normal() @ origin))


def add_mirror_channels(image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """``image`` (C, X, Y, Z) followed by every channel mirrored about the plane estimated on channel 0:
    ``(2C, X, Y, Z)`` float32 (what ``symmetry_channel: true`` trains on and predicts with)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 4:
        raise DataError(f"expected a preprocessed image (C, X, Y, Z), got shape {image.shape}")
    plane = estimate_midplane(image[0], spacing)
    mirrored = [mirror_volume(channel, spacing, plane) for channel in image]
    return np.concatenate([image, np.stack(mirrored)]).astype(np.float32)
