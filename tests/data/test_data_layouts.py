from __future__ import annotations

import json

import pytest
from data_builders import build_cc359, build_datalist, build_folders, build_nnunet

from medtransfer.data.layouts import Layout, load_dataset, write_dataset_json
from medtransfer.errors import DataError


def test_write_dataset_json_is_nnunet_v2(tmp_path):
    path = write_dataset_json(tmp_path, {"background": 0, "brain": 1}, ["T1", "FLAIR"], 5, name="x")
    content = json.loads(path.read_text())
    assert content == {
        "channel_names": {"0": "T1", "1": "FLAIR"},
        "labels": {"background": 0, "brain": 1},
        "numTraining": 5,
        "file_ending": ".nii.gz",
        "name": "x",
    }


def test_write_dataset_json_requires_background(tmp_path):
    with pytest.raises(DataError, match="background"):
        write_dataset_json(tmp_path, {"brain": 1}, ["T1"], 1)


def test_read_nnunet_multichannel_with_test_cases(tmp_path):
    root = build_nnunet(tmp_path, n=2, channels=("T1", "T2"), test=1)
    ds = load_dataset(root)
    assert ds.layout == Layout.NNUNET
    assert ds.case_ids == ["case000", "case001"]
    assert ds.channel_names == ("T1", "T2")
    assert ds.label_names == {0: "background", 1: "target"}
    assert [p.name for p in ds.cases[1].images] == ["case001_0000.nii.gz", "case001_0001.nii.gz"]
    assert ds.cases[1].label.name == "case001.nii.gz"
    assert [c.case_id for c in ds.test_cases] == ["test000"]
    assert ds.test_cases[0].label is None
    assert ds.cases[0].subject == "case000"


def test_nnunet_ignores_files_that_are_not_nifti_with_a_warning(tmp_path, caplog):
    # what a shared folder collects: notes, a thumbnail cache, an old copy in a sub-folder (nnU-Net lists only the
    # files ending in file_ending); a NIfTI file that is not named {case}_{XXXX} is still refused
    root = build_nnunet(tmp_path, n=2, test=1)
    (root / "imagesTr" / "README.txt").write_text("scanned 2019")
    (root / "imagesTr" / "Thumbs.db").write_bytes(b"\0")
    (root / "imagesTr" / "old").mkdir()
    (root / "imagesTs" / "notes.md").write_text("-")
    (root / "labelsTr" / "labels.xlsx").write_bytes(b"\0")
    with caplog.at_level("WARNING", logger="medtransfer.data.layouts.nnunet"):
        ds = load_dataset(root)
        again = load_dataset(root)  # a grid loads the dataset once per cell: the same warning once per process
    assert ds.case_ids == again.case_ids == ["case000", "case001"]
    assert [c.case_id for c in ds.test_cases] == ["test000"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert any("imagesTr: ignoring 3 entries that are not NIfTI: README.txt, Thumbs.db, old" in m for m in messages)
    assert any("imagesTs: ignoring 1 entry that is not NIfTI: notes.md" in m for m in messages)
    assert any("labelsTr: ignoring 1 entry that is not NIfTI: labels.xlsx" in m for m in messages)
    (root / "imagesTr" / "case001_0000.nii.gz").rename(root / "imagesTr" / "case001.nii.gz")
    with pytest.raises(DataError, match=r"case001.nii.gz: not named \{case\}_\{XXXX\}"):
        load_dataset(root)


def test_metadata_csv_is_attached(tmp_path):
    root = build_nnunet(tmp_path, n=2)
    (root / "metadata.csv").write_text("case,subject,domain\ncase000,s1,philips_15\ncase001,s1,ge_3\n")
    ds = load_dataset(root)
    assert [c.subject for c in ds] == ["s1", "s1"]
    assert [c.domain for c in ds] == ["philips_15", "ge_3"]


def test_missing_label_is_reported_in_strict_mode(tmp_path):
    root = build_nnunet(tmp_path, n=2)
    (root / "labelsTr" / "case001.nii.gz").unlink()
    with pytest.raises(DataError, match="case001.nii.gz: label missing"):
        load_dataset(root)
    assert len(load_dataset(root, strict=False).problems) == 1


def test_unknown_folder_lists_known_layouts(tmp_path):
    with pytest.raises(DataError, match="nnunet"):
        load_dataset(tmp_path)


def test_read_datalist_file_with_4d_images(tmp_path):
    path = build_datalist(tmp_path, n=2, channels=2)
    ds = load_dataset(path)
    assert ds.layout == Layout.DATALIST
    assert ds.case_ids == ["s0", "s1"]
    assert ds.channel_names == ("ch0", "ch1")
    assert ds.channels_in_file
    assert ds.cases[0].images == (tmp_path / "imagesTr" / "s0.nii.gz",)
    assert ds.cases[0].metadata["split"] == "training"
    assert ds.label_names == {0: "background", 1: "target"}


def test_msd_task_folder_is_a_datalist(tmp_path):
    path = build_datalist(tmp_path, n=2)
    path.rename(tmp_path / "dataset.json")
    ds = load_dataset(tmp_path)
    assert ds.layout == Layout.DATALIST
    assert len(ds) == 2


def test_datalist_path_escaping_root_is_refused(tmp_path):
    path = build_datalist(tmp_path / "ds", n=1)
    content = json.loads(path.read_text())
    content["training"].append({"image": "../../etc/passwd.nii.gz", "label": "/etc/shadow.nii.gz"})
    path.write_text(json.dumps(content))
    ds = load_dataset(path, strict=False)
    assert len(ds) == 1
    messages = [p.message for p in ds.problems]
    assert len(messages) == 2
    assert all("escapes the dataset root" in m for m in messages)
    with pytest.raises(DataError, match="passwd"):
        load_dataset(path)


def test_read_cc359_parses_domains(tmp_path):
    build_cc359(tmp_path)
    ds = load_dataset(tmp_path)
    assert ds.layout == Layout.CC359
    assert ds.case_ids == ["CC0001", "CC0002", "CC0003"]
    assert [c.domain for c in ds] == ["philips_15", "siemens_3", "ge_15"]
    first = ds.cases[0]
    assert first.metadata["field_strength"] == "1.5"
    assert first.metadata["age"] == 55
    assert first.metadata["sex"] == "M"
    assert first.label.name == "CC0001_philips_15_55_M_ss.nii.gz"
    assert ds.label_names == {0: "background", 1: "brain"}


def test_cc359_missing_mask(tmp_path):
    build_cc359(tmp_path)
    (tmp_path / "Silver-standard" / "CC0002_siemens_3_40_F_ss.nii.gz").unlink()
    ds = load_dataset(tmp_path, strict=False)
    assert [p.file.endswith("CC0002_siemens_3_40_F.nii.gz") for p in ds.problems] == [True]


def test_read_plain_folders(tmp_path):
    build_folders(tmp_path, n=2)
    ds = load_dataset(tmp_path)
    assert ds.layout == Layout.FOLDERS
    assert ds.case_ids == ["scan0", "scan1"]
    assert ds.cases[1].label == tmp_path / "labels" / "scan1.nii.gz"


def test_plain_folders_with_unmatched_files(tmp_path):
    build_folders(tmp_path, n=2)
    (tmp_path / "labels" / "scan0.nii.gz").rename(tmp_path / "labels" / "other.nii.gz")
    ds = load_dataset(tmp_path, strict=False)
    files = sorted(p.file.rsplit("/", 1)[-1] for p in ds.problems)
    assert files == ["other.nii.gz", "scan0.nii.gz"]


def test_duplicate_case_ids_in_datalist(tmp_path):
    path = build_datalist(tmp_path, n=2)
    content = json.loads(path.read_text())
    content["training"].append(content["training"][0])
    path.write_text(json.dumps(content))
    problems = load_dataset(path, strict=False).problems
    assert [p.message for p in problems] == ["duplicate case id 's0' (2 times); case ids must be unique"]


def test_metadata_csv_problems(tmp_path, caplog):
    root = build_nnunet(tmp_path, n=1)
    (root / "metadata.csv").write_text("case,domain\ncase000,a\nother,b\n")
    assert load_dataset(root).cases[0].domain == "a"
    assert "not in the dataset" in caplog.text
    (root / "metadata.csv").write_text("id,domain\ncase000,a\n")
    with pytest.raises(DataError, match="metadata.csv: needs a 'case' column"):
        load_dataset(root)


def test_label_parsing_v1_v2_and_regions(tmp_path):
    from medtransfer.data.layouts.nnunet import parse_labels

    assert parse_labels({"0": "background", "2": "edema"}, tmp_path) == {0: "background", 2: "edema"}
    assert parse_labels({"background": 0, "brain": 1}, tmp_path) == {0: "background", 1: "brain"}
    regions = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    assert parse_labels(regions, tmp_path) == {0: "background", 1: "whole", 2: "whole", 3: "enhancing"}
    with pytest.raises(DataError, match="expected an integer"):
        parse_labels({"background": 0, "brain": "one"}, tmp_path)


def test_labels_ts_subset_and_domains(tmp_path):
    from data_builders import AFFINE, tiny_pair

    from medtransfer.data.io import save_nifti

    root = build_nnunet(tmp_path, n=2, test=2)
    save_nifti(root / "labelsTs" / "test000.nii.gz", tiny_pair(0)[1], AFFINE)
    ds = load_dataset(root, strict=False)
    assert ds.test_cases[0].label == root / "labelsTs" / "test000.nii.gz"
    assert [p.file.rsplit("/", 1)[-1] for p in ds.problems] == ["test001.nii.gz"]
    (root / "metadata.csv").write_text("case,domain\ncase000,b\ncase001,a\n")
    ds = load_dataset(root, strict=False)
    assert ds.domains == ["a", "b"]
    assert [c.case_id for c in ds.subset(["test001", "case000"])] == ["test001", "case000"]


def test_parent_of_datasets_names_them(tmp_path):
    build_nnunet(tmp_path / "Dataset001_A", n=1)
    with pytest.raises(DataError, match="contains dataset folder\\(s\\): Dataset001_A"):
        load_dataset(tmp_path)


_LINKED = {  # layout -> (builder, the file of one case to replace by a link, how many cases remain)
    "nnunet": (lambda root: build_nnunet(root, n=2), "imagesTr/case001_0000.nii.gz", 1),
    "nnunet_label": (lambda root: build_nnunet(root, n=2), "labelsTr/case001.nii.gz", 1),
    "datalist": (lambda root: build_datalist(root, n=2), "imagesTr/s1.nii.gz", 1),
    "cc359": (build_cc359, "Original/CC0002_siemens_3_40_F.nii.gz", 2),
    "folders": (lambda root: build_folders(root, n=2), "images/scan1.nii.gz", 1),
}


@pytest.mark.parametrize("layout", sorted(_LINKED))
def test_symlink_leaving_the_root_is_refused_in_every_layout(tmp_path, layout):
    build, name, remaining = _LINKED[layout]
    root = tmp_path / "ds"
    path = build(root)
    outside = tmp_path / "elsewhere.nii.gz"
    (root / name).rename(outside)
    (root / name).symlink_to(outside)
    with pytest.raises(DataError, match="escapes the dataset root"):
        load_dataset(path)
    ds = load_dataset(path, strict=False)
    assert len(ds) == remaining
    assert all(outside not in case.files and (root / name) not in case.files for case in ds)
    assert [p.message for p in ds.problems] == [
        f"links to {outside}, which escapes the dataset root {root}; paths must stay inside it"
        if layout != "datalist"
        else f"training[1]: 'image': path './{name}' links to {outside}, which escapes the dataset root {root}; "
        "paths must stay inside it"
    ]


def test_symlink_inside_the_root_is_kept(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=2)
    (root / "imagesTr" / "case001_0000.nii.gz").rename(root / "case001_0000.nii.gz")
    (root / "imagesTr" / "case001_0000.nii.gz").symlink_to(root / "case001_0000.nii.gz")
    ds = load_dataset(root)
    assert ds.case_ids == ["case000", "case001"]
    assert ds.problems == ()


@pytest.mark.parametrize("ending", [None, 5, "nii.gz", ".png", "", ".NII.GZ"])
def test_file_ending_must_be_a_nifti_ending(tmp_path, ending):
    root = build_nnunet(tmp_path / "ds", n=1)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ending}))
    expected = (
        f"{root / 'dataset.json'}: 'file_ending' is {ending!r}; allowed: '.nii.gz' or '.nii' "
        "(medtransfer reads NIfTI images)"
    )
    with pytest.raises(DataError) as info:
        load_dataset(root, strict=False)
    assert str(info.value) == expected
    with pytest.raises(DataError, match="'file_ending' is"):
        write_dataset_json(tmp_path / "out", {"background": 0}, ["T1"], 1, file_ending=ending)
    assert not (tmp_path / "out").exists()


def test_file_ending_nii_is_read(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=1)
    for path in sorted(root.rglob("*.nii.gz")):
        path.rename(path.with_name(path.name.removesuffix(".gz")))
    write_dataset_json(root, {"background": 0, "target": 1}, ["T1"], 1, file_ending=".nii")
    ds = load_dataset(root)
    assert [p.name for p in ds.cases[0].files] == ["case000_0000.nii", "case000.nii"]
