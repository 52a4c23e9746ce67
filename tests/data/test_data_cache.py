from __future__ import annotations

import os

import numpy as np
import pytest
from data_builders import AFFINE, build_nnunet, tiny_pair

from medtransfer.data.cache import PreprocessCache, _safe_name, build_cache, case_key
from medtransfer.data.io import load_nifti, save_nifti
from medtransfer.data.layouts import load_dataset, write_dataset_json
from medtransfer.data.preprocess import PreprocessConfig, preprocess_case
from medtransfer.errors import DataError


def test_cache_stores_what_preprocessing_computes(tmp_path):
    dataset = load_dataset(build_nnunet(tmp_path / "ds", n=2, channels=("T1", "T2")))
    config = PreprocessConfig(target_spacing=(1.5, 1.5, 1.5))
    cache = build_cache(dataset.cases, tmp_path / "cache", config, image_dtype="float32")
    case = dataset.cases[1]
    expected_image, expected_label, info = preprocess_case(
        [load_nifti(p, dtype=np.float32) for p in case.images], config, load_nifti(case.label)
    )
    cached = cache.load(case.case_id)
    assert isinstance(cached.image, np.memmap)
    assert cached.image.shape[0] == 2
    np.testing.assert_array_equal(cached.image, expected_image)
    np.testing.assert_array_equal(cached.label, expected_label)
    assert cached.label.dtype == np.uint8
    assert cached.info == info
    assert cached.metadata["subject"] == case.case_id


def test_float16_images(tmp_path):
    dataset = load_dataset(build_nnunet(tmp_path / "ds", n=1))
    cached = build_cache(dataset.cases, tmp_path / "cache", PreprocessConfig()).load("case000")
    assert cached.image.dtype == np.float16
    expected, _, _ = preprocess_case([load_nifti(dataset.cases[0].images[0], dtype=np.float32)], PreprocessConfig())
    np.testing.assert_allclose(cached.image, expected, atol=1e-3)


def test_cache_is_reused_and_rebuilt_when_source_or_config_changes(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=3)
    cases = load_dataset(root).cases
    cache = PreprocessCache(tmp_path / "cache", PreprocessConfig())
    assert cache.build(cases, progress=False) == ["case000", "case001", "case002"]
    assert cache.build(cases, progress=False) == []
    image, _ = tiny_pair(7)
    path = root / "imagesTr" / "case001_0000.nii.gz"
    save_nifti(path, image * 2, AFFINE)
    os.utime(path, ns=(1, 1))  # a changed modification time is enough
    assert cache.build(cases, progress=False) == ["case001"]
    other = PreprocessCache(tmp_path / "cache", PreprocessConfig(clip_percentiles=(0.5, 99.5)))
    assert other.folder != cache.folder
    assert other.build(cases, progress=False) == ["case000", "case001", "case002"]
    (cache.folder / f"{case_key(cases[2])}_image.npy").unlink()
    assert cache.build(cases, progress=False) == ["case002"]


def test_unknown_case_and_bad_labels(tmp_path):
    root = build_nnunet(tmp_path / "ds", n=1)
    cache = PreprocessCache(tmp_path / "cache", PreprocessConfig())
    with pytest.raises(DataError, match="not in the cache"):
        cache.load("case000")
    _, label = tiny_pair(0)
    save_nifti(root / "labelsTr" / "case000.nii.gz", label.astype(np.int16) * 300, AFFINE)
    with pytest.raises(DataError, match="0..255"):
        cache.build(load_dataset(root).cases, progress=False)


def _damage(path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a foreign file under the cache's name
        np.save(path, np.zeros((2, 3), dtype=np.float64))


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("image", "truncated"),
        ("label", "empty"),
        ("image", "foreign"),
        ("label", "foreign"),
    ],
)
def test_damaged_cache_file_is_rebuilt_with_a_warning(tmp_path, caplog, name, how):
    cases = load_dataset(build_nnunet(tmp_path / "ds", n=2)).cases
    cache = PreprocessCache(tmp_path / "cache", PreprocessConfig())
    cache.build(cases, progress=False)
    expected = cache.load("case001", mmap=False)
    name = f"{case_key(cases[1])}_{name}.npy"
    _damage(cache.folder / name, how)
    with caplog.at_level("WARNING", logger="medtransfer.data.cache"):
        assert cache.build(cases, progress=False) == ["case001"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(cache.folder / name)]
    assert "rebuilding case 'case001'" in caplog.text
    rebuilt = cache.load("case001", mmap=False)
    np.testing.assert_array_equal(rebuilt.image, expected.image)
    np.testing.assert_array_equal(rebuilt.label, expected.label)


def test_damaged_cache_file_at_load_names_it_and_how_to_clear(tmp_path):
    cases = load_dataset(build_nnunet(tmp_path / "ds", n=1)).cases
    cache = build_cache(cases, tmp_path / "cache", PreprocessConfig())
    path = cache.folder / f"{case_key(cases[0])}_image.npy"
    path.write_text("not an array")
    with pytest.raises(DataError) as info:
        cache.load("case000")
    assert str(info.value) == (
        f"{path}: damaged preprocessing cache file (not a .npy array); delete the folder {cache.folder} "
        "to clear this cache (it is rebuilt from the dataset)"
    )
    _damage(path, "empty")
    with pytest.raises(
        DataError, match=r"case000-[0-9a-f]{10}_image.npy: damaged preprocessing cache file \(not a .npy array\)"
    ):
        cache.load("case000", mmap=False)


def test_ids_that_differ_only_in_unportable_characters_get_their_own_files(tmp_path):
    """``case 2`` and ``case_2`` (or two CJK ids) map to the same portable characters; each keeps its own arrays, so
    no case trains on another's image or label."""
    import dataclasses

    root = build_nnunet(tmp_path / "ds", n=2)
    cases = load_dataset(root).cases
    twins = [dataclasses.replace(cases[0], case_id="case 2"), dataclasses.replace(cases[1], case_id="case_2")]
    cache = build_cache(twins, tmp_path / "cache", PreprocessConfig())
    for twin, case in zip(twins, cases, strict=True):
        _, expected_label, _ = preprocess_case(
            [load_nifti(p, dtype=np.float32) for p in case.images], PreprocessConfig(), load_nifti(case.label)
        )
        np.testing.assert_array_equal(cache.load(twin.case_id).label, expected_label)
    assert _safe_name("case 2") != _safe_name("case_2")
    assert _safe_name("病例1") != _safe_name("症例1")
    assert _safe_name("Case1").lower() != _safe_name("case1").lower()  # case-insensitive file systems


def _one_case_dataset(root, value):
    """A dataset with one case ``case_000``: a 6^3 image holding ``value`` in a 2^3 cube, and its label."""
    image = np.zeros((6, 6, 6), np.float32)
    image[2:4, 2:4, 2:4] = value
    save_nifti(root / "imagesTr" / "case_000_0000.nii.gz", image, AFFINE)
    save_nifti(root / "labelsTr" / "case_000.nii.gz", (image > 0).astype(np.uint8), AFFINE)
    write_dataset_json(root, {"background": 0, "cube": 1}, ["T1"], 1)
    return load_dataset(root).cases[0]


RAW = PreprocessConfig(crop_to_foreground=False, clip_percentiles=None, scaling="none")


def test_two_datasets_sharing_a_case_id_and_a_cache_keep_their_own_arrays(tmp_path):
    a, b = _one_case_dataset(tmp_path / "A", 1.0), _one_case_dataset(tmp_path / "B", 7.0)
    assert a.case_id == b.case_id == "case_000"
    cache_a, cache_b = PreprocessCache(tmp_path / "cache", RAW), PreprocessCache(tmp_path / "cache", RAW)
    assert cache_a.build([a], progress=False) == ["case_000"]
    assert cache_b.build([b], progress=False) == ["case_000"]  # B's sources differ: its own entry, not A's
    assert float(cache_a.load_all(["case_000"])[0].image.max()) == 1.0  # each reads its own scan
    assert float(cache_b.load("case_000").image.max()) == 7.0
    assert float(cache_b.load(a).image.max()) == 1.0  # a Case names its entry whoever built it
    assert cache_a.build([a], progress=False) == cache_b.build([b], progress=False) == []  # both stay cached
    assert case_key(a) != case_key(b)
    fresh = PreprocessCache(tmp_path / "cache", RAW)
    assert fresh.case_ids() == ["case_000"]
    with pytest.raises(DataError) as err:  # by id alone, which dataset is meant is unknown
        fresh.load("case_000")
    assert str(err.value).startswith(f"{fresh.folder}: case 'case_000' is cached from 2 datasets (e.g. ")


def test_concurrent_builders_of_different_cases_keep_both_entries(tmp_path, monkeypatch):
    """Both builders finish preprocessing together, then update the index: the lock makes the second read the
    first's entry (without it, both read the empty index and the last write drops the other's case)."""
    import threading
    import time

    import medtransfer.data.cache as cache_module

    cases = load_dataset(build_nnunet(tmp_path / "ds", n=2)).cases
    together = threading.Barrier(2, timeout=30)
    build_case, write = PreprocessCache._build_case, cache_module.write_json_atomic

    def build_then_wait(self, case):
        entry = build_case(self, case)
        together.wait()
        return entry

    def slow_write(path, obj, **kwargs):
        time.sleep(0.2)
        write(path, obj, **kwargs)

    monkeypatch.setattr(PreprocessCache, "_build_case", build_then_wait)
    monkeypatch.setattr(cache_module, "write_json_atomic", slow_write)
    errors = []

    def build(case):
        try:
            PreprocessCache(tmp_path / "cache", RAW).build([case], progress=False)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=build, args=(case,)) for case in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(PreprocessCache(tmp_path / "cache", RAW).case_ids()) == ["case000", "case001"]


def test_label_error_through_the_cache_names_the_label_file(tmp_path):
    """A label on another grid than its image (mirrored x axis): the message starts with the label's path, as it
    does without the cache."""
    root = build_nnunet(tmp_path / "ds", n=1)
    label_path = root / "labelsTr" / "case000.nii.gz"
    _, label = tiny_pair(0)
    mirrored = np.diag([-1.0, 1.0, 1.0, 1.0])
    mirrored[0, 3] = 7.0
    save_nifti(label_path, label, mirrored)
    with pytest.raises(DataError) as err:
        build_cache(load_dataset(root).cases, tmp_path / "cache", PreprocessConfig(), progress=False)
    assert str(err.value).startswith(f"{label_path}: the label lies on another grid than its image ")
