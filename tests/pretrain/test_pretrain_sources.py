"""Source loading: npz sources of a brainshift folder, MRI slices of an nnU-Net dataset, resizing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import write_tiny_nnunet  # noqa: E402

from medtransfer.errors import DataError
from medtransfer.pretrain.datasets import RotationDataset
from medtransfer.pretrain.options import SourceDomain, SourceTask
from medtransfer.pretrain.sources import SourceData, load_source, mri_slices, resize_stack


def test_resize_stack_images_and_labels():
    labels = np.zeros((1, 4, 4), dtype=np.int64)
    labels[0, :2, :2] = 3
    up = resize_stack(labels, 8, labels=True)
    assert up.dtype == np.int64
    assert up[0, :4, :4].tolist() == [[3] * 4] * 4
    assert int(up.sum()) == 3 * 16
    flat = resize_stack(np.full((2, 6, 6), 0.25, dtype=np.float32), 3)
    np.testing.assert_allclose(flat, 0.25, atol=1e-6)


def test_natural_sources_from_a_brainshift_folder(tmp_path):
    (tmp_path / "sources").mkdir()
    images = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "sources" / "natural_classification.npz", images=images, labels=np.arange(10) % 3)
    source = load_source(SourceTask.CLASSIFICATION, SourceDomain.NATURAL, tmp_path, size=16, count=6)
    assert source.images.shape == (6, 16, 16)
    assert source.images.dtype == np.float32
    assert 0 <= source.images.min() <= source.images.max() <= 1
    assert source.labels.shape == (6,)
    assert source.description["size"] == 16


def test_mri_classification_without_its_file_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="mri_classification.npz"):
        load_source(SourceTask.CLASSIFICATION, SourceDomain.MRI, tmp_path, size=16, count=6)


def _classification_npz(folder, subjects=None):
    (folder / "sources").mkdir()
    n = 6
    arrays = {"images": np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, 8, 8), np.float32) / n}
    arrays |= {"labels": np.arange(n) % 2, "class_names": np.asarray(["a", "b"])}
    if subjects is not None:
        arrays["subjects"] = np.asarray(subjects)
    np.savez(folder / "sources" / "mri_classification.npz", **arrays)


def test_mri_classification_keeps_the_heads_of_the_domains(tmp_path):
    heads = ["source_siemens_3t_000"] * 2 + ["source_ge_15t_001"] * 3 + ["source_siemens_3t_001"]
    _classification_npz(tmp_path, heads)
    source = load_source(SourceTask.CLASSIFICATION, SourceDomain.MRI, tmp_path, size=8, count=10, domains=["ge_15t"])
    assert source.images.shape[0] == 3  # the three ge_15t slices, no other
    np.testing.assert_allclose(sorted(source.images[:, 0, 0] / source.images.max()), [2 / 4, 3 / 4, 1.0], atol=1e-6)
    with pytest.raises(DataError, match=r"no slice from domains philips_3t; it holds ge_15t, siemens_3t"):
        load_source(SourceTask.CLASSIFICATION, SourceDomain.MRI, tmp_path, size=8, count=10, domains=["philips_3t"])


def test_mri_classification_of_simulator_1_uses_every_slice_with_a_warning(tmp_path, caplog):
    _classification_npz(tmp_path)
    source = load_source(SourceTask.CLASSIFICATION, SourceDomain.MRI, tmp_path, size=8, count=10, domains=["ge_15t"])
    assert source.images.shape[0] == 6
    assert "built before brainshift simulator 2" in caplog.text


def test_mri_slices_of_an_nnunet_dataset(tmp_path):
    root = write_tiny_nnunet(tmp_path / "Dataset002_Anatomy", {"background": 0, "a": 1, "b": 2})
    source = mri_slices(root, size=16, count=100)
    assert source.images.shape[1:] == (16, 16)
    assert source.labels.shape == source.images.shape
    assert source.class_names == ["background", "a", "b"]
    assert set(np.unique(source.labels)) == {0, 1, 2}
    assert source.description["cases"] == 2
    # every kept slice holds at least 2% foreground
    assert ((source.labels > 0).mean(axis=(1, 2)) >= 0.02).all()
    unlabelled = load_source(SourceTask.RESTORATION, SourceDomain.MRI, root, size=16, count=3)
    assert unlabelled.labels is None
    assert len(unlabelled) == 3


def test_rotation_dataset_validation_cycles_through_four_turns():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4) / 16
    dataset = RotationDataset(SourceData(image), fixed=True)
    items = [dataset[i] for i in range(4)]
    assert [int(it["label"]) for it in items] == [0, 1, 2, 3]
    np.testing.assert_array_equal(items[1]["image"][0].numpy(), np.rot90(image[0], 1))
