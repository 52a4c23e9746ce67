"""Resampling to a target voxel spacing and onto a reference grid (scipy.ndimage).

Images use linear interpolation (``order=1``), labels nearest neighbour (``order=0``).  Resampling to a spacing keeps
the field of view's centre in world coordinates and its extent (``shape * spacing``) as close as whole voxels allow;
the returned affine keeps the axis directions of the input, so an oblique grid stays oblique.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis (norms of the affine's first three columns)."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def resampled_grid(
    shape: Sequence[int], affine: np.ndarray, target_spacing: Sequence[float]
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the grid with ``target_spacing`` covering the same field of view.

    The new shape is ``round(shape * spacing / target_spacing)`` (at least 1); voxel ``j`` of the new grid sits at
    input voxel coordinate ``zoom * j + offset`` with ``zoom = target / spacing``, chosen so that both grids share
    their centre.
    """
    target = np.asarray(target_spacing, dtype=np.float64)
    if target.shape != (3,) or not np.all(target > 0):
        raise DataError(f"target spacing must be three positive numbers (mm), got {tuple(target_spacing)}")
    shape_in = np.asarray(shape[:3], dtype=np.float64)
    zoom = target / spacing_of(affine)
    new_shape = np.maximum(1, np.round(shape_in / zoom)).astype(int)
    offset = (shape_in - 1) / 2 - zoom * (new_shape - 1) / 2
    voxel_map = np.eye(4)
    voxel_map[:3, :3] = np.diag(zoom)
    voxel_map[:3, 3] = offset
    return tuple(int(s) for s in new_shape), np.asarray(affine, dtype=np.float64) @ voxel_map


def resample_to_spacing(
    array: np.ndarray, affine: np.ndarray, target_spacing: Sequence[float], *, order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``array`` (spatial axes first, extra trailing axes resampled independently) to ``target_spacing``.

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: voxel -> world (mm).
        target_spacing: mm per voxel along the array axes.
        order: 1 (linear) for images, 0 (nearest) for labels.

    Returns:
        ``(resampled, new_affine)``.
    """
    new_shape, new_affine = resampled_grid(array.shape, affine, target_spacing)
    return resample_to_grid(array, affine, new_shape, new_affine, order=order), new_affine


def resample_to_grid(
    array: np.ndarray,
    affine: np.ndarray,
    ref_shape: Sequence[int],
    ref_affine: np.ndarray,
    *,
    order: int = 1,
    cval: float = 0.0,
    extend_edges: bool = False,
) -> np.ndarray:
    """Resample ``array`` (with ``affine``) onto the grid ``(ref_shape, ref_affine)``.

    Points of the reference grid more than half a voxel outside the source grid get ``cval``; points inside the
    outermost half voxel take the edge value (so a label touching the border stays there after a round trip).
    With ``extend_edges`` every point outside takes the nearest edge value instead: for two grids of one field of
    view whose extents differ only by rounding (a prediction put back on its scan's grid: the working grid's
    ``round(shape * spacing / target)`` voxels can end up to half a working voxel short of the scan's outermost
    voxel centres when the working voxel is over twice the scan's).

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: voxel -> world of ``array``.
        ref_shape: spatial shape of the output.
        ref_affine: voxel -> world of the output.
        order: spline order: 0 nearest (labels), 1 linear (images, probabilities).
        cval: value outside the source grid.
        extend_edges: edge values instead of ``cval`` outside the source grid.
    """
    ref_shape = tuple(int(s) for s in ref_shape[:3])
    mapping = np.linalg.solve(np.asarray(affine, dtype=np.float64), np.asarray(ref_affine, dtype=np.float64))
    matrix, offset = mapping[:3, :3], mapping[:3, 3]
    if np.allclose(mapping, np.eye(4)) and ref_shape == array.shape[:3]:
        return array.copy()
    inside = None if extend_edges else _inside_mask(mapping, ref_shape, array.shape[:3])
    diagonal = np.allclose(matrix, np.diag(np.diag(matrix)))
    channels = [array] if array.ndim == 3 else [array[..., c] for c in range(array.shape[3])]
    out = []
    for channel in channels:
        if diagonal and order in (0, 1):
            resampled = _separable(channel, np.diag(matrix), offset, ref_shape, order)
        else:
            from scipy import ndimage

            resampled = ndimage.affine_transform(
                channel, matrix, offset=offset, output_shape=ref_shape, order=order, mode="nearest"
            )
        if inside is not None:
            resampled[~inside] = cval
        out.append(resampled)
    return out[0] if array.ndim == 3 else np.stack(out, axis=-1)


def _separable(
    array: np.ndarray, zoom: np.ndarray, offset: np.ndarray, out_shape: tuple[int, int, int], order: int
) -> np.ndarray:
    """Axis-aligned nearest/linear resampling as three 1D passes (edge values extend outside, like scipy's
    ``mode="nearest"``); much faster than a 3D spline evaluation and equal to it up to float rounding."""
    result = array
    for axis in range(3):
        n = array.shape[axis]
        coord = zoom[axis] * np.arange(out_shape[axis]) + offset[axis]
        if order == 0:
            index = np.clip(np.floor(coord + 0.5), 0, n - 1).astype(np.intp)
            result = np.take(result, index, axis=axis)
            continue
        coord = np.clip(coord, 0, n - 1)
        low = np.minimum(np.floor(coord).astype(np.intp), max(n - 2, 0))
        weight = (coord - low).astype(np.float32 if result.dtype != np.float64 else np.float64)
        high = np.minimum(low + 1, n - 1)
        shape = [1, 1, 1]
        shape[axis] = -1
        weight = weight.reshape(shape)
        result = np.take(result, low, axis=axis) * (1 - weight) + np.take(result, high, axis=axis) * weight
    if np.issubdtype(array.dtype, np.integer) and order == 1:
        result = np.rint(result)
    return result.astype(array.dtype, copy=False)


def _inside_mask(mapping: np.ndarray, out_shape: tuple[int, int, int], in_shape: tuple[int, ...]) -> np.ndarray | None:
    """True where the output voxel maps within half a voxel of the input grid; ``None`` when that is everywhere."""
    low, high = -0.5 - 1e-6, np.asarray(in_shape[:3]) - 0.5 + 1e-6
    matrix = mapping[:3, :3]
    if np.allclose(matrix, np.diag(np.diag(matrix))):  # separable: one 1D test per axis
        masks = []
        for axis in range(3):
            coord = matrix[axis, axis] * np.arange(out_shape[axis]) + mapping[axis, 3]
            masks.append((coord >= low) & (coord <= high[axis]))
        if all(m.all() for m in masks):
            return None
        return masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]
    grids = [np.arange(n, dtype=np.float32) for n in out_shape]
    inside = np.ones(out_shape, dtype=bool)
    for axis in range(3):
        coord = np.full(out_shape, mapping[axis, 3], dtype=np.float32)
        for k in range(3):
            coord += (mapping[axis, k] * grids[k]).reshape([-1 if d == k else 1 for d in range(3)])
        inside &= (coord >= low) & (coord <= high[axis])
    return inside
