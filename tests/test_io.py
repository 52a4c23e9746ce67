from __future__ import annotations

import numpy as np
import pytest

from medtransfer.data.io import Volume, load_nifti, save_nifti
from medtransfer.errors import DataError


def test_round_trip_keeps_array_and_affine(tmp_path, sphere_volume):
    affine = np.diag([0.5, -2.0, 3.0, 1.0])
    affine[:3, 3] = [10, 20, -5]
    path = save_nifti(tmp_path / "a.nii.gz", sphere_volume, affine)
    vol = load_nifti(path, dtype=np.float32)
    np.testing.assert_array_equal(vol.array, sphere_volume)
    np.testing.assert_allclose(vol.affine, affine)
    assert vol.spacing == pytest.approx((0.5, 2.0, 3.0))
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="bad.nii.gz"):
        load_nifti(bad)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_nifti(tmp_path / "nope.nii.gz")


def test_volume_spacing_of_rotated_affine():
    theta = np.pi / 6
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 2.0, 3.0])
    assert Volume(np.zeros((2, 2, 2)), affine).spacing == pytest.approx((1.0, 2.0, 3.0))
