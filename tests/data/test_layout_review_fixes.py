"""Review fixes of the dataset readers and ``medtransfer data check``: labels, duplicates, metadata, paths, messages."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from data_builders import AFFINE, build_cc359, build_datalist, build_folders, build_nnunet, tiny_pair

from medtransfer.cli import main
from medtransfer.data.check import check_dataset, inspect_dataset
from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import load_dataset
from medtransfer.data.layouts.nnunet import parse_labels
from medtransfer.errors import DataError

ESCAPES = "which escapes the dataset root {root}; paths must stay inside it"


def _messages(problems):
    return [(p.file, p.message) for p in problems]


def _label(values, dtype=np.uint8):
    """An 8^3 label map holding ``values`` (the first one everywhere else)."""
    label = np.full((8, 8, 8), values[0], dtype)
    for i, value in enumerate(values[1:]):
        label[2 + i, 2:6, 3:7] = value
    return label


# A. labels of a dataset that declares none are binary, as finetune reads them


@pytest.mark.parametrize(("values", "dtype"), [((0, 255), np.uint8), ((0, 1, 2), np.uint8), ((0, 254), np.int16)])
def test_undeclared_labels_default_to_binary_with_a_hint(tmp_path, values, dtype):
    root = build_folders(tmp_path / "ds")
    label = root / "labels" / "scan1.nii.gz"
    save_nifti(label, _label(values, dtype), AFFINE)
    bad = [v for v in values if v > 1]
    example = ", ".join(['"background": 0'] + [f'"NAME_{v}": {v}' for v in values if v])
    assert _messages(check_dataset(root)) == [
        (
            str(label),
            f"label values {bad} (values {list(values)}) are not allowed: the dataset declares no labels, so labels "
            "are binary (0=background, 1=foreground); recode the foreground to 1; or declare every value in "
            f'{root / "dataset.json"} as "labels": {{{example}}}',
        )
    ]
    (root / "dataset.json").write_text(json.dumps({"labels": {str(v): f"l{v}" for v in sorted({0, 1, *values})}}))
    assert check_dataset(root) == []


def test_negative_label_values_are_refused_with_the_values_in_the_file(tmp_path):
    root = build_folders(tmp_path / "ds")
    label = root / "labels" / "scan0.nii.gz"
    save_nifti(label, _label((-1, 1), np.int16), AFFINE)
    assert _messages(check_dataset(root)) == [
        (
            str(label),
            "label has values [-1] outside 0..255 (values [-1, 1]); label values must be integers 0..255, with 0 "
            "the background",
        )
    ]


def test_label_values_above_255_are_refused_as_training_refuses_them(tmp_path, capsys):
    """Training stores labels as uint8: ``data check`` refuses a voxel value above 255 and a declared one."""
    root = build_nnunet(tmp_path / "ds", n=1)
    label = root / "labelsTr" / "case000.nii.gz"
    save_nifti(label, _label((0, 1, 300), np.uint16), AFFINE)
    meta = json.loads((root / "dataset.json").read_text())
    assert main(["data", "check", str(root)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{label}: label has values [300] outside 0..255 (values [0, 1, 300]); label values must be integers "
        "0..255, with 0 the background",
        f"1 problem(s) found in {root}",
    ]
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "target": 1, "big": 300}}))
    assert main(["data", "check", str(root)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{root / 'dataset.json'}: label 'big' has value 300; label values must be integers 0..255 (0 = background)",
        f"1 problem(s) found in {root}",
    ]


def test_declared_labels_name_their_file_per_layout(tmp_path):
    path = build_datalist(tmp_path / "dl")
    save_nifti(tmp_path / "dl" / "labelsTr" / "s0.nii.gz", _label((0, 3)), AFFINE)
    assert [p.message for p in check_dataset(path)] == [
        "label values [3] are not declared in datalist.json (0=background, 1=target)"
    ]
    root = build_cc359(tmp_path / "cc")
    save_nifti(root / "Silver-standard" / "CC0001_philips_15_55_M_ss.nii.gz", _label((0, 2)), AFFINE)
    assert [p.message for p in check_dataset(root)] == [
        "label values [2] are not declared in the cc359 layout (0=background, 1=brain)"
    ]


# B. duplicate case ids


def test_folders_duplicate_case_id_names_both_files(tmp_path):
    root = build_folders(tmp_path / "ds", n=2)
    image, label = tiny_pair(0)
    save_nifti(root / "images" / "scan0.nii", image, AFFINE)
    save_nifti(root / "labels" / "scan0.nii", label, AFFINE)
    unique = "case ids must be unique (rename or remove one of the two files)"
    expected = [
        (
            str(root / "images" / "scan0.nii.gz"),
            f"case id 'scan0' is also the case id of {root}/images/scan0.nii; {unique}",
        ),
        (
            str(root / "labels" / "scan0.nii.gz"),
            f"case id 'scan0' is also the case id of {root}/labels/scan0.nii; {unique}",
        ),
    ]
    assert _messages(check_dataset(root)) == expected
    with pytest.raises(DataError, match="case id 'scan0' is also the case id of"):
        load_dataset(root)


def test_cc359_duplicate_case_id_of_two_scanners_is_refused(tmp_path):
    root = build_cc359(tmp_path, names=("CC0001_ge_3_40_F", "CC0001_siemens_3_33_F", "CC0002_philips_15_55_M"))
    first, second = (root / "Original" / f"{n}.nii.gz" for n in ("CC0001_ge_3_40_F", "CC0001_siemens_3_33_F"))
    assert _messages(check_dataset(root)) == [
        (
            str(second),
            f"case id 'CC0001' is also the case id of {first}; case ids must be unique (rename or remove one of the "
            "two files)",
        )
    ]
    with pytest.raises(DataError, match="1 problem"):
        load_dataset(root)


# C. metadata.csv


def test_metadata_csv_with_a_byte_order_mark_is_read(tmp_path):
    root = build_nnunet(tmp_path, n=2)
    (root / "metadata.csv").write_bytes("case,subject,domain\ncase000,s0,a\ncase001,s0,b\n".encode("utf-8-sig"))
    dataset = load_dataset(root)
    assert [(c.subject, c.domain) for c in dataset] == [("s0", "a"), ("s0", "b")]


def test_metadata_csv_matching_no_case_is_one_problem(tmp_path, capsys):
    root = build_nnunet(tmp_path, n=2)
    (root / "metadata.csv").write_text("case,domain\ncase000.nii.gz,a\ncase001.nii.gz,b\n")
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{root}/metadata.csv: none of its 2 row(s) names a case of the dataset (its 'case' column has e.g. "
        "'case000.nii.gz', 'case001.nii.gz'; the dataset's case ids are e.g. 'case000', 'case001'); the 'case' "
        "column must hold case ids",
        f"1 problem(s) found in {root}",
    ]


def test_metadata_csv_extra_rows_warn_once(tmp_path, capsys, caplog):
    root = build_nnunet(tmp_path, n=2)
    (root / "metadata.csv").write_text("case,domain\ncase000,a\nother,b\n")
    with caplog.at_level(logging.WARNING):
        assert main(["data", "check", str(root)]) == 0
    assert [r.getMessage() for r in caplog.records if "not in the dataset" in r.getMessage()] == [
        f"{root}/metadata.csv: 1 listed case(s) are not in the dataset, e.g. ['other']"
    ]


def test_metadata_csv_symlink_out_of_the_root_is_refused(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=1)
    outside = tmp_path / "meta.csv"
    outside.write_text("case,domain\ncase000,a\n")
    (root / "metadata.csv").symlink_to(outside)
    problems = load_dataset(root, strict=False).problems
    assert _messages(problems) == [(str(root / "metadata.csv"), f"links to {outside}, {ESCAPES.format(root=root)}")]
    assert problems[0].outside_root
    assert load_dataset(root, strict=False).cases[0].domain is None


def test_a_folders_datalist_symlinked_out_of_the_root_is_refused(tmp_path, capsys):
    root = build_datalist(tmp_path / "ds").parent
    outside = tmp_path / "elsewhere.json"
    (root / "datalist.json").rename(outside)
    (root / "datalist.json").symlink_to(outside)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value) == f"{root / 'datalist.json'}: links to {outside}, {ESCAPES.format(root=root)}"
    assert main(["data", "check", str(root)]) != 0
    assert f"datalist.json: links to {outside}" in capsys.readouterr().out
    # named directly, the file is the user's choice and its folder the root (its paths resolve inside it)
    assert len(load_dataset(root / "datalist.json").cases) == 3


@pytest.mark.parametrize("layout", ["nnunet", "folders"])
def test_a_dataset_json_symlinked_out_of_the_root_is_refused(tmp_path, capsys, layout):
    """As the datalist and metadata.csv are: the dataset's own index must lie inside its folder."""
    root = build_nnunet(tmp_path / "ds", n=1) if layout == "nnunet" else build_folders(tmp_path / "ds", n=1)
    outside = tmp_path / "elsewhere.json"
    if layout == "nnunet":
        (root / "dataset.json").rename(outside)
    else:
        outside.write_text(json.dumps({"labels": {"background": 0, "brain": 1}, "channel_names": {"0": "T1"}}))
    (root / "dataset.json").symlink_to(outside)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value) == f"{root / 'dataset.json'}: links to {outside}, {ESCAPES.format(root=root)}"
    assert main(["data", "check", str(root)]) != 0
    assert f"dataset.json: links to {outside}" in capsys.readouterr().out


# D. paths: 1 mm references, datalist entries, symlinked root


def test_labels_1mm_are_confined_matched_and_checked(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=2)
    ref_dir = root / "labelsTr_1mm"
    outside = tmp_path / "out.nii.gz"
    save_nifti(outside, tiny_pair(0)[1], AFFINE)
    ref_dir.mkdir()
    (ref_dir / "case000.nii.gz").symlink_to(outside)
    save_nifti(ref_dir / "case001.nii.gz", _label((0, 4)), AFFINE)
    save_nifti(ref_dir / "case009.nii.gz", tiny_pair(0)[1], AFFINE)
    assert _messages(check_dataset(root)) == [
        (str(ref_dir / "case000.nii.gz"), f"links to {outside}, {ESCAPES.format(root=root)}"),
        (str(ref_dir / "case009.nii.gz"), "no case 'case009' in the dataset for this 1 mm reference"),
        (str(ref_dir / "case001.nii.gz"), "label values [4] are not declared in dataset.json (0=background, 1=target)"),
    ]
    with pytest.raises(DataError, match="labelsTr_1mm/case000.nii.gz: links to"):
        load_dataset(root)


def _reference_at(root, case, label, affine):
    ref_dir = root / "labelsTr_1mm"
    ref_dir.mkdir(exist_ok=True)
    save_nifti(ref_dir / f"{case}.nii.gz", label, affine)
    return ref_dir / f"{case}.nii.gz"


def test_a_1mm_reference_in_the_cases_space_passes_at_any_grid(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=1)
    # the case's label is an 8^3 cube at 1 mm; a 2x finer reference of the same cube covers the same world box
    fine = np.zeros((16, 16, 16), np.uint8)
    fine[4:12, 4:12, 6:14] = 1
    _reference_at(root, "case000", fine, np.diag([0.5, 0.5, 0.5, 1.0]) @ _translation(-0.25))
    assert check_dataset(root) == []


def _translation(offset):
    shift = np.eye(4)
    shift[:3, 3] = offset
    return shift


def test_a_1mm_reference_in_another_space_is_a_problem(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=2)
    far = AFFINE.copy()
    far[:3, 3] = [-90, -126, -72]  # template (MNI-like) coordinates: no overlap with the scan's box at the origin
    path = _reference_at(root, "case000", tiny_pair(0)[1], far)
    assert _messages(check_dataset(root)) == [
        (
            str(path),
            "1 mm reference covers [-90, -83] x [-126, -119] x [-72, -65] mm in world space, the image "
            "case000_0000.nii.gz covers [0, 7] x [0, 7] x [0, 7] (0% overlap); the reference must be in the image's "
            "space (same scanner/world coordinates), at 1 mm",
        )
    ]


def test_a_1mm_reference_marking_something_else_is_a_problem(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=1)
    moved = np.zeros((40, 8, 8), np.uint8)  # same grid origin, longer field of view, cube 30 voxels away
    moved[32:36, 2:6, 3:7] = 1  # label x 2..5 vs reference x 32..35: nearest distances 27-30 mm, median 28.5
    path = _reference_at(root, "case000", moved, AFFINE)
    problems = _messages(check_dataset(root))
    assert problems == [
        (
            str(path),
            f"the foreground of the label {root / 'labelsTr' / 'case000.nii.gz'} lies a median 28.5 mm from this "
            "reference's (allowed 12.0 mm); the 1 mm reference must mark the same structures in the same space",
        )
    ]
    two = moved.copy()
    two[2:6, 2:6, 3:7] = 1  # the label's cube plus one the coarse label lost: fine
    _reference_at(root, "case000", two, AFFINE)
    assert check_dataset(root) == []
    _reference_at(root, "case000", np.zeros((8, 8, 8), np.uint8), AFFINE)
    assert _messages(check_dataset(root)) == [
        (str(path), "the reference has no foreground but the label has; they must mark the same structures")
    ]


def _datalist(tmp_path, entry):
    path = build_datalist(tmp_path, n=2)
    content = json.loads(path.read_text())
    content["training"][0] = entry
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"image": "imagesTr/s0\u0000.nii.gz", "label": "labelsTr/s0.nii.gz"},
            "training[0]: 'image': path 'imagesTr/s0\\x00.nii.gz' contains a NUL character (\\u0000); give a plain "
            "file path",
        ),
        (
            {"image": "", "label": "labelsTr/s0.nii.gz"},
            "training[0]: 'image' is empty; give a file path relative to {root}",
        ),
        (
            {"image": 5, "label": "labelsTr/s0.nii.gz"},
            "training[0]: 'image' is 5 (int); expected a file path (a string)",
        ),
        (
            {"image": "labelsTr/s0.nii.gz", "label": "labelsTr/s0.nii.gz"},
            "training[0]: 'label' 'labelsTr/s0.nii.gz' is the image file itself; the label must be its own file",
        ),
    ],
)
def test_bad_datalist_paths_are_one_line_each(tmp_path, capsys, entry, message):
    path = _datalist(tmp_path, entry)
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{path}: {message.format(root=tmp_path)}", f"1 problem(s) found in {path}"]
    assert "Traceback" not in out.err


def test_datalist_image_that_is_a_folder(tmp_path):
    path = _datalist(tmp_path, {"image": "imagesTr", "label": "labelsTr/s0.nii.gz"})
    assert _messages(check_dataset(path)) == [
        (str(tmp_path / "imagesTr"), "image path is a folder, not a file; give the image's NIfTI file")
    ]


def test_nnunet_mapping_label_that_is_the_image(tmp_path):
    root = build_nnunet(tmp_path, n=1)
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {"case000": {"images": ["imagesTr/case000_0000.nii.gz"], "label": "imagesTr/case000_0000.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    assert [p.message for p in load_dataset(root, strict=False).problems] == [
        "case 'case000': 'label' 'imagesTr/case000_0000.nii.gz' is an image file; the label must be its own file",
        "numTraining is 1 but 0 training cases were found",
    ]


def test_symlink_loop_is_a_problem_not_a_traceback(tmp_path):
    root = build_folders(tmp_path / "ds", n=2)
    loop = root / "images" / "scan1.nii.gz"
    loop.unlink()
    loop.symlink_to(loop.name)
    problems = load_dataset(root, strict=False).problems
    assert [p.file for p in problems] == [str(loop)]
    assert problems[0].message.startswith("cannot be resolved (")
    assert problems[0].message.endswith("); give a file or a symlink to one")


def test_symlinked_dataset_root_is_fine(tmp_path):
    build_folders(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert check_dataset(tmp_path / "link") == []


# E. one line per problem


def test_affine_mismatch_is_one_line(tmp_path, capsys):
    root = build_folders(tmp_path / "ds", n=1)
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0
    save_nifti(root / "labels" / "scan0.nii.gz", tiny_pair(0)[1], shifted)
    assert main(["data", "check", str(root)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{root}/labels/scan0.nii.gz: label affine differs from image scan0.nii.gz by up to 10 (tolerance 0.001): "
        "[[1 0 0 10]; [0 1 0 0]; [0 0 1 0]] vs [[1 0 0 0]; [0 1 0 0]; [0 0 1 0]]",
        f"1 problem(s) found in {root}",
    ]


# F. dataset.json


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {"background": 0, "brain": 1, "tissue": 1},
            "labels 'brain' and 'tissue' both have value 1; each label needs its own value",
        ),
        (
            {"background": 0, "brain": -1},
            "label 'brain' has value -1; label values must be integers 0..255 (0 = background)",
        ),
        (
            {"-1": "brain", "0": "background"},
            "label 'brain' has value -1; label values must be integers 0..255 (0 = background)",
        ),
        (
            {"background": 0, "brain": 256},
            "label 'brain' has value 256; label values must be integers 0..255 (0 = background)",
        ),
        (
            {"0": "background", "300": "brain"},
            "label 'brain' has value 300; label values must be integers 0..255 (0 = background)",
        ),
        (
            {"background": 0, "tumour": [1, 256]},
            "label 'tumour' has value 256; label values must be integers 0..255 (0 = background)",
        ),
        ({"brain": 1}, "'labels' (1=brain) has no value 0; declare the background as \"background\": 0"),
    ],
)
def test_bad_label_declarations(tmp_path, labels, message):
    with pytest.raises(DataError) as err:
        parse_labels(labels, tmp_path / "dataset.json")
    assert str(err.value) == f"{tmp_path}/dataset.json: {message}"
    root = build_nnunet(tmp_path / "ds", n=1)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": labels}))
    assert _messages(check_dataset(root)) == [(str(root / "dataset.json"), message)]


def test_file_ending_mismatch_is_named_once_per_folder(tmp_path):
    root = build_nnunet(tmp_path, n=2)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii"}))
    rule = "but dataset.json's 'file_ending' is '.nii'; every file must end in 'file_ending' (rename the files or set"
    assert _messages(check_dataset(root)) == [
        (
            str(root / "imagesTr"),
            f'2 file(s) end in .nii.gz (e.g. case000_0000.nii.gz) {rule} "file_ending": ".nii.gz")',
        ),
        (str(root / "labelsTr"), f'2 file(s) end in .nii.gz (e.g. case000.nii.gz) {rule} "file_ending": ".nii.gz")'),
        (str(root / "dataset.json"), "numTraining is 2 but 0 training cases were found"),
        (str(root), "empty dataset: no cases found in the nnunet layout"),
    ]


def test_labels_without_foreground_warn(tmp_path, capsys):
    root = build_folders(tmp_path / "ds", n=2)
    for i in range(2):
        save_nifti(root / "labels" / f"scan{i}.nii.gz", np.zeros((8, 8, 8), np.uint8), AFFINE)
    result = inspect_dataset(root)
    assert result.problems == []
    assert main(["data", "check", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"warning: {root}: no label has any foreground: all 2 label file(s) hold only 0 (background); a model "
        "trained on them learns to predict background everywhere"
    )
    save_nifti(root / "labels" / "scan0.nii.gz", tiny_pair(0)[1], AFFINE)
    assert inspect_dataset(root).warnings == []


def test_metadata_rows_match_accented_ids_in_either_unicode_form(tmp_path):
    """A file named on macOS (decomposed: 'e' + combining accent) and a metadata.csv row typed composed ('é') are
    one case: its domain is attached."""
    import unicodedata

    root = build_nnunet(tmp_path / "ds", n=1)
    decomposed = unicodedata.normalize("NFD", "café")
    for folder, suffix in (("imagesTr", "_0000.nii.gz"), ("labelsTr", ".nii.gz")):
        (root / folder / f"case000{suffix}").rename(root / folder / f"{decomposed}{suffix}")
    (root / "metadata.csv").write_text(f"case,domain\n{unicodedata.normalize('NFC', 'café')},siemens\n")
    dataset = load_dataset(root)
    assert [c.domain for c in dataset.cases] == ["siemens"]
