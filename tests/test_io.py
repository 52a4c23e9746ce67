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


def test_a_truncated_uncompressed_file_is_one_error_line(tmp_path):
    """nibabel's message for a short .nii spans two lines; the error is one line naming the file."""
    path = save_nifti(tmp_path / "cut.nii", np.zeros((20, 20, 20), np.float32), np.eye(4))
    path.write_bytes(path.read_bytes()[:20000])
    with pytest.raises(DataError) as info:
        load_nifti(path, dtype=np.float32)
    message = str(info.value)
    assert message.startswith(f"{path}: unreadable or corrupt NIfTI file (")
    assert "\n" not in message


def test_a_colour_image_is_refused_as_such(tmp_path):
    import nibabel as nib

    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    with pytest.raises(DataError) as info:
        load_nifti(path, dtype=np.float32)
    assert str(info.value) == (
        f"{path}: colour (RGB / RGBA) voxels (R, G, B); give a greyscale scan (one intensity per voxel)"
    )


@pytest.mark.parametrize(("shape", "read"), [((4, 5, 6, 1, 1), (4, 5, 6)), ((4, 5, 6, 1, 2), (4, 5, 6, 2))])
def test_singleton_axes_after_the_third_are_dropped(tmp_path, shape, read):
    """NIfTI's 5th axis holds vector components after a time axis of 1: (X, Y, Z, 1, C) reads as C channels."""
    array = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    vol = load_nifti(save_nifti(tmp_path / "v.nii.gz", array, np.eye(4)), dtype=np.float32)
    assert vol.array.shape == read
    np.testing.assert_array_equal(vol.array, array.reshape(read))
    kept = (4, 5, 6, 2, 2)  # two axes of length > 1 beyond the third: left for the caller to refuse
    assert load_nifti(save_nifti(tmp_path / "w.nii.gz", np.zeros(kept, np.float32), np.eye(4))).array.shape == kept


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_nifti(tmp_path / "nope.nii.gz")


def test_volume_spacing_of_rotated_affine():
    theta = np.pi / 6
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.0, 2.0, 3.0])
    assert Volume(np.zeros((2, 2, 2)), affine).spacing == pytest.approx((1.0, 2.0, 3.0))


SINGULAR_AFFINES = {
    "zero": (np.zeros((4, 4)), "the voxel-to-world affine is zero"),
    "singular": (
        np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]),
        "the voxel-to-world affine is singular",
    ),
    "nan": (np.diag([1.0, np.nan, 1.0, 1.0]), "the voxel-to-world affine has non-finite (NaN or inf) entries"),
}


@pytest.mark.parametrize("kind", SINGULAR_AFFINES)
def test_zero_or_singular_affine_is_refused_naming_the_file(tmp_path, write_raw_affine, kind):
    affine, message = SINGULAR_AFFINES[kind]
    path = write_raw_affine(tmp_path / "scan.nii.gz", np.ones((4, 4, 4), np.float32), affine)
    with pytest.raises(DataError) as err:
        load_nifti(path)
    assert str(err.value).startswith(f"{path}: {message}")
    assert str(err.value).endswith(
        "a scan needs an invertible affine with non-zero voxel sizes "
        "(fix the header's sform/qform, e.g. copy it from the original scan)"
    )


def test_loaded_volume_names_its_file_in_later_errors(tmp_path):
    from medtransfer.data.preprocess import PreprocessConfig, preprocess_case, split_channels

    flat = save_nifti(tmp_path / "flat.nii.gz", np.ones((4, 5), np.float32), np.eye(4))
    with pytest.raises(DataError, match=f"^{flat}: expected a 3D image"):
        split_channels(load_nifti(flat, dtype=np.float32))  # what finetune, the cache and pretraining do
    empty = save_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32), np.eye(4))
    with pytest.raises(DataError, match=f"^{empty}: image has no finite voxel"):
        preprocess_case(split_channels(load_nifti(empty, dtype=np.float32)), PreprocessConfig())
    assert Volume(np.zeros((2, 2, 2)), np.eye(4)).where == ""
