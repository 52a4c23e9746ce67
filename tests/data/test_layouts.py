from __future__ import annotations

import json

import pytest
from data_builders import build_nnunet

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
