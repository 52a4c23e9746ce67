"""Grids of brainshift: resampling from the 1 mm subject grid to the working spacing, field of view, orientation.

Every function returns arrays together with their affine, so that the 1 mm ground truth and the working-spacing
image of a case always describe the same physical space.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def scaled_affine(affine: np.ndarray, spacing: float) -> np.ndarray:
    """Affine of a grid with ``spacing``-times larger voxels whose first voxel covers the same corner."""
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * spacing
    out[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (spacing - 1) / 2)
    return out


def coarse_shape(shape: tuple[int, ...], spacing: float) -> tuple[int, ...]:
    """Number of ``spacing``-mm voxels that fit in ``shape`` 1 mm voxels."""
    return tuple(max(1, int(np.floor(n / spacing))) for n in shape)


def downsample(volume: np.ndarray, spacing: float) -> np.ndarray:
    """Linear sampling of ``(X, Y, Z)`` or ``(C, X, Y, Z)`` at the centres of ``spacing``-mm voxels.

    A voxel centre at 1 mm index ``(i + 0.5) * spacing - 0.5``; for spacing 2 this averages the 2x2x2 block.
    It is not a box average at other spacings: at 3 mm a voxel takes the value of the one 1 mm voxel at its
    centre (1 of 27), at 4 mm the mean of the central 2x2x2 of its 4x4x4 (see Known limitations in
    docs/brainshift.md).
    """
    if spacing == 1:
        return volume.astype(np.float32, copy=False)
    shape = volume.shape[-3:]
    axes = [
        ((torch.arange(m, dtype=torch.float64) + 0.5) * spacing - 0.5) / (n - 1) * 2 - 1
        for m, n in zip(coarse_shape(shape, spacing), shape, strict=True)
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flip(-1).float().unsqueeze(0)
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    batched = tensor[None, None] if tensor.ndim == 3 else tensor[None]
    out = F.grid_sample(batched, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return (out[0] if volume.ndim == 3 else out).numpy()


def downsample_labels(labels: np.ndarray, spacing: float, num_classes: int) -> np.ndarray:
    """Labels at the working spacing: the class whose one-hot map, sampled by :func:`downsample`, is largest.

    At 2 mm that is the class with the largest partial-volume fraction of the voxel; at 3 mm it is the class of the
    centre 1 mm voxel, at 4 mm the majority of the central 2x2x2 (the footprint is not averaged).
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
