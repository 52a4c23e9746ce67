"""A tiny brainshift build (Colin27 atlas at 2 mm, two domains, one subject each): layout, determinism, labels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medtransfer.bench import DATASETS, LABELS_1MM, BenchmarkConfig, Target, build_benchmark
from medtransfer.bench.atlas import Tissue
from medtransfer.data.io import load_nifti
from medtransfer.errors import ConfigError

DOMAINS = ("siemens_3t", "ge_15t")


def _build(out, atlas, **overrides):
    options = {"seed": 7, "subjects_per_domain": 1, "spacing": 4.0, "domains": DOMAINS, "natural_count": 8}
    config = BenchmarkConfig(out=out, **{**options, **overrides})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("medtransfer.bench.build.load_head_atlas", lambda head="colin27": atlas)
        return build_benchmark(config)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_atlas):
    return _build(tmp_path_factory.mktemp("brainshift"), tiny_atlas)


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_layout_has_four_nnunet_datasets_with_metadata(built):
    all_rows = _rows(built / "metadata.csv")
    assert len(all_rows) == len(DATASETS) * len(DOMAINS)
    for spec in DATASETS.values():
        root = built / spec.folder
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["labels"] == spec.labels
        assert meta["channel_names"] == {"0": "T1"}
        assert meta["numTraining"] == len(DOMAINS)
        rows = _rows(root / "metadata.csv")
        assert [r["domain"] for r in rows] == list(DOMAINS)
        assert {"case", "subject", "domain", "profile"} <= set(rows[0])
        for row in rows:
            assert (root / "imagesTr" / f"{row['case']}_0000.nii.gz").is_file()
            assert (root / "labelsTr" / f"{row['case']}.nii.gz").is_file()
            assert (root / LABELS_1MM / f"{row['case']}.nii.gz").is_file()
        assert {p.name for p in root.glob("montage_*.png")} == {f"montage_{d}.png" for d in DOMAINS} | {
            "montage_task.png"
        }


def test_data_layer_reads_the_build(built):
    from medtransfer.data.layouts import load_dataset

    dataset = load_dataset(built / DATASETS[Target.BRAIN_EXTRACTION].folder)
    assert not dataset.problems
    assert sorted(case.domain for case in dataset.cases) == sorted(DOMAINS)


def test_sources_are_written(built):
    mri = np.load(built / "sources" / "mri_classification.npz")
    assert mri["images"].shape[0] == mri["labels"].shape[0] > 10
    assert set(np.unique(mri["labels"])) <= set(range(len(mri["class_names"])))
    assert len(np.unique(mri["labels"])) >= 3  # several lobes dominate different slices
    seg = np.load(built / "sources" / "natural_segmentation.npz")
    assert seg["images"].shape == seg["labels"].shape == (8, 128, 128)
    assert seg["labels"].max() >= 1
    assert np.load(built / "sources" / "natural_ssl.npz")["images"].shape == (8, 128, 128)
    assert np.load(built / "sources" / "natural_classification.npz")["images"].shape[1:] == (28, 28)


def test_classification_source_holds_no_slice_of_a_dataset_scan(built):
    """Its heads are its own (until simulator 2 every slice was cut from a stored case, test cases included)."""
    from medtransfer.bench.thumbnails import VIEWS, centre_crop_or_pad, to_ras

    mri = np.load(built / "sources" / "mri_classification.npz")
    assert len(mri["subjects"]) == len(mri["labels"])
    assert {str(s) for s in mri["subjects"]} == {f"source_{d}_000" for d in DOMAINS}
    size = mri["images"].shape[-1]
    stored = []
    for path in sorted(built.glob("Dataset*/imagesTr/*.nii.gz")):
        scan = load_nifti(path)
        image = to_ras(scan.array, scan.affine)
        image = np.clip(image / max(float(np.percentile(image, 99.5)), 1e-6), 0, 1.5).astype(np.float32)
        stored += [
            centre_crop_or_pad(np.take(image, k, axis=a), size) for a in VIEWS.values() for k in range(image.shape[a])
        ]
    assert len(stored) > 50
    stored = np.stack(stored)
    for image in mri["images"]:
        assert np.abs(stored - image).reshape(len(stored), -1).max(axis=1).min() > 1e-3


def test_dataset_json_records_the_simulator(built):
    from medtransfer.bench.simulate import SIMULATOR_VERSION

    for spec in DATASETS.values():
        assert (
            json.loads((built / spec.folder / "dataset.json").read_text())["benchmark"]["simulator"]
            == SIMULATOR_VERSION
            == 2
        )


def test_ground_truth_grids_describe_the_same_brain(built):
    root = built / DATASETS[Target.BRAIN_EXTRACTION].folder
    for row in _rows(root / "metadata.csv"):
        coarse = load_nifti(root / "labelsTr" / f"{row['case']}.nii.gz")
        fine = load_nifti(root / LABELS_1MM / f"{row['case']}.nii.gz")
        volume = [v.array.sum() * abs(np.linalg.det(v.affine[:3, :3])) for v in (coarse, fine)]
        assert volume[0] == pytest.approx(volume[1], rel=0.1)
        centres = [(v.affine @ [*np.argwhere(v.array).mean(0), 1])[:3] for v in (coarse, fine)]
        np.testing.assert_allclose(centres[0], centres[1], atol=3.0)  # mm
        assert 0.8e6 < volume[1] < 2.0e6  # a brain is about 1.1-1.7 litres


def test_same_seed_same_arrays_other_seed_different(built, tiny_atlas, tmp_path):
    again = _build(tmp_path / "again", tiny_atlas, targets=(Target.MS_LESION,), sources=False)
    other = _build(tmp_path / "other", tiny_atlas, targets=(Target.MS_LESION,), sources=False, seed=8)
    folder = DATASETS[Target.MS_LESION].folder
    for row in _rows(built / folder / "metadata.csv"):
        for sub, name in (("imagesTr", f"{row['case']}_0000.nii.gz"), (LABELS_1MM, f"{row['case']}.nii.gz")):
            a = load_nifti(built / folder / sub / name)
            b = load_nifti(again / folder / sub / name)
            np.testing.assert_array_equal(a.array, b.array)
            np.testing.assert_array_equal(a.affine, b.affine)
        image = load_nifti(built / folder / "imagesTr" / f"{row['case']}_0000.nii.gz").array
        different = load_nifti(other / folder / "imagesTr" / f"{row['case']}_0000.nii.gz").array
        assert image.shape != different.shape or not np.array_equal(image, different)


def test_invalid_options_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'anatomy'"):
        BenchmarkConfig(out=tmp_path, targets=("anatomyy",))
    with pytest.raises(ConfigError, match="scanner profile"):
        BenchmarkConfig(out=tmp_path, domains=("siemens_7t",))
    with pytest.raises(ConfigError, match="spacing"):
        BenchmarkConfig(out=tmp_path, spacing=0.5)


def test_anatomy_has_every_class(built):
    root = built / DATASETS[Target.ANATOMY].folder
    for row in _rows(root / "metadata.csv"):
        labels = load_nifti(root / LABELS_1MM / f"{row['case']}.nii.gz").array
        assert set(np.unique(labels)) == set(DATASETS[Target.ANATOMY].labels.values())
    assert Tissue.LESION not in np.unique(labels)
