from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medtransfer.data.orientation import from_canonical, to_canonical
from medtransfer.data.resample import resample_to_grid, resample_to_spacing, resampled_grid, spacing_of
from medtransfer.errors import DataError


def _affine(perm, flips, spacing, origin=(10.0, -20.0, 5.0)):
    affine = np.zeros((4, 4))
    for in_axis, (out_axis, flip) in enumerate(zip(perm, flips, strict=True)):
        affine[out_axis, in_axis] = flip * spacing[in_axis]
    affine[:3, 3] = origin
    affine[3, 3] = 1
    return affine


@pytest.mark.parametrize(
    ("perm", "flips"),
    [((0, 1, 2), (1, 1, 1)), ((0, 1, 2), (-1, -1, 1)), ((2, 0, 1), (1, -1, -1)), ((1, 2, 0), (-1, 1, -1))],
)
def test_canonical_matches_nibabel_and_inverts_exactly(perm, flips):
    array = np.random.default_rng(0).random((3, 4, 5))
    affine = _affine(perm, flips, (0.8, 1.5, 3.0))
    ras, ras_affine, how = to_canonical(array, affine)
    peer = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    np.testing.assert_array_equal(ras, peer.get_fdata())
    np.testing.assert_allclose(ras_affine, peer.affine)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    back, back_affine = from_canonical(ras, ras_affine, how)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(back_affine, affine)


def test_canonical_keeps_trailing_channel_axis():
    array = np.random.default_rng(0).random((3, 4, 5, 2))
    ras, _, how = to_canonical(array, _affine((2, 0, 1), (1, -1, 1), (1, 1, 1)))
    assert ras.shape == (4, 5, 3, 2)
    np.testing.assert_array_equal(from_canonical(ras, np.eye(4), how)[0], array)


def _centre(shape, affine):
    return (affine @ np.append((np.asarray(shape) - 1) / 2, 1))[:3]


def test_resampled_grid_keeps_centre_and_extent():
    affine = _affine((1, 0, 2), (-1, 1, 1), (0.8, 1.5, 3.0))
    shape, new_affine = resampled_grid((10, 8, 6), affine, (1.0, 1.0, 1.0))
    assert shape == (8, 12, 18)  # 10*0.8, 8*1.5, 6*3
    np.testing.assert_allclose(spacing_of(new_affine), 1.0)
    np.testing.assert_allclose(_centre(shape, new_affine), _centre((10, 8, 6), affine))
    np.testing.assert_allclose(np.sign(new_affine[:3, :3]), np.sign(affine[:3, :3]))


def test_linear_resampling_reproduces_a_linear_ramp():
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    ramp = np.broadcast_to(np.arange(10, dtype=np.float64)[:, None, None], (10, 4, 4)).copy()  # value = x / 2 mm
    out, new_affine = resample_to_spacing(ramp, affine, (1.0, 1.0, 1.0), order=1)
    world_x = new_affine[0, 0] * np.arange(out.shape[0]) + new_affine[0, 3]
    inner = (world_x >= 0) & (world_x <= 18)  # inside the source's voxel centres, linear interpolation is exact
    np.testing.assert_allclose(out[inner, 0, 0], world_x[inner] / 2)


def test_nearest_resampling_keeps_label_values():
    label = np.zeros((6, 6, 6), np.uint8)
    label[2:4, 2:4, 2:4] = 3
    out, _ = resample_to_spacing(label, np.eye(4), (0.5, 0.5, 0.5), order=0)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 3}
    assert (out == 3).sum() == 8 * 8


def test_resample_to_grid_integer_shift_is_a_slice():
    array = np.random.default_rng(1).random((6, 7, 8))
    ref_affine = np.eye(4)
    ref_affine[:3, 3] = (1, 2, 3)
    out = resample_to_grid(array, np.eye(4), (4, 4, 4), ref_affine, order=1)
    np.testing.assert_allclose(out, array[1:5, 2:6, 3:7])


def test_resample_to_grid_outside_is_cval():
    out = resample_to_grid(np.ones((4, 4, 4)), np.eye(4), (8, 4, 4), np.eye(4), order=0, cval=-1)
    np.testing.assert_array_equal(out[:4], 1)
    np.testing.assert_array_equal(out[4:], -1)


@pytest.mark.parametrize("order", [0, 1])
def test_separable_resampling_matches_scipy(order):
    from scipy import ndimage

    array = np.random.default_rng(2).random((9, 11, 7)).astype(np.float32)
    ref_affine = np.diag([0.7, 1.3, 0.55, 1.0])
    ref_affine[:3, 3] = (0.33, -0.21, 0.4)  # no sampling point falls on a rounding tie
    shape = (12, 9, 13)
    ours = resample_to_grid(array, np.eye(4), shape, ref_affine, order=order, cval=-5)
    peer = ndimage.affine_transform(
        array, np.diag(ref_affine)[:3], offset=ref_affine[:3, 3], output_shape=shape, order=order, mode="nearest"
    )
    inside = ours != -5
    assert inside.sum() > 0.5 * inside.size
    np.testing.assert_allclose(ours[inside], peer[inside], atol=1e-5)


def test_oblique_grid_uses_general_path():
    array = np.random.default_rng(3).random((6, 6, 6))
    theta = np.pi / 2  # a 90 degree rotation in-plane: the result is a rotated copy
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    rot[:3, 3] = (5, 0, 0)
    out = resample_to_grid(array, np.eye(4), (6, 6, 6), rot, order=1)
    np.testing.assert_allclose(out, array[::-1].transpose(1, 0, 2), atol=1e-9)  # out[a, b, c] = array[5 - b, a, c]


def test_singular_affine_is_a_clear_error_not_nibabels():
    with pytest.raises(DataError, match="affine is zero"):
        to_canonical(np.zeros((2, 2, 2)), np.zeros((4, 4)))
    with pytest.raises(DataError, match="affine is singular"):
        to_canonical(np.zeros((2, 2, 2)), np.diag([1.0, 1e-9, 1.0, 1.0]))
