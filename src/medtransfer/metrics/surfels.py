"""Surface elements ("surfels") of binary masks, exactly as DeepMind's surface-distance defines them.

A mask's surface lives on the grid of voxel *corners*: each corner looks at the 2x2x2 (2D: 2x2) voxels around
it, packs their occupancy into a neighbourhood code, and is a surface point when the code is neither empty nor
full.  Its surfel area (2D: contour length) in mm² comes from the marching-cubes normals of that code scaled by
the voxel spacing.  The codes are built with three vectorised shift-and-or passes instead of a convolution,
and only the bounding box of the two masks (plus a margin) is processed.

Reference: Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy"
(2021), and https://github.com/google-deepmind/surface-distance.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._normals import NEIGHBOUR_CODE_TO_NORMALS


@functools.lru_cache(maxsize=64)
def surfel_area_table(spacing: tuple[float, ...]) -> np.ndarray:
    """Surfel area (3D, mm²) or contour length (2D, mm) of every neighbourhood code for ``spacing``.

    Args:
        spacing: voxel size in mm, 2 or 3 values.

    Returns:
        ``(256,)`` array for 3D, ``(16,)`` for 2D, indexed by neighbourhood code.
    """
    if len(spacing) == 3:
        return _surface_area_table_3d(spacing)
    if len(spacing) == 2:
        return _contour_length_table_2d(spacing)
    raise ValueError(f"spacing must have 2 or 3 values, got {spacing}")


def _surface_area_table_3d(spacing: tuple[float, ...]) -> np.ndarray:
    normals = np.zeros((256, 4, 3))
    for code, code_normals in enumerate(NEIGHBOUR_CODE_TO_NORMALS):
        normals[code, : len(code_normals)] = code_normals
    s0, s1, s2 = spacing
    scaled = normals * np.array([s1 * s2, s0 * s2, s0 * s1])
    table = np.sqrt((scaled**2).sum(axis=-1)).sum(axis=-1)
    table.flags.writeable = False
    return table


def _contour_length_table_2d(spacing: tuple[float, ...]) -> np.ndarray:
    vertical, horizontal = spacing
    diag = 0.5 * math.sqrt(vertical**2 + horizontal**2)
    table = np.zeros(16)
    table[[0b0001, 0b0010, 0b0100, 0b1000, 0b0111, 0b1011, 0b1101, 0b1110]] = diag
    table[[0b0011, 0b1100]] = horizontal
    table[[0b0101, 0b1010]] = vertical
    table[[0b0110, 0b1001]] = 2 * diag
    table.flags.writeable = False
    return table


def neighbourhood_codes(padded: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every corner of a zero-padded binary mask.

    Corner ``i`` (per axis) sits between voxels ``i`` and ``i + 1`` of ``padded``; the voxel at offset ``(a, b,
    c)`` sets bit ``7 - (4a + 2b + c)`` (2D: ``3 - (2a + b)``), which is DeepMind's
    ``ENCODE_NEIGHBOURHOOD_*_KERNEL``.

    Args:
        padded: boolean mask of shape ``(*spatial)`` (2D or 3D), already padded with zeros.

    Returns:
        ``uint8`` array of shape ``padded.shape - 1``.
    """
    codes = padded.view(np.uint8) if padded.dtype == bool else padded.astype(np.uint8)
    for axis in reversed(range(padded.ndim)):
        low = [slice(None)] * padded.ndim
        high = [slice(None)] * padded.ndim
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        shift = 1 << (padded.ndim - 1 - axis)
        codes = (codes[tuple(low)] << shift) | codes[tuple(high)]
    return codes


@dataclass(frozen=True)
class SurfacePair:
    """The surfaces of a prediction and a reference on their common (cropped) corner grid.

    Attributes:
        border_pred: boolean corner grid, ``True`` at the prediction's surface points.
        border_ref: the same for the reference.
        points_pred: flat indices into the corner grid of the prediction's surface points.
        points_ref: the same for the reference.
        areas_pred: surfel area (mm², 2D: mm) of each point in ``points_pred``.
        areas_ref: the same for the reference.
        margin: corners of empty space kept around the surfaces on each axis (for offset look-ups).
        spacing: voxel size in mm.
    """

    border_pred: np.ndarray
    border_ref: np.ndarray
    points_pred: np.ndarray
    points_ref: np.ndarray
    areas_pred: np.ndarray
    areas_ref: np.ndarray
    margin: tuple[int, ...]
    spacing: tuple[float, ...]

    def coordinates(self, points: np.ndarray) -> np.ndarray:
        """``(N, spatial_dims)`` integer corner coordinates of flat ``points``."""
        return np.stack(np.unravel_index(points, self.border_pred.shape), axis=1)


def extract_surfaces(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], margin: Sequence[int] | None = None
) -> SurfacePair | None:
    """Surface points and surfel areas of two binary masks, cropped to their joint bounding box.

    Args:
        pred: boolean mask ``(*spatial)``, 2D or 3D.
        ref: boolean mask of the same shape.
        spacing: voxel size in mm per axis.
        margin: extra empty corners to keep around the box per axis (default none).

    Returns:
        The two surfaces, or ``None`` when both masks are empty.
    """
    spacing = tuple(float(s) for s in spacing)
    margin = tuple(int(m) for m in margin) if margin is not None else (0,) * pred.ndim
    box = _joint_bounding_box(pred, ref)
    if box is None:
        return None
    borders, points, areas = [], [], []
    table = surfel_area_table(spacing)
    full = (1 << (1 << pred.ndim)) - 1
    for mask in (pred, ref):
        codes = neighbourhood_codes(_crop_and_pad(mask, box, margin))
        # surface corners have 0 < code < full; with uint8 wrap-around that is (code - 1) < full - 1
        border = (codes - np.uint8(1)) < np.uint8(full - 1)
        flat = np.flatnonzero(border)
        borders.append(border)
        points.append(flat)
        areas.append(table[codes.ravel()[flat]])
    return SurfacePair(borders[0], borders[1], points[0], points[1], areas[0], areas[1], margin, spacing)


def _joint_bounding_box(pred: np.ndarray, ref: np.ndarray) -> tuple[slice, ...] | None:
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _crop_and_pad(mask: np.ndarray, box: tuple[slice, ...], margin: tuple[int, ...]) -> np.ndarray:
    """Copy ``mask[box]`` into zeros with ``1 + margin`` voxels on every side."""
    shape = tuple(s.stop - s.start + 2 * (1 + m) for s, m in zip(box, margin, strict=True))
    out = np.zeros(shape, dtype=bool)
    inner = tuple(slice(1 + m, 1 + m + s.stop - s.start) for s, m in zip(box, margin, strict=True))
    out[inner] = mask[box]
    return out


def extract_boundary_voxels(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], margin: Sequence[int] | None = None
) -> SurfacePair | None:
    """Boundary *voxels* (MONAI's default edges, nnU-Net-style): mask minus its 1-connectivity erosion.

    Every boundary voxel centre is a surface point of weight 1, whatever its orientation or the spacing.  The
    result shares :class:`SurfacePair`'s layout (the "corner grid" is then the cropped voxel grid).
    """
    spacing = tuple(float(s) for s in spacing)
    margin = tuple(int(m) for m in margin) if margin is not None else (0,) * pred.ndim
    box = _joint_bounding_box(pred, ref)
    if box is None:
        return None
    borders, points = [], []
    for mask in (pred, ref):
        padded = _crop_and_pad(mask, box, margin)
        inner = tuple(slice(1, -1) for _ in range(padded.ndim))
        eroded = padded[inner].copy()
        for axis in range(padded.ndim):
            for step in (slice(None, -2), slice(2, None)):
                eroded &= padded[inner[:axis] + (step,) + inner[axis + 1 :]]
        border = padded[inner] & ~eroded
        borders.append(border)
        points.append(np.flatnonzero(border))
    ones = [np.ones(p.size) for p in points]
    return SurfacePair(borders[0], borders[1], points[0], points[1], ones[0], ones[1], margin, spacing)
