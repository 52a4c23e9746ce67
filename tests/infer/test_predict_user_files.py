"""``medtransfer predict`` / ``evaluate`` on files as users have them: existing outputs, upper-case suffixes,
channels on other grids, complex or overflowing voxels, units in meters, constant scans, 4D references, 0/255."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from test_infer_predict_cli import _dice, _predict, _run, _scan

from medtransfer.cli import main
from medtransfer.data.io import Volume, is_nifti, load_nifti, save_nifti, strip_nifti_suffix
from medtransfer.data.preprocess import GRID_TOLERANCE_VOXELS, PreprocessConfig, grid_offset_mm, preprocess_case
from medtransfer.errors import DataError


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    return err


def test_existing_output_file_is_refused_unless_overwrite(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, box = _scan()
    scan = save_nifti(tmp_path / "scan.nii.gz", array, affine)
    mine = tmp_path / "mine.nii.gz"
    mine.write_bytes(b"precious")
    assert _predict(run, scan, mine) == 2
    err = _one_error(capsys)
    assert f"error: {mine}: already exists; predict does not replace existing files unless --overwrite" in err
    assert mine.read_bytes() == b"precious"
    assert _predict(run, scan, mine, "--overwrite") == 0
    assert _dice(np.asarray(nib.load(mine).dataobj) == 3, box) > 0.9


def test_existing_outputs_in_a_folder_are_refused_before_any_work(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, _ = _scan()
    for name in ("a", "b", "c"):
        save_nifti(tmp_path / "in" / f"{name}.nii.gz", array, affine)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.nii.gz").write_bytes(b"mine")
    (out / "c.nii.gz").write_bytes(b"mine too")
    assert _predict(run, tmp_path / "in", out) == 2
    assert f"{out / 'b.nii.gz'}: already exists (and 1 more of the 3 outputs)" in _one_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["b.nii.gz", "c.nii.gz"]  # a was not predicted either
    assert (out / "b.nii.gz").read_bytes() == b"mine"


def test_outputs_of_the_wrong_kind_get_one_line_before_any_work(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, _ = _scan()
    scan = save_nifti(tmp_path / "in" / "good1.nii.gz", array, affine)
    save_nifti(tmp_path / "in" / "good2.nii.gz", array, affine)
    folder_named_like_a_file = tmp_path / "dir.nii.gz"
    folder_named_like_a_file.mkdir()
    assert _predict(run, scan, folder_named_like_a_file, "--overwrite") == 2
    assert "is a folder, so the label map cannot be written there" in _one_error(capsys)
    plain = tmp_path / "plainfile"
    plain.write_text("x")
    assert _predict(run, tmp_path / "in", plain) == 2
    assert f"{plain}: is a file; for an input folder the output must be a folder" in _one_error(capsys)
    out = tmp_path / "out"
    (out / "good1.nii.gz").mkdir(parents=True)
    assert _predict(run, tmp_path / "in", out, "--overwrite") == 2
    assert f"{out / 'good1.nii.gz'}: is a folder" in _one_error(capsys)
    assert not (out / "good2.nii.gz").exists()


def test_upper_case_suffixes_are_scans_and_hidden_files_are_not(tmp_path):
    assert is_nifti("B.NII.GZ")
    assert is_nifti("c.Nii")
    assert not is_nifti("d.nii.gz.txt")
    assert strip_nifti_suffix("B.NII.GZ") == "B"
    assert strip_nifti_suffix("d.nii.GZ") == "d"
    run = _run(tmp_path)
    array, affine, box = _scan()
    for name in ("a.nii.gz", "B.NII.GZ", "C.NII", "d.nii.GZ"):
        stored = "x.nii.gz" if name.lower().endswith(".gz") else "x.nii"
        save_nifti(tmp_path / "in" / stored, array, affine).rename(tmp_path / "in" / name)
    (tmp_path / "in" / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not a scan
    assert _predict(run, tmp_path / "in", tmp_path / "out") == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["B.nii.gz", "C.nii.gz", "a.nii.gz", "d.nii.gz"]
    for name in written:
        assert _dice(np.asarray(nib.load(tmp_path / "out" / name).dataobj) == 3, box) > 0.9


def test_a_case_stored_twice_is_named(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, _ = _scan()
    save_nifti(tmp_path / "in" / "dup.nii.gz", array, affine)
    save_nifti(tmp_path / "in" / "dup.nii", array, affine)
    assert _predict(run, tmp_path / "in", tmp_path / "out") == 2
    err = _one_error(capsys)
    assert f"{tmp_path / 'in' / 'dup.nii.gz'}: dup.nii has the same name without its suffix, so both would be" in err
    assert err.rstrip().endswith("both would be one case; keep one of them in the folder")


def test_a_case_stored_with_and_without_its_channel_suffix_is_named(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, _ = _scan()
    save_nifti(tmp_path / "in" / "dup.nii.gz", array, affine)
    save_nifti(tmp_path / "in" / "dup_0000.nii.gz", array, affine)
    assert _predict(run, tmp_path / "in", tmp_path / "out") == 2
    err = _one_error(capsys)
    assert err == (
        f"error: {tmp_path / 'in' / 'dup.nii.gz'}: dup_0000.nii.gz is the same case 'dup' (a case is one file named "
        "dup.nii.gz or files named dup_0000, not both); keep one of them in the folder\n"
    )
    assert not (tmp_path / "out").exists()
    # predicting into the input folder: the message names an earlier prediction as the likely second file
    assert _predict(run, tmp_path / "in", tmp_path / "in") == 2
    assert _one_error(capsys).endswith(
        "keep one of them in the folder (a label map predicted into this folder is one of them: give another "
        "--output)\n"
    )


def test_grid_offset_is_the_largest_voxel_displacement_worked_out_by_hand():
    a = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted = a.copy()
    shifted[:3, 3] = [0.3, 0.0, 0.4]  # every voxel moves by the same 0.5 mm
    assert grid_offset_mm(a, shifted, (5, 6, 7)) == pytest.approx(0.5)
    flipped = a.copy()
    flipped[0, 0] = -2.0  # x -> -x: voxel i moves by 4 i mm, most at i = 4
    assert grid_offset_mm(a, flipped, (5, 6, 7)) == pytest.approx(16.0)
    assert grid_offset_mm(a, a + 1e-6, (5, 6, 7)) < 1e-4


def test_channels_on_another_grid_are_warned_about_and_a_label_refused(caplog):
    array = np.random.default_rng(0).random((12, 10, 8)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    first = Volume(array, affine, source="t1.nii.gz")
    moved = affine.copy()
    moved[0, 3] = 0.5
    with caplog.at_level(logging.WARNING, logger="medtransfer.data.preprocess"):
        preprocess_case([first, Volume(array, moved, source="flair.nii.gz")], PreprocessConfig())
    assert [r.getMessage() for r in caplog.records] == [
        "flair.nii.gz: channel 1 lies on another grid than the first channel t1.nii.gz (a voxel moves by up to 0.5 "
        "mm between their affines, more than 0.1 voxel); they are combined voxel by voxel, as nnU-Net does: if the "
        "voxels do not correspond, resample it onto the first channel's grid (`medtransfer data check` lists such "
        "files)"
    ]
    caplog.clear()
    # a label on a mirrored grid: combined voxel by voxel it would teach mirrored targets; refused, one line.
    # x and y flipped about 0: voxel (i, j, k) moves by sqrt((2i)^2 + (2j)^2), most at (11, 9): sqrt(808) = 28.4 mm
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    label = Volume((array > 0.5).astype(np.uint8), lps, source="lab.nii.gz")
    with pytest.raises(DataError) as info:
        preprocess_case([first], PreprocessConfig(), label)
    assert str(info.value) == (
        "lab.nii.gz: the label lies on another grid than its image t1.nii.gz (a voxel moves by up to 28.4 mm between "
        "their affines, more than 0.1 voxel): resample the label onto the image's grid (nearest neighbour), or fix "
        "the affine of whichever header is wrong"
    )
    # within a tenth of a voxel (header rounding) a label is taken as it is
    near = affine.copy()
    near[:3, 3] += 0.05
    _, lab, _ = preprocess_case([first], PreprocessConfig(crop_to_foreground=False), Volume(label.array, near))
    np.testing.assert_array_equal(lab, label.array)
    # a 4D label is one error line, not a broadcasting traceback
    with pytest.raises(DataError, match=r"label has shape \(12, 10, 8, 2\); labels must be 3D"):
        preprocess_case([first], PreprocessConfig(), Volume(np.zeros((12, 10, 8, 2), np.uint8), affine))
    caplog.clear()
    noise = affine.copy()
    noise[:3, 3] += 0.5 * GRID_TOLERANCE_VOXELS  # within a tenth of a voxel: header rounding, no warning
    with caplog.at_level(logging.WARNING, logger="medtransfer.data.preprocess"):
        image, _, _ = preprocess_case([first, Volume(array, noise)], PreprocessConfig())
    assert image.shape[0] == 2
    assert not caplog.records


def test_complex_zero_length_and_overflowing_files_get_one_clear_reason(tmp_path):
    affine = np.eye(4)
    complex_path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), affine), str(complex_path))
    with pytest.raises(DataError, match=r"complex-valued voxels \(complex64\); give a real-valued scan"):
        load_nifti(complex_path, dtype="float32")
    huge = np.ones((4, 4, 4), np.float64)
    huge[0, 0, :3] = 1e39
    huge_path = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(huge, affine), str(huge_path))
    with pytest.raises(
        DataError, match=r"3 voxel\(s\) hold finite values beyond float32's range \(\|value\| up to 1e\+39"
    ):
        load_nifti(huge_path, dtype="float32")
    assert load_nifti(huge_path).array.max() == 1e39  # the stored type keeps them
    true_inf = huge.copy()
    true_inf[0, 0, :3] = np.inf
    nib.save(nib.Nifti1Image(true_inf, affine), str(huge_path))
    assert np.isinf(load_nifti(huge_path, dtype="float32").array).sum() == 3  # left to the NaN / inf check
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 4), np.float32), affine), str(empty))
    with pytest.raises(DataError, match=r"an axis of length 0 \(shape \(4, 0, 4\)\); the file holds no voxels"):
        load_nifti(empty)


def test_voxel_sizes_in_meters_are_warned_about(tmp_path, caplog):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.diag([0.001, 0.001, 0.002, 1.0]))
    img.header.set_xyzt_units("meter")
    path = tmp_path / "meters.nii.gz"
    nib.save(img, str(path))
    with caplog.at_level(logging.WARNING, logger="medtransfer.data.io"):
        load_nifti(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: the header says voxel sizes are in meters (0.001 x 0.001 x 0.002); medtransfer reads the affine "
        "as millimetres, as nibabel does: if the scan is really 1 x 1 x 2 mm per voxel, rewrite its affine in mm"
    ]


def test_a_constant_scan_is_predicted_with_a_warning(tmp_path, caplog):
    run = _run(tmp_path)
    _, affine, _ = _scan()
    zeros = save_nifti(tmp_path / "zeros.nii.gz", np.zeros((30, 20, 12), np.float32), affine)
    with caplog.at_level(logging.WARNING, logger="medtransfer.infer.io"):
        assert _predict(run, zeros, tmp_path / "z.nii.gz") == 0
    assert f"{zeros}: every voxel is 0 (an empty or constant scan): its mask cannot show anything" in caplog.text


def test_evaluate_reads_a_4d_singleton_reference_as_3d(tmp_path):
    ref = np.zeros((10, 9, 8), np.uint8)
    ref[2:6, 2:6, 2:5] = 1
    save_nifti(tmp_path / "pred" / "a.nii.gz", ref, np.eye(4))
    save_nifti(tmp_path / "ref" / "a.nii.gz", ref[..., None], np.eye(4))
    assert (
        main(
            ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["mean"]["1"]["dice"] == 1.0


def test_evaluate_warns_when_prediction_and_reference_share_no_label(tmp_path, caplog):
    ref = np.zeros((10, 9, 8), np.uint8)
    ref[2:6, 2:6, 2:5] = 1
    save_nifti(tmp_path / "pred" / "a.nii.gz", ref * 255, np.eye(4))
    save_nifti(tmp_path / "ref" / "a.nii.gz", ref, np.eye(4))
    with caplog.at_level(logging.WARNING, logger="medtransfer.metrics.evaluation"):
        assert (
            main(
                [
                    "evaluate",
                    "--pred",
                    str(tmp_path / "pred"),
                    "--ref",
                    str(tmp_path / "ref"),
                    "--out",
                    str(tmp_path / "o"),
                ]
            )
            == 0
        )
    assert "the predictions' labels (255) and the references' (1) share no value" in caplog.text


def test_evaluate_never_replaces_a_summary_it_did_not_write(tmp_path, capsys):
    ref = np.zeros((10, 9, 8), np.uint8)
    ref[2:6, 2:6, 2:5] = 1
    save_nifti(tmp_path / "pred" / "a.nii.gz", ref, np.eye(4))
    save_nifti(tmp_path / "ref" / "a.nii.gz", ref, np.eye(4))
    run = tmp_path / "run"
    run.mkdir()
    training = '{"status": "done", "best_val_dice": 0.8}'
    (run / "summary.json").write_text(training)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(run)]) == 2
    assert "summary.json: exists and is not an evaluation summary" in _one_error(capsys)
    assert (run / "summary.json").read_text() == training
    assert sorted(p.name for p in run.iterdir()) == ["summary.json"]
    # its own earlier summary is replaced, as before
    out = tmp_path / "o"
    for _ in range(2):
        assert (
            main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]) == 0
        )


def test_a_voxel_size_far_beyond_any_scan_is_refused_before_resampling(tmp_path, capsys):
    run = _run(tmp_path)  # works at 1 mm
    big = save_nifti(tmp_path / "bigvox.nii.gz", np.ones((64, 64, 40), np.float32), np.diag([40.0, 40.0, 40.0, 1.0]))
    assert _predict(run, big, tmp_path / "o.nii.gz") == 2
    assert _one_error(capsys) == (
        f"error: {big}: 2560 x 2560 x 1600 mm across (voxels of 40 x 40 x 40 mm): at the working spacing of 1 x 1 x 1 "
        "mm that is 2560 x 2560 x 1600 voxels, more than 1e+09; check the voxel size in its header\n"
    )


def test_the_mask_keeps_the_scans_qform_sform_and_their_codes(tmp_path, caplog):
    run = _run(tmp_path)
    array, affine, box = _scan()
    sheared = affine.copy()
    sheared[0, 1] = 0.2  # a sheared sform: its qform (rigid) cannot equal it
    img = nib.Nifti1Image(array, None)
    img.set_qform(affine, code=2)  # aligned
    img.set_sform(sheared, code=4)  # MNI
    scan = tmp_path / "mni.nii.gz"
    nib.save(img, str(scan))
    out = tmp_path / "mask.nii.gz"
    with caplog.at_level("WARNING", logger="medtransfer.data.io"):
        assert _predict(run, scan, out) == 0
    # the shear moves the last row of voxels (y index 19) 0.2 x 19 = 3.8 mm from where the qform puts it
    assert [r.getMessage() for r in caplog.records if "qform and sform" in r.getMessage()] == [
        f"{scan}: its qform and sform place the scan up to 3.8 mm apart (voxels of 0.8 mm); medtransfer, as nibabel, "
        "uses the sform, ITK-based tools (SimpleITK, Slicer, nnU-Net's reader) may use the qform: the label map "
        "keeps both, but check which one is right for this scan"
    ]
    mask = nib.load(str(out))
    assert int(mask.header["sform_code"]) == 4
    assert int(mask.header["qform_code"]) == 2
    np.testing.assert_allclose(mask.header.get_sform(), nib.load(str(scan)).header.get_sform(), atol=1e-6)
    np.testing.assert_allclose(mask.header.get_qform(), nib.load(str(scan)).header.get_qform(), atol=1e-6)
    np.testing.assert_allclose(mask.affine, nib.load(str(scan)).affine, atol=1e-6)
    assert _dice(np.asarray(mask.dataobj) == 3, box) > 0.9


def test_a_scan_without_orientation_codes_gets_an_uncoded_mask_and_a_warning(tmp_path, caplog):
    """qform_code = sform_code = 0: nibabel reads the voxel axes as LAS from the voxel sizes; the mask must be
    written uncoded too (coded forms would make ITK-based viewers place it mirrored and shifted beside the scan)."""
    run = _run(tmp_path)
    array, _, box = _scan()
    img = nib.Nifti1Image(array, np.diag([0.8, 1.5, 2.5, 1.0]))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    scan = tmp_path / "uncoded.nii.gz"
    nib.save(img, str(scan))
    out = tmp_path / "mask.nii.gz"
    with caplog.at_level("WARNING", logger="medtransfer.data.io"):
        assert _predict(run, scan, out) == 0
    mask, loaded = nib.load(str(out)), nib.load(str(scan))
    assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (0, 0)
    np.testing.assert_allclose(mask.affine, loaded.affine, atol=1e-6)  # nibabel's base affine, x flipped
    assert loaded.affine[0, 0] == pytest.approx(-0.8)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w for w in warnings if "no orientation" in w] == [
        f"{scan}: the header gives no orientation (qform_code and sform_code are 0); its voxel axes are read as "
        "nibabel's default (x towards the left, y anterior, z superior): if the scan is stored otherwise, the model "
        "sees it mirrored or rotated and the label map is wrong. Set the qform / sform from the scanner's DICOM "
        "(dcm2niix does) before predicting"
    ]
    assert _dice(np.asarray(mask.dataobj) == 3, box) > 0.9
    # a coded scan gives no such warning
    caplog.clear()
    coded = save_nifti(tmp_path / "coded.nii.gz", array, np.diag([0.8, 1.5, 2.5, 1.0]))
    with caplog.at_level("WARNING", logger="medtransfer.data.io"):
        assert _predict(run, coded, tmp_path / "m2.nii.gz") == 0
    assert not [r for r in caplog.records if "no orientation" in r.getMessage() or "qform and" in r.getMessage()]


def test_a_slab_much_thinner_than_the_3d_patch_is_warned_about(tmp_path, caplog):
    run = _run(tmp_path, spatial_dims=3, inference={"divisor": 4, "patch_size": [16, 16, 16]})
    slab = np.zeros((20, 20, 3), np.float32)
    slab[5:15, 5:15, :] = 1.0
    scan = save_nifti(tmp_path / "slab.nii.gz", slab, np.eye(4))  # 1 mm, the working spacing: 3 slices
    with caplog.at_level("WARNING", logger="medtransfer.infer.predictor"):
        assert _predict(run, scan, tmp_path / "m.nii.gz") == 0
    assert [r.getMessage() for r in caplog.records if "padding" in r.getMessage()] == [
        f"{scan}: at the working spacing (1 x 1 x 1 mm) the scan is 3 voxel(s) along axis 2 (patch 16): the 3D model "
        "sees mostly padding there, so expect a worse mask than on a whole scan"
    ]
    caplog.clear()
    whole = save_nifti(tmp_path / "whole.nii.gz", np.pad(slab, ((0, 0), (0, 0), (4, 5))), np.eye(4))
    with caplog.at_level("WARNING", logger="medtransfer.infer.predictor"):
        assert _predict(run, whole, tmp_path / "w.nii.gz") == 0
    assert not [r for r in caplog.records if "padding" in r.getMessage()]


def test_a_slice_from_another_plane_given_to_a_2d_model_is_warned_about(tmp_path, caplog):
    run = _run(tmp_path)  # a 2D model slicing along axis 2 (axial, for a RAS scan)
    coronal = np.zeros((20, 1, 24), np.float32)
    coronal[5:15, :, 5:15] = 1.0
    scan = save_nifti(tmp_path / "coronal.nii.gz", coronal, np.eye(4))
    with caplog.at_level("WARNING", logger="medtransfer.infer.predictor"):
        assert _predict(run, scan, tmp_path / "m.nii.gz") == 0
    assert [r.getMessage() for r in caplog.records if "another plane" in r.getMessage()] == [
        f"{scan}: at the working spacing (1 x 1 x 1 mm) the scan is 1 voxel(s) along axis 1, an axis of the slices "
        "this 2D model predicts (it slices along axis 2, 24 voxel(s)): a slice from another plane? Each slice it "
        "sees is 1 voxel(s) wide, so expect a wrong mask; give it the whole volume or slices in its own plane"
    ]
    # one axial slice, or a whole volume, is what the model was trained on: no warning
    caplog.clear()
    axial = save_nifti(tmp_path / "axial.nii.gz", np.moveaxis(coronal, 1, 2), np.eye(4))
    volume = save_nifti(tmp_path / "volume.nii.gz", np.repeat(coronal, 20, axis=1), np.eye(4))
    with caplog.at_level("WARNING", logger="medtransfer.infer.predictor"):
        assert _predict(run, axial, tmp_path / "a.nii.gz") == 0
        assert _predict(run, volume, tmp_path / "v.nii.gz") == 0
    assert not [r for r in caplog.records if "another plane" in r.getMessage()]
    # a sagittal model (slicing along axis 0) given the axial slice: its slices are 1 voxel wide along axis 2
    (tmp_path / "sagittal").mkdir()
    sagittal = _run(tmp_path / "sagittal", inference={"divisor": 4, "slice_axis": 0})
    caplog.clear()
    with caplog.at_level("WARNING", logger="medtransfer.infer.predictor"):
        assert _predict(sagittal, axial, tmp_path / "s.nii.gz") == 0
    (message,) = [r.getMessage() for r in caplog.records if "another plane" in r.getMessage()]
    assert "1 voxel(s) along axis 2, an axis of the slices this 2D model predicts (it slices along axis 0" in message
