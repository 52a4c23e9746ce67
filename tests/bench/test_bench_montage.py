"""Montage tiles: one physical scale and the head centred, whatever the build's spacing and field of view."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.bench.montage import MM_PER_PIXEL, TILE, _tile
from medtransfer.bench.thumbnails import ras_spacing


def _disc(shape, spacing, centre_mm, radius_mm=40.0):
    """A bright disc of ``radius_mm`` sampled at voxel centres ``spacing * index`` (mm; one number or per axis)."""
    steps = np.broadcast_to(np.asarray(spacing, dtype=float), (len(shape),))
    grid = np.meshgrid(*[s * np.arange(n) for s, n in zip(steps, shape, strict=True)], indexing="ij")
    return (sum((g - c) ** 2 for g, c in zip(grid, centre_mm, strict=True)) <= radius_mm**2).astype(np.float32)


def _extent(tile):
    """Height, width and centre (row, col) of the tile's bright region."""
    rows, cols = np.nonzero(tile[..., 0] > 0.5)
    return (
        rows.max() - rows.min() + 1,
        cols.max() - cols.min() + 1,
        (rows.min() + rows.max()) / 2,
        (cols.min() + cols.max()) / 2,
    )


@pytest.mark.parametrize(
    ("shape", "spacing", "centre_mm"),
    [
        ((100, 100), 2.0, (100.0, 100.0)),  # a 200 mm field, disc in the middle
        ((50, 60), 4.0, (100.0, 140.0)),  # coarser, a different field, disc off-centre
        ((160, 120), 1.5, (60.0, 120.0)),  # the display scale itself, disc near an edge
    ],
)
def test_tiles_share_one_scale_and_centre_the_head(shape, spacing, centre_mm):
    tile = _tile(_disc(shape, spacing, centre_mm), None, (spacing, spacing))
    assert tile.shape == (TILE, TILE, 3)
    height, width, row, col = _extent(tile)
    diameter = 80.0 / MM_PER_PIXEL  # 53.3 pixels, whatever the voxel size
    assert abs(height - diameter) <= 3
    assert abs(width - diameter) <= 3
    assert abs(row - TILE / 2) <= 2
    assert abs(col - TILE / 2) <= 2


def test_anisotropic_voxels_keep_the_disc_round():
    # 1 mm x 3 mm voxels (thick slices along the second axis): the tile must show a disc, not an ellipse
    tile = _tile(_disc((200, 67), (1.0, 3.0), (100.0, 100.0)), None, (1.0, 3.0))
    height, width, _, _ = _extent(tile)
    assert abs(height - width) <= 3


def test_label_overlay_follows_the_image():
    image = _disc((100, 100), 2.0, (100.0, 100.0))
    label = _disc((100, 100), 2.0, (100.0, 100.0), radius_mm=10.0).astype(np.uint8)
    tile = _tile(image, label, (2.0, 2.0))
    coloured = np.nonzero(np.abs(tile[..., 0] - tile[..., 2]) > 0.1)  # orange overlay: red != blue
    assert abs(np.mean(coloured[0]) - TILE / 2) <= 2
    assert abs(np.mean(coloured[1]) - TILE / 2) <= 2
    assert abs(coloured[0].max() - coloured[0].min() + 1 - 20 / MM_PER_PIXEL) <= 2


def test_ras_spacing_follows_the_axes_to_ras():
    # voxel axis 0 runs inferior (S, 3 mm), axis 1 left-right (R, 1 mm), axis 2 posterior (A, 2 mm)
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = -3.0, 1.0, -2.0, 1.0
    assert ras_spacing(affine) == (1.0, 2.0, 3.0)
