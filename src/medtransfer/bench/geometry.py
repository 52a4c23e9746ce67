"""Grids of brainshift: resampling from the 1 mm subject grid to the working spacing, field of view, orientation.

Every function returns arrays together with their affine, so that the 1 mm ground truth and the working-spacing
image of a case always describe the same physical space.
"""

from __future__ import annotations

import numpy as np


def scaled_affine(affine: np.ndarray, spacing: float) -> np.ndarray:
    """Affine of a grid with ``spacing``-times larger voxels whose first voxel covers the same corner."""
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * spacing
    out[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (spacing - 1) / 2)
    return out


def coarse_shape(shape: tuple[int, ...], spacing: float) -> tuple[int, ...]:
    """Number of ``spacing``-mm voxels that fit in ``shape`` 1 mm voxels."""
    return tuple(max(1, int(np.floor(n / spacing))) for n in shape)


def box_weights(n: int, spacing: float) -> np.ndarray:
    """``(m, n)`` matrix averaging ``n`` 1 mm voxels into ``m = floor(n / spacing)`` voxels of ``spacing`` mm.

    Row ``i`` holds the overlap of coarse voxel ``[i * spacing, (i + 1) * spacing)`` with each 1 mm voxel
    ``[j, j + 1)``, divided by ``spacing``: each row sums to 1 (the coarse voxel's footprint average).
    """
    m = coarse_shape((n,), spacing)[0]
    lo = np.arange(m, dtype=np.float64)[:, None] * spacing
    j = np.arange(n, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(lo + spacing, j + 1) - np.maximum(lo, j), 0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def downsample(volume: np.ndarray, spacing: float) -> np.ndarray:
    """Box (footprint) average of ``(X, Y, Z)`` or ``(C, X, Y, Z)`` over ``spacing``-mm voxels.

    Coarse voxel ``i`` covers 1 mm voxels ``[i * spacing, (i + 1) * spacing)`` (fractions at its edges), the
    partial-volume model of a voxel: at 2 mm the mean of a 2x2x2 block, at 3 mm of 3x3x3, at 1.5 mm of a block
    with half-voxel edges.  (Until simulator 2 this sampled linearly at the coarse voxel's centre, which at 3 mm
    took one 1 mm voxel of 27; see docs/brainshift.md.)
    """
    if spacing == 1:
        return volume.astype(np.float32, copy=False)
    out = np.asarray(volume, dtype=np.float32)
    offset = out.ndim - 3
    for axis in range(3):
        weights = box_weights(out.shape[offset + axis], spacing)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [offset + axis])), 0, offset + axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def downsample_labels(labels: np.ndarray, spacing: float, num_classes: int) -> np.ndarray:
    """Labels at the working spacing: the class with the largest partial-volume fraction of each coarse voxel.

    Fractions are the box averages of the one-hot maps (:func:`downsample`); a tie goes to the lower class
    (background first).
    """
    if spacing == 1:
        return labels.astype(np.uint8, copy=False)
    present = [c for c in range(num_classes) if c == 0 or np.any(labels == c)]
    onehot = np.stack([labels == c for c in present]).astype(np.float32)
    fractions = downsample(onehot, spacing)
    return np.asarray(present, dtype=np.uint8)[np.argmax(fractions, axis=0)]


def crop_or_pad(array: np.ndarray, affine: np.ndarray, before, after, fill: float = 0):
    """Remove (negative) or add (positive) voxels on each side of every axis; returns ``(array, affine)``."""
    pads = [(max(0, int(b)), max(0, int(a))) for b, a in zip(before, after, strict=True)]
    array = np.pad(array, pads, constant_values=fill)
    crops = tuple(
        slice(max(0, -int(b)), n - max(0, -int(a))) for b, a, n in zip(before, after, array.shape, strict=True)
    )
    start = -np.asarray(before, dtype=np.float64)  # new voxel 0 sits at old voxel -before
    out = affine.copy()
    out[:3, 3] = affine[:3, 3] + affine[:3, :3] @ start
    return array[crops], out


def reorient(array: np.ndarray, affine: np.ndarray, axes: tuple[int, int, int], flips: tuple[bool, bool, bool]):
    """Store ``array`` with its axes permuted (new axis i = old axis ``axes[i]``) and flipped; same world space."""
    out = np.transpose(array, axes)
    new_affine = affine[:, list(axes) + [3]].copy()
    for i, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=i)
            new_affine[:3, 3] += new_affine[:3, i] * (out.shape[i] - 1)
            new_affine[:3, i] *= -1
    return np.ascontiguousarray(out), new_affine


# Storage orders seen in practice: axial RAS/LAS/LPS stacks, sagittal (A, S, R) and coronal (R, S, A) acquisitions.
ORIENTATIONS = (
    ((0, 1, 2), (False, False, False)),
    ((0, 1, 2), (True, False, False)),
    ((0, 1, 2), (True, True, False)),
    ((1, 2, 0), (False, False, False)),
    ((1, 2, 0), (True, False, False)),
    ((0, 2, 1), (False, False, True)),
)


def random_orientation(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """One of :data:`ORIENTATIONS`."""
    return ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]


def random_field_of_view(rng: np.random.Generator, max_pad: int = 14, max_crop: int = 8) -> tuple[list, list]:
    """Per-axis voxels to add (positive) or remove (negative) before and after, in 1 mm voxels."""
    before = rng.integers(-max_crop, max_pad + 1, 3).tolist()
    after = rng.integers(-max_crop, max_pad + 1, 3).tolist()
    return before, after
