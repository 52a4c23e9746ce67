"""Grid bookkeeping of brainshift: every array keeps an affine that describes the same world space."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.bench.geometry import (
    ORIENTATIONS,
    coarse_shape,
    crop_or_pad,
    downsample,
    downsample_labels,
    reorient,
    scaled_affine,
)


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


def test_downsample_by_two_averages_blocks():
    volume = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    out = downsample(volume, 2.0)
    assert out.shape == (2, 2, 1)
    np.testing.assert_allclose(out[1, 0, 0], volume[2:4, 0:2, 0:2].mean(), rtol=1e-5)


def test_scaled_affine_puts_coarse_centre_at_block_centre():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-10, 5, 2)
    coarse = scaled_affine(affine, 2.0)
    # coarse voxel (0, 0, 0) covers fine voxels 0..1 whose centre is fine index 0.5
    np.testing.assert_allclose(_world(coarse, (0, 0, 0)), _world(affine, (0.5, 0.5, 0.5)))
    np.testing.assert_allclose(_world(coarse, (3, 1, 2)), _world(affine, (6.5, 2.5, 4.5)))


def test_downsample_labels_takes_the_majority():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2, :2, :2] = 3
    labels[0, 0, 0] = 0  # 7 of 8 voxels are class 3
    labels[2:, 2:, 2:] = 1
    labels[2:, 2:, 2] = 0  # 4 of 8: tie between 0 and 1 -> the first (background)
    out = downsample_labels(labels, 2.0, 4)
    assert out[0, 0, 0] == 3
    assert out[1, 1, 1] == 0
    assert coarse_shape((5, 4, 3), 2.0) == (2, 2, 1)


@pytest.mark.parametrize(("axes", "flips"), ORIENTATIONS)
def test_reorient_keeps_world_positions(axes, flips):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 100, (3, 4, 5))
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = (1, -2, 7)
    out, new_affine = reorient(array, affine, axes, flips)
    for index in [(0, 0, 0), (2, 3, 4), (1, 2, 3)]:
        world = _world(affine, index)
        new_index = np.rint(np.linalg.solve(new_affine, [*world, 1.0])[:3]).astype(int)
        assert out[tuple(new_index)] == array[index]


def test_crop_or_pad_moves_the_origin():
    array = np.arange(10 * 6 * 4).reshape(10, 6, 4)
    affine = np.eye(4)
    out, new_affine = crop_or_pad(array, affine, before=(-2, 3, 0), after=(1, -1, 0))
    assert out.shape == (9, 8, 4)
    # new voxel (0, 3, 0) is old voxel (2, 0, 0)
    assert out[0, 3, 0] == array[2, 0, 0]
    np.testing.assert_allclose(_world(new_affine, (0, 3, 0)), _world(affine, (2, 0, 0)))
    assert out[0, 0, 0] == 0  # padding
