"""The symmetry channel: reflection about a plane worked out by hand, the plane estimated on heads built symmetric
about a known plane, and the channels a run trains on."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.data.symmetry import MidPlane, add_mirror_channels, estimate_midplane, mirror_volume
from medtransfer.errors import DataError


def _symmetric_head(shape, spacing, plane: MidPlane, seed: int = 0) -> np.ndarray:
    """A head-like volume ``h(q) + h(F q)`` (``F``: the reflection about ``plane`` in mm), so exactly symmetric.

    ``h`` is an ellipsoid of tissue with 40 random Gaussian blobs of different sizes and signs in it."""
    rng = np.random.default_rng(seed)
    q = np.indices(shape).astype(np.float64) * np.asarray(spacing, dtype=np.float64)[:, None, None, None]
    n = plane.normal()[:, None, None, None]
    reflected = q - 2.0 * ((q * n).sum(0) - plane.offset) * n
    extent = (np.asarray(shape) - 1) * np.asarray(spacing)
    centres = extent * rng.uniform(0.25, 0.75, (40, 3))
    widths, heights = rng.uniform(4.0, 10.0, 40), rng.uniform(-0.5, 1.0, 40)

    def h(p):
        radius = np.sqrt((((p - extent[:, None, None, None] / 2) / (0.42 * extent[:, None, None, None])) ** 2).sum(0))
        out = 0.6 / (1.0 + np.exp((radius - 1.0) * 15.0))  # a soft-edged ellipsoid
        for c, w, a in zip(centres, widths, heights, strict=True):
            out += a * np.exp(-(((p - c[:, None, None, None]) ** 2).sum(0)) / (2 * w * w))
        return out

    return (h(q) + h(reflected)).astype(np.float32)


def test_a_plane_without_yaw_mirrors_voxel_x_to_its_twin():
    # plane at 8 mm on a 2 mm grid: voxel 4; voxel x takes voxel 8 - x, i.e. x mm 16 - x
    volume = np.arange(9.0, dtype=np.float32).reshape(9, 1, 1) * np.ones((1, 2, 3), np.float32)
    mirrored = mirror_volume(volume, (2.0, 1.0, 1.0), MidPlane(0.0, 8.0))
    np.testing.assert_allclose(mirrored[:, 1, 2], [8, 7, 6, 5, 4, 3, 2, 1, 0])
    # a plane half a voxel to the left (7 mm = voxel 3.5): voxel x takes 7 - x; voxels 8 mirror from outside -> fill
    mirrored = mirror_volume(volume, (2.0, 1.0, 1.0), MidPlane(0.0, 7.0), fill=-1.0)
    np.testing.assert_allclose(mirrored[:, 0, 0], [7, 6, 5, 4, 3, 2, 1, 0, -1])


def test_a_yawed_plane_maps_a_point_to_its_reflection():
    # plane through (10, 10) mm with normal at 45 degrees (the line x + y = 20 mm); 1 mm voxels:
    # the point (4, 10) reflects to (10, 16), so the mirror of a one-voxel spike at (10, 16) is a spike at (4, 10)
    volume = np.zeros((21, 21, 1), np.float32)
    volume[10, 16, 0] = 1.0
    plane = MidPlane(45.0, 20.0 / np.sqrt(2.0))
    mirrored = mirror_volume(volume, (1.0, 1.0, 1.0), plane)
    assert mirrored[4, 10, 0] == pytest.approx(1.0, abs=1e-5)
    assert mirrored.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("spacing", "angle", "shift_mm"),
    [((1.5, 1.5, 1.5), 6.0, -7.0), ((1.0, 1.2, 2.0), -4.0, 5.5), ((1.5, 1.5, 1.5), 0.0, 0.0)],
)
def test_the_plane_of_a_head_built_symmetric_is_found(spacing, angle, shift_mm):
    shape = (64, 72, 40)
    extent = (np.asarray(shape) - 1) * np.asarray(spacing)
    normal = MidPlane(angle, 0.0).normal()
    truth = MidPlane(angle, float(normal @ (extent / 2)) + shift_mm)
    head = _symmetric_head(shape, spacing, truth)
    inner = (slice(16, 48), slice(16, 56), slice(8, 32))  # the construction is symmetric (up to interpolation)
    assert float(np.abs(mirror_volume(head, spacing, truth)[inner] - head[inner]).mean()) < 0.01
    found = estimate_midplane(head, spacing)
    assert found.angle == pytest.approx(angle, abs=0.6)
    assert found.offset == pytest.approx(truth.offset, abs=0.6 * spacing[0])


def test_add_mirror_channels_appends_each_channel_s_mirror_about_channel_0_s_plane():
    spacing = (1.5, 1.5, 1.5)
    shape = (48, 56, 24)
    extent = (np.asarray(shape) - 1) * np.asarray(spacing)
    plane = MidPlane(3.0, float(MidPlane(3.0, 0.0).normal() @ (extent / 2)) + 3.0)
    head = _symmetric_head(shape, spacing, plane, seed=1)
    second = head * 2.0 + 1.0
    lesion = np.zeros(shape, bool)
    lesion[12:16, 26:30, 10:14] = True  # a dark lesion in one hemisphere only
    first = np.where(lesion, head - 1.0, head)
    out = add_mirror_channels(np.stack([first, second]), spacing)
    assert out.shape == (4, *shape)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:2], np.stack([first, second]))
    found = estimate_midplane(first, spacing)
    np.testing.assert_allclose(out[2], mirror_volume(first, spacing, found), atol=1e-6)
    np.testing.assert_allclose(out[3], mirror_volume(second, spacing, found), atol=1e-6)
    # inside the lesion the mirror channel shows the healthy twin: about 1 brighter than the image
    assert float((out[2] - out[0])[lesion].mean()) > 0.8
    # elsewhere the twins agree
    inner = np.zeros(shape, bool)
    inner[16:32, 16:40, 6:18] = True
    assert float(np.abs(out[2] - out[0])[inner & ~lesion].mean()) < 0.05


def test_a_volume_thinner_than_a_block_still_gets_a_plane():
    spacing = (1.5, 1.5, 1.5)
    head = _symmetric_head((40, 44, 8), spacing, MidPlane(0.0, 39 * 1.5 / 2))[:, :, 4:5]  # one slice
    plane = estimate_midplane(head, spacing)
    assert abs(plane.angle) <= 10.0
    assert add_mirror_channels(head[None], spacing).shape == (2, 40, 44, 1)
    assert abs(estimate_midplane(np.zeros((20, 20, 4), np.float32), spacing).angle) <= 10.0  # blank: any plane


def test_bad_shapes_are_refused():
    with pytest.raises(DataError, match="expected a preprocessed image"):
        add_mirror_channels(np.zeros((4, 4, 4)), (1, 1, 1))
    with pytest.raises(DataError, match="needs a 3D volume"):
        mirror_volume(np.zeros((4, 4)), (1, 1, 1), MidPlane(0.0, 1.0))
