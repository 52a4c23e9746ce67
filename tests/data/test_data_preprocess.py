from __future__ import annotations

import numpy as np
import pytest

from medtransfer.data.io import Volume, load_nifti, save_nifti
from medtransfer.data.preprocess import (
    PreprocessConfig,
    PreprocessInfo,
    common_spacing,
    preprocess_case,
    preprocess_image,
    restore_to_input,
)
from medtransfer.errors import ConfigError, DataError


def _lps_input():
    """A non-RAS (axes permuted, two flips), anisotropic (0.8, 1.5, 3 mm) scan with a bright box object."""
    shape = (30, 16, 10)
    affine = np.zeros((4, 4))
    affine[1, 0] = -0.8  # array x -> posterior
    affine[2, 1] = 1.5  # array y -> superior
    affine[0, 2] = -3.0  # array z -> left
    affine[:3, 3] = (40, 10, -12)
    affine[3, 3] = 1
    label = np.zeros(shape, np.uint8)
    label[8:20, 4:11, 3:7] = 1
    rng = np.random.default_rng(0)
    head = np.zeros(shape, bool)
    head[3:27, 2:14, 1:9] = True
    image = (head * 50 + label * 100 + rng.normal(5, 1, shape)).astype(np.float32)
    return Volume(image, affine), Volume(label, affine)


def _world_centroid(label, affine):
    idx = np.argwhere(label > 0).mean(axis=0)
    return (affine @ np.append(idx, 1))[:3]


def test_round_trip_without_resampling_is_exact(tmp_path):
    image, label = _lps_input()
    config = PreprocessConfig()
    pre, pre_label, info = preprocess_case([image], config, label)
    assert pre.shape[0] == 1
    assert pre.dtype == np.float32
    assert pre.min() >= 0
    assert pre.max() <= 1
    predicted = (pre[0] > 0.75).astype(np.uint8)  # the object is the brightest thing
    np.testing.assert_array_equal(predicted, pre_label)
    restored = restore_to_input(predicted, PreprocessInfo.from_dict(info.to_dict()))
    np.testing.assert_array_equal(restored, label.array)
    saved = load_nifti(save_nifti(tmp_path / "pred.nii.gz", restored, info.input_affine))
    np.testing.assert_array_equal(saved.array, label.array)
    np.testing.assert_allclose(saved.affine, image.affine)


def test_preprocessed_grid_is_ras_and_cropped():
    image, _ = _lps_input()
    pre, info = preprocess_image(image, PreprocessConfig(crop_margin=1))
    assert pre.ndim == 3
    # RAS shape of (30, 16, 10) with x->P, y->S, z->L is (10, 30, 16); head box plus one voxel margin
    assert info.grid_shape == (10, 30, 16)
    assert pre.shape == (10, 26, 14)
    import nibabel as nib

    assert nib.aff2axcodes(info.affine) == ("R", "A", "S")


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 2.0, 1.3)])
def test_round_trip_with_resampling_lands_on_input_grid(spacing):
    image, label = _lps_input()
    pre, pre_label, info = preprocess_case([image], PreprocessConfig(target_spacing=spacing), label)
    np.testing.assert_allclose(info.spacing, spacing)
    restored = restore_to_input(pre_label, info)
    assert restored.shape == label.array.shape
    half_voxel = 0.5 * np.array([3.0, 0.8, 1.5])  # world R, A, S extent of one input voxel
    np.testing.assert_array_less(
        np.abs(_world_centroid(restored, image.affine) - _world_centroid(label.array, image.affine)), half_voxel
    )
    dice = 2 * (restored & label.array).sum() / (restored.sum() + label.array.sum())
    assert dice > 0.9


def test_probabilities_restore_with_background_outside_crop():
    image, label = _lps_input()
    _, pre_label, info = preprocess_case([image], PreprocessConfig(), label)
    probs = np.stack([1.0 - pre_label, pre_label]).astype(np.float32)
    restored = restore_to_input(probs, info)
    assert restored.shape == (2, *label.array.shape)
    np.testing.assert_allclose(restored.sum(axis=0), 1.0)
    np.testing.assert_array_equal(restored.argmax(axis=0), label.array)


def test_zscore_scaling():
    image, _ = _lps_input()
    pre, info = preprocess_image(image, PreprocessConfig(scaling="zscore", crop_to_foreground=False))
    assert abs(pre.mean()) < 1e-4
    assert pre.std() == pytest.approx(1.0, abs=1e-4)
    assert set(info.intensity[0]) == {"low", "high", "mean", "std"}


def test_config_validation_and_dict_round_trip():
    config = PreprocessConfig(target_spacing=(1, 0.95, 0.95), clip_percentiles=(0.5, 99.5))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.fingerprint() != PreprocessConfig().fingerprint()
    with pytest.raises(ConfigError, match="clip_percentiles"):
        PreprocessConfig(clip_percentiles=(99, 1))
    with pytest.raises(ConfigError, match="scaling"):
        PreprocessConfig(scaling="minmax")
    with pytest.raises(ConfigError, match="unknown preprocessing option"):
        PreprocessConfig.from_dict({"spacing": 1})


def test_wrong_prediction_shape_is_rejected():
    image, _ = _lps_input()
    _, info = preprocess_image(image, PreprocessConfig())
    with pytest.raises(DataError, match="preprocessed grid"):
        restore_to_input(np.zeros((2, 2, 2), np.uint8), info)


def test_apply_to_label_matches_joint_preprocessing():
    from medtransfer.data.preprocess import apply_to_label

    image, label = _lps_input()
    _, pre_label, info = preprocess_case([image], PreprocessConfig(target_spacing=(1.0, 1.0, 1.0)), label)
    np.testing.assert_array_equal(apply_to_label(label, info), pre_label)


def test_boolean_prediction_restores():
    image, label = _lps_input()
    _, pre_label, info = preprocess_case([image], PreprocessConfig(target_spacing=(2.0, 2.0, 2.0)), label)
    restored = restore_to_input(pre_label.astype(bool), info)
    assert restored.shape == label.array.shape
    assert restored.any()


def test_oblique_input_round_trip():
    image, label = _lps_input()
    theta = np.deg2rad(12)
    rot = np.eye(4)
    rot[:3, :3] = [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    oblique = rot @ image.affine
    pre_image, pre_label, info = preprocess_case(
        [Volume(image.array, oblique)], PreprocessConfig(), Volume(label.array, oblique)
    )
    np.testing.assert_array_equal(restore_to_input(pre_label, info), label.array)
    _, pre_label, info = preprocess_case(
        [Volume(image.array, oblique)], PreprocessConfig(target_spacing=(1.0, 1.0, 1.0)), Volume(label.array, oblique)
    )
    restored = restore_to_input(pre_label, info)
    np.testing.assert_allclose(_world_centroid(restored, oblique), _world_centroid(label.array, oblique), atol=0.5)


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0)])
def test_infinite_and_nan_voxels_do_not_spread_when_resampled(spacing):
    """An inf or NaN voxel becomes the clip value it stands for *before* resampling: 0 x inf is NaN in a linear
    interpolation, so left in it would spread over its neighbours (even along axes that are not resampled) and
    read as background. The result equals the same scan with those voxels set to the finite percentiles by hand."""
    image, _ = _lps_input()
    config = PreprocessConfig(target_spacing=spacing, crop_to_foreground=False)
    finite = image.array.copy()
    low, high = np.percentile(finite, config.clip_percentiles)
    holed, by_hand = finite.copy(), finite.copy()
    for index, value, fill in (((15, 7, 5), np.inf, high), ((4, 3, 2), -np.inf, low), ((20, 10, 4), np.nan, low)):
        holed[index], by_hand[index] = value, fill
    got, _ = preprocess_image(Volume(holed, image.affine), config)
    want, _ = preprocess_image(Volume(by_hand, image.affine), config)
    assert np.isfinite(got).all()
    # the percentiles of the finite voxels move by at most these three voxels' worth: the same result to 1e-2
    np.testing.assert_allclose(got, want, atol=1e-2)
    # the inf voxel is bright where it lies, not background
    assert got.max() == pytest.approx(1.0)


def test_common_spacing_is_the_median_of_mixed_voxel_sizes_along_ras(tmp_path):
    """Scans of 1 x 1 x 2, 1 x 1 x 3 and (stored LPS-permuted) 1 x 1 x 4 mm: each axis's median along R, A, S is
    (1, 1, 3); scans of one voxel size keep None (no resampling); a set target spacing is kept."""
    paths = [
        save_nifti(tmp_path / "a.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 2.0, 1.0])),
        save_nifti(tmp_path / "b.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 3.0, 1.0])),
    ]
    permuted = np.zeros((4, 4))  # array axis 0 -> S (4 mm), axis 1 -> -R (1 mm), axis 2 -> -A (1 mm)
    permuted[2, 0], permuted[0, 1], permuted[1, 2], permuted[3, 3] = 4.0, -1.0, -1.0, 1.0
    paths.append(save_nifti(tmp_path / "c.nii.gz", np.zeros((4, 4, 4), np.float32), permuted))
    assert common_spacing(PreprocessConfig(), paths).target_spacing == (1.0, 1.0, 3.0)
    assert common_spacing(PreprocessConfig(), paths[:1] * 3).target_spacing is None
    nearly = save_nifti(tmp_path / "d.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 2.005, 1.0]))
    assert common_spacing(PreprocessConfig(), [paths[0], nearly]).target_spacing is None  # header rounding
    fixed = PreprocessConfig(target_spacing=(1.5, 1.5, 1.5))
    assert common_spacing(fixed, paths) is fixed


@pytest.mark.parametrize("n", [108, 115, 58, 100])
def test_a_label_reaching_the_scans_edge_keeps_it_when_the_working_voxel_is_over_twice_the_scans(n):
    """0.45 mm voxels along x and a 1.5 mm working grid: round(n * 0.45 / 1.5) working voxels can stop up to half a
    working voxel short of the scan's outermost voxel centres (n = 108: 32 voxels spanning 48 mm against the
    scan's 48.6; 115 and 58 too, 100 does not).  Put back on the scan's grid, a label that runs the scan's whole
    length keeps its end slabs."""
    affine = np.diag([0.45, 1.5, 1.5, 1.0])
    label = np.zeros((n, 12, 12), np.uint8)
    label[:, 3:9, 3:9] = 1
    image = Volume((label * 100 + 10).astype(np.float32), affine)
    _, pre_label, info = preprocess_case(
        [image], PreprocessConfig(target_spacing=(1.5, 1.5, 1.5), crop_to_foreground=False), Volume(label, affine)
    )
    restored = restore_to_input(pre_label, info)
    np.testing.assert_array_equal(restored, label)
    probs = np.stack([1.0 - pre_label, pre_label]).astype(np.float32)
    np.testing.assert_allclose(restore_to_input(probs, info)[1], label)
