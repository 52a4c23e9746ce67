"""Case ids name files later (``predictions/{case}.nii.gz``, cache arrays, links): every layout refuses unsafe ones."""

from __future__ import annotations

import json
import unicodedata

import pytest
from data_builders import AFFINE, build_datalist, build_nnunet, tiny_pair

from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import load_dataset
from medtransfer.data.layouts.base import CASE_ID_ALLOWED, case_id_error
from medtransfer.errors import DataError

RULE = f"case ids name files (predictions/{{case}}.nii.gz), so a case id {CASE_ID_ALLOWED}"


@pytest.mark.parametrize(
    "case_id",
    [
        "case_0000",  # nnU-Net
        "BRATS_001",  # MSD
        "CC0001",  # CC359
        "siemens_3_007",  # the benchmark's {domain}_{index:03d}
        "sub-01_ses-1.run2",
        "case 2",
        unicodedata.normalize("NFD", "café"),  # macOS file names: 'e' + combining accent
        "病例1",
        "x" * 200,
    ],
)
def test_ids_from_ordinary_file_names_are_allowed(case_id):
    assert case_id_error(case_id) is None


@pytest.mark.parametrize(
    ("case_id", "reason"),
    [
        ("", "is empty"),
        ("../../../victim", "contains '/'"),
        ("a\\b", "contains '\\\\'"),
        ("a,b", "contains ','"),
        ("a\0b", "contains '\\x00'"),
        ("a\nb", "contains '\\n'"),
        ("x;rm", "contains ';'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("a..b", "contains '..'"),
        (" a", "starts or ends with a space"),
        ("x" * 201, "is 201 bytes long"),
        ("é" * 101, "is 202 bytes long"),
    ],
)
def test_unsafe_ids_are_refused_with_the_reason(case_id, reason):
    assert case_id_error(case_id) == reason


def _explicit_nnunet(root, ids):
    """An nnU-Net dataset whose dataset.json maps ``ids`` to the three cases of :func:`build_nnunet`."""
    build_nnunet(root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {
        case_id: {"images": [f"imagesTr/case{i:03d}_0000.nii.gz"], "label": f"labelsTr/case{i:03d}.nii.gz"}
        for i, case_id in enumerate(ids)
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_dataset_json_ids_that_name_other_files_are_refused(tmp_path):
    root = _explicit_nnunet(tmp_path / "ds", ["../../../victim", "a,b", "case_2"])
    source = root / "dataset.json"
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value).splitlines()[1:] == [
        f"  {source}: 'dataset': case id '../../../victim' contains '/'; {RULE}",
        f"  {source}: 'dataset': case id 'a,b' contains ','; {RULE}",
        f"  {source}: numTraining is 3 but 1 training cases were found",
    ]
    dataset = load_dataset(root, strict=False)
    assert dataset.case_ids == ["case_2"]  # the refused entries are left out
    assert [p.outside_root for p in dataset.problems] == [True, False, False]  # '../' leads out: refused always


def test_legitimate_dataset_json_ids_pass(tmp_path):
    ids = ["BRATS_001", "siemens_3_007", unicodedata.normalize("NFD", "café")]
    assert load_dataset(_explicit_nnunet(tmp_path / "ds", ids)).case_ids == ids


def test_datalist_ids_are_checked(tmp_path):
    source = build_datalist(tmp_path / "ds")
    content = json.loads(source.read_text())
    content["training"][0]["id"] = "../../../etc/x,y"
    content["training"][1]["case"] = "BRATS_001"
    source.write_text(json.dumps(content))
    with pytest.raises(DataError) as err:
        load_dataset(source)
    assert str(err.value).splitlines()[1:] == [
        f"  {source}: training[0]: case id '../../../etc/x,y' contains ',', '/'; {RULE}"
    ]
    assert load_dataset(source, strict=False).case_ids == ["BRATS_001", "s2"]


def test_ids_from_file_names_are_checked_naming_the_file(tmp_path):
    root = build_nnunet(tmp_path / "ds")
    image, label = tiny_pair()
    bad = root / "imagesTr" / "a,b_0000.nii.gz"
    save_nifti(bad, image, AFFINE)
    save_nifti(root / "labelsTr" / "a,b.nii.gz", label, AFFINE)
    dataset = load_dataset(root, strict=False)
    assert [str(p) for p in dataset.problems] == [
        f"{root / 'dataset.json'}: numTraining is 3 but 4 training cases were found",
        f"{bad}: case id 'a,b' contains ','; {RULE}",
    ]
    assert dataset.case_ids == ["case000", "case001", "case002"]


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ("3", "numTraining is '3' (str); it must be a whole number, the number of training cases (3 found)"),
        (2.5, "numTraining is 2.5 (float); it must be a whole number, the number of training cases (3 found)"),
        (True, "numTraining is True (bool); it must be a whole number, the number of training cases (3 found)"),
        (4.0, "numTraining is 4 but 3 training cases were found"),
    ],
)
def test_num_training_must_be_a_whole_number(tmp_path, declared, message):
    root = build_nnunet(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": declared}))
    assert [str(p) for p in load_dataset(root, strict=False).problems] == [f"{root / 'dataset.json'}: {message}"]


def test_ids_of_public_datasets_and_a_plus_are_allowed():
    from medtransfer.data.layouts.base import case_id_error

    for case_id in (
        "BraTS-GLI-00000-000",
        "sub-r001s001_ses-1",
        "01016SACH",
        "OAS1_0001_MR1",
        "hippocampus_001",
        "case_00000",
        "1.2.840.113619.2",
        "T1+C_001",
    ):
        assert case_id_error(case_id) is None, case_id
    assert case_id_error("t1,flair") == "contains ','"
