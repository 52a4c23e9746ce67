from __future__ import annotations

import json

import numpy as np
import pytest
from data_builders import AFFINE, build_cc359, build_datalist, build_folders, build_nnunet, tiny_pair

from medtransfer.cli import main
from medtransfer.data.check import check_dataset
from medtransfer.data.io import save_nifti
from medtransfer.errors import DataError


def _only(problems):
    assert len(problems) == 1, problems
    return problems[0]


@pytest.mark.parametrize("builder", [build_nnunet, build_cc359, build_folders])
def test_clean_folder_datasets_have_no_problem(tmp_path, builder):
    assert check_dataset(builder(tmp_path)) == []


def test_clean_datalist_has_no_problem(tmp_path):
    assert check_dataset(build_datalist(tmp_path, channels=2)) == []


def test_corrupt_file(tmp_path):
    root = build_nnunet(tmp_path)
    (root / "imagesTr" / "case001_0000.nii.gz").write_bytes(b"\x1f\x8b garbage")
    problem = _only(check_dataset(root))
    assert problem.file.endswith("imagesTr/case001_0000.nii.gz")
    assert "unreadable or corrupt" in problem.message


def test_label_shape_mismatch(tmp_path):
    root = build_nnunet(tmp_path)
    save_nifti(root / "labelsTr" / "case002.nii.gz", np.zeros((8, 8, 7), np.uint8), AFFINE)
    problem = _only(check_dataset(root))
    assert problem.file.endswith("labelsTr/case002.nii.gz")
    assert "label shape (8, 8, 7) differs from image case002_0000.nii.gz shape (8, 8, 8)" in problem.message


def test_label_affine_mismatch_beyond_tolerance(tmp_path):
    root = build_nnunet(tmp_path)
    _, label = tiny_pair(0)
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    save_nifti(root / "labelsTr" / "case000.nii.gz", label, shifted)
    problem = _only(check_dataset(root))
    assert problem.file.endswith("case000.nii.gz")
    assert "affine differs" in problem.message
    assert check_dataset(root, affine_tolerance=1.0) == []


@pytest.mark.parametrize("tolerance", ["nan", "inf", "-inf", "-1"])
def test_affine_tolerance_that_passes_everything_or_nothing_is_refused(tmp_path, capsys, tolerance):
    """A mirrored label (x axis flipped) is a problem at the default tolerance; ``nan`` or ``inf`` would let it pass
    (no difference exceeds them) and a negative one fail every clean label, so the command refuses them."""
    root = build_nnunet(tmp_path, n=1)
    _, label = tiny_pair(0)
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirrored[0, 3] = 7.0
    save_nifti(root / "labelsTr" / "case000.nii.gz", label, mirrored)
    assert main(["data", "check", str(root)]) == 1
    assert "label affine differs from image case000_0000.nii.gz by up to 7" in capsys.readouterr().out
    assert main(["data", "check", str(root), f"--affine-tolerance={tolerance}"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: affine tolerance (--affine-tolerance) is {float(tolerance)}; expected a finite number >= 0 (the "
        "largest image/label affine difference, default 0.001)"
    ]
    assert main(["data", "check", str(root), "--affine-tolerance", "20"]) == 0  # a finite one is still honoured


def test_undeclared_and_fractional_label_values(tmp_path):
    root = build_nnunet(tmp_path)
    _, label = tiny_pair(0)
    label[0, 0, 0] = 7
    save_nifti(root / "labelsTr" / "case000.nii.gz", label, AFFINE)
    save_nifti(root / "labelsTr" / "case001.nii.gz", label * 0.5, AFFINE, dtype=np.float32)
    problems = check_dataset(root)
    assert len(problems) == 2
    assert problems[0].file.endswith("case000.nii.gz")
    assert "label values [7] are not declared in dataset.json (0=background, 1=target)" in problems[0].message
    assert problems[1].message == "label has non-integer values [0.5, 3.5]; labels must be integers"


def test_fractional_label_values_show_nine_digits_and_the_header_scaling(tmp_path):
    """A uint8 mask 0/255 stored with scl_slope 1/255: read as 255 * float32(1/255) = 1.0000000591..., which '%g'
    printed as '1' ("non-integer values [1]"); nine digits show the fraction and the note names the scaling."""
    import nibabel as nib

    root = build_nnunet(tmp_path, n=1)
    _, label = tiny_pair(0)
    path = root / "labelsTr" / "case000.nii.gz"
    scaled = nib.Nifti1Image(label * np.uint8(255), AFFINE)
    scaled.header.set_slope_inter(1 / 255, 0)
    nib.save(scaled, path)
    assert _only(check_dataset(root)).message == (
        "label has non-integer values [1.00000006]; labels must be integers; its header scales the stored values "
        "(scl_slope 0.00392156886, scl_inter 0): store the label values themselves, unscaled (scl_slope 1, "
        "scl_inter 0)"
    )
    shifted = nib.Nifti1Image(label.astype(np.int16), AFFINE)
    shifted.header.set_slope_inter(1.0, 0.25)
    nib.save(shifted, path)
    assert _only(check_dataset(root)).message == (
        "label has non-integer values [0.25, 1.25]; labels must be integers; its header scales the stored values "
        "(scl_slope 1, scl_inter 0.25): store the label values themselves, unscaled (scl_slope 1, scl_inter 0)"
    )


def test_nan_and_inf_voxels(tmp_path):
    root = build_nnunet(tmp_path)
    image, _ = tiny_pair(1)
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    save_nifti(root / "imagesTr" / "case001_0000.nii.gz", image, AFFINE)
    problem = _only(check_dataset(root))
    assert problem.file.endswith("case001_0000.nii.gz")
    assert "3 non-finite voxel(s) (1 NaN, 2 inf)" in problem.message


def test_wrong_dimensionality(tmp_path):
    root = build_nnunet(tmp_path)
    image, _ = tiny_pair(0)
    save_nifti(root / "imagesTr" / "case000_0000.nii.gz", np.stack([image, image], -1), AFFINE)
    save_nifti(root / "imagesTr" / "case001_0000.nii.gz", image[..., 0], AFFINE)
    problems = check_dataset(root)
    files = [p.file.rsplit("/", 1)[-1] for p in problems]
    assert files == ["case000_0000.nii.gz", "case001_0000.nii.gz", "case001.nii.gz"]  # + label grid mismatch
    assert problems[0].message == (
        "image has shape (8, 8, 8, 2) (4D); the layout (one file per channel) allows 3D (or 4D with 1 channel)"
    )
    assert "(2D)" in problems[1].message


def test_datalist_4d_with_wrong_channel_count(tmp_path):
    path = build_datalist(tmp_path, channels=2)
    image, _ = tiny_pair(0)
    save_nifti(tmp_path / "imagesTr" / "s1.nii.gz", np.stack([image] * 3, -1), AFFINE)
    problem = _only(check_dataset(path))
    assert problem.file.endswith("s1.nii.gz")
    assert problem.message == (
        "image has shape (8, 8, 8, 3) (4D); the layout (one file holding all channels) allows 4D with 2 channels"
    )


def test_datalist_3d_image_where_every_file_holds_two_channels(tmp_path):
    """A 3D file cannot hold 2 channels: the message says only what the layout allows (not '3D, or ...')."""
    path = build_datalist(tmp_path, channels=2)
    image, _ = tiny_pair(0)
    save_nifti(tmp_path / "imagesTr" / "s1.nii.gz", image, AFFINE)
    problem = _only(check_dataset(path))
    assert problem.file == str(tmp_path / "imagesTr" / "s1.nii.gz")
    assert problem.message == (
        "image has shape (8, 8, 8) (3D); the layout (one file holding all channels) allows 4D with 2 channels"
    )


def test_missing_label_image_and_channel(tmp_path):
    root = build_nnunet(tmp_path, channels=("T1", "T2"))
    (root / "labelsTr" / "case000.nii.gz").unlink()
    (root / "imagesTr" / "case001_0001.nii.gz").unlink()
    for name in ("case002_0000.nii.gz", "case002_0001.nii.gz"):
        (root / "imagesTr" / name).unlink()
    messages = {p.file.rsplit("/", 1)[-1]: p.message for p in check_dataset(root)}
    assert messages["case000.nii.gz"] == "label missing for case 'case000'"
    assert messages["case001_0001.nii.gz"] == "channel file missing for case 'case001'"
    assert messages["case002.nii.gz"].startswith("label has no image")
    assert messages["dataset.json"] == "numTraining is 3 but 2 training cases were found"


def test_missing_file_listed_in_datalist(tmp_path):
    path = build_datalist(tmp_path)
    (tmp_path / "imagesTr" / "s2.nii.gz").unlink()
    problem = _only(check_dataset(path))
    assert problem.file.endswith("imagesTr/s2.nii.gz")
    assert problem.message == "image file missing"


def test_duplicates_and_escaping_paths_in_datalist(tmp_path):
    path = build_datalist(tmp_path / "ds")
    content = json.loads(path.read_text())
    content["training"] += [content["training"][0], {"image": "../outside.nii.gz", "label": "./labelsTr/s0.nii.gz"}]
    path.write_text(json.dumps(content))
    problems = check_dataset(path)
    assert all(p.file == str(path) for p in problems)
    assert any("duplicate case id 's0'" in p.message for p in problems)
    assert any("'../outside.nii.gz' escapes the dataset root" in p.message for p in problems)


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    problem = _only(check_dataset(tmp_path))
    assert problem.file == str(tmp_path)
    assert "empty dataset" in problem.message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    root = build_nnunet(tmp_path, n=4)
    (root / "imagesTr" / "case000_0000.nii.gz").write_bytes(b"junk")
    (root / "labelsTr" / "case001.nii.gz").unlink()
    image, label = tiny_pair(2)
    image[1, 1, 1] = np.nan
    save_nifti(root / "imagesTr" / "case002_0000.nii.gz", image, AFFINE)
    save_nifti(root / "labelsTr" / "case003.nii.gz", label + 4, AFFINE)
    files = sorted(p.file.rsplit("/", 1)[-1] for p in check_dataset(root))
    assert files == ["case000_0000.nii.gz", "case001.nii.gz", "case002_0000.nii.gz", "case003.nii.gz"]


def test_broken_dataset_json_is_a_problem(tmp_path):
    root = build_nnunet(tmp_path)
    (root / "dataset.json").write_text("{not json")
    problem = _only(check_dataset(root))
    assert problem.file == str(root / "dataset.json")  # the file is named once, not repeated in the message
    assert problem.message.startswith("not a readable JSON file (")


def test_not_a_dataset_raises(tmp_path):
    with pytest.raises(DataError, match="not a dataset in any known layout"):
        check_dataset(tmp_path)


def test_an_nnunet_folder_without_dataset_json_is_told_so(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=1)
    (root / "dataset.json").unlink()
    with pytest.raises(DataError) as info:
        check_dataset(root)
    assert "It has imagesTr/ but no dataset.json: an nnU-Net raw dataset needs one, e.g. {" in str(info.value)


def test_cli_exit_codes_and_output(tmp_path, capsys):
    root = build_nnunet(tmp_path / "ds")
    assert main(["data", "check", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    (root / "labelsTr" / "case001.nii.gz").write_bytes(b"junk")
    (root / "labelsTr" / "case002.nii.gz").unlink()
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "labelsTr/case001.nii.gz: unreadable or corrupt" in out
    assert "labelsTr/case002.nii.gz: label missing" in out
    assert "2 problem(s)" in out
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "nnunet" in captured.err
    assert "cc359" in captured.err
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_zero_or_singular_affine_is_a_problem_not_ok(tmp_path, write_raw_affine, capsys):
    root = build_nnunet(tmp_path)
    image, label = tiny_pair(1)
    write_raw_affine(root / "imagesTr" / "case001_0000.nii.gz", image, np.zeros((4, 4)))
    write_raw_affine(root / "labelsTr" / "case001.nii.gz", label, np.diag([1.0, 0.0, 1.0, 1.0]))
    problems = check_dataset(root)
    assert [p.file.rsplit("/", 1)[-1] for p in problems] == ["case001_0000.nii.gz", "case001.nii.gz"]
    assert problems[0].message.startswith("the voxel-to-world affine is zero")
    assert problems[1].message.startswith("the voxel-to-world affine is singular")
    assert main(["data", "check", str(root)]) == 1
    assert "OK" not in capsys.readouterr().out
