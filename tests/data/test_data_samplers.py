from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.data.datasets import SampledDataset, SliceDataset
from medtransfer.data.samplers import InMemoryCase, PatchSampler, SliceSampler, extract_window
from medtransfer.errors import DataError


def _case(case_id="a", shape=(6, 7, 8), fg=((1, 2), (2, 4), (5, 6))):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(*r) for r in fg)] = 1
    return InMemoryCase(case_id, image, label)


def test_extract_window_pads_outside():
    array = np.arange(6).reshape(2, 3)
    out = extract_window(array, (-1, 1), (4, 3), -1)
    np.testing.assert_array_equal(out, [[-1, -1, -1], [1, 2, -1], [4, 5, -1], [-1, -1, -1]])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_full_slices_along_each_axis(axis):
    case = _case()
    sampler = SliceSampler([case], axis=axis, foreground_prob=0.0)
    sample = sampler.sample(np.random.default_rng(0))
    expected_image = np.take(case.image, sample["index"], axis=axis + 1)
    np.testing.assert_array_equal(sample["image"], expected_image)
    np.testing.assert_array_equal(sample["label"], np.take(case.label, sample["index"], axis=axis))
    assert sample["label"].dtype == np.int64
    assert len(sampler) == case.label.shape[axis]


def test_foreground_oversampling_always_hits_foreground():
    case = _case(shape=(20, 20, 20), fg=((15, 16), (2, 3), (10, 11)))  # one voxel
    sampler = SliceSampler([case], patch_size=(4, 4), axis=0, foreground_prob=1.0)
    rng = np.random.default_rng(1)
    assert all(sampler.sample(rng)["label"].sum() == 1 for _ in range(20))
    never = SliceSampler([case], patch_size=(4, 4), axis=0, foreground_prob=0.0)
    hits = sum(never.sample(rng)["label"].sum() for _ in range(50))
    assert hits < 10


def test_slice_budget_restricts_indices():
    case = _case()
    sampler = SliceSampler([case], axis=2, slices={"a": [0, 3, 6]}, foreground_prob=0.5)
    rng = np.random.default_rng(0)
    assert {sampler.sample(rng)["index"] for _ in range(40)} == {0, 3, 6}
    assert len(sampler) == 3
    with pytest.raises(DataError, match="slice indices"):
        SliceSampler([case], axis=2, slices={"a": [8]})


def test_patch_larger_than_slice_is_padded_and_centred():
    case = _case(shape=(2, 3, 4))
    sample = SliceSampler([case], patch_size=(4, 5), axis=2, pad_value=-1).get(0, 1)
    assert sample["image"].shape == (1, 4, 5)
    np.testing.assert_array_equal(sample["image"][0, 1:3, 1:4], case.image[0, :, :, 1])
    assert (sample["image"][0, 0] == -1).all()
    assert (sample["label"][0] == 0).all()


def test_samplers_are_deterministic_given_a_seed():
    sampler = SliceSampler([_case("a"), _case("b")], patch_size=(4, 4), axis=1)
    first = [sampler.sample(np.random.default_rng(5)) for _ in range(3)]
    second = [sampler.sample(np.random.default_rng(5)) for _ in range(3)]
    for x, y in zip(first, second, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])


def test_patch_sampler_foreground_and_padding():
    case = _case(shape=(10, 10, 10), fg=((8, 9), (1, 2), (5, 6)))
    sampler = PatchSampler([case], (4, 4, 4), foreground_prob=1.0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        sample = sampler.sample(rng)
        assert sample["image"].shape == (1, 4, 4, 4)
        assert sample["label"].sum() == 1
        start = sample["start"]
        np.testing.assert_array_equal(
            sample["image"][0], case.image[0, start[0] : start[0] + 4, start[1] : start[1] + 4, start[2] : start[2] + 4]
        )
    big = PatchSampler([case], (12, 10, 10), foreground_prob=0.0).sample(rng)
    assert big["start"] == (-1, 0, 0)
    np.testing.assert_array_equal(big["image"][0, 1:11], case.image[0])


def test_unlabelled_case_is_rejected():
    with pytest.raises(DataError, match="no label"):
        SliceSampler([InMemoryCase("u", np.zeros((1, 2, 2, 2)), None)])


def test_torch_datasets():
    sampler = SliceSampler([_case("a"), _case("b")], patch_size=(8, 8), axis=2)
    dataset = SampledDataset(sampler, num_samples=5, seed=3)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))
    assert batch["image"].shape == (5, 1, 8, 8)
    assert batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64
    assert len(batch["case"]) == 5
    again = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))
    assert torch.equal(batch["image"], again["image"])
    dataset.set_epoch(1)
    assert not torch.equal(next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))["image"], batch["image"])
    slices = SliceDataset(sampler)
    assert len(slices) == 16
    assert slices[9]["case"] == "b"
    assert slices[9]["index"] == 1


def test_cache_to_sampler_end_to_end(tmp_path):
    from data_builders import build_nnunet

    from medtransfer.data.cache import build_cache
    from medtransfer.data.layouts import load_dataset
    from medtransfer.data.preprocess import PreprocessConfig

    dataset = load_dataset(build_nnunet(tmp_path / "ds", n=2))
    cases = build_cache(dataset.cases, tmp_path / "cache", PreprocessConfig()).load_all()
    sample = SliceSampler(cases, patch_size=(8, 8), axis=2, foreground_prob=1.0).sample(np.random.default_rng(0))
    assert sample["image"].dtype == np.float32
    assert sample["label"].any()
