from __future__ import annotations

import numpy as np
import pytest

from medtransfer.finetune.data import PreparedCase, SliceDataset, oversample_foreground


@pytest.mark.parametrize(("n", "n_fg", "fraction"), [(100, 3, 0.33), (10, 1, 0.5), (7, 2, 0.9), (50, 1, 0.1)])
def test_oversampling_reaches_the_fraction_with_fewest_repeats(n, n_fg, fraction):
    index = list(range(n))
    out = oversample_foreground(index, lambda i: i < n_fg, fraction)
    share = sum(i < n_fg for i in out) / len(out)
    assert share >= fraction
    assert out[:n] == index  # the original order is kept, copies are appended
    fewer = len(out) - n_fg  # one repeat fewer must fall short
    assert (sum(i < n_fg for i in out) - n_fg) / fewer < fraction or len(out) == n


def test_no_foreground_or_enough_foreground_leaves_the_index_alone():
    index = list(range(10))
    assert oversample_foreground(index, lambda i: False, 0.33) == index
    assert oversample_foreground(index, lambda i: i < 5, 0.33) == index
    assert oversample_foreground(index, lambda i: i < 1, 0.0) == index
    with pytest.raises(ValueError, match="fraction"):
        oversample_foreground(index, lambda i: True, 1.0)


def test_slice_dataset_repeats_lesion_slices():
    label = np.zeros((4, 4, 12), dtype=np.int64)
    label[1:3, 1:3, 5] = 1  # a lesion on one axial slice of twelve
    case = PreparedCase("c", np.zeros((1, 4, 4, 12), np.float32), label, info=None)
    plain = SliceDataset([case], axis=2, shape=(4, 4))
    dense = SliceDataset([case], axis=2, shape=(4, 4), foreground_fraction=0.33)
    assert len(plain) == 12
    with_lesion = [i for i in range(len(dense)) if dense[i]["label"].any()]
    assert len(with_lesion) / len(dense) >= 0.33
    assert {dense.index[i] for i in with_lesion} == {(0, 5)}


def _blob_case():
    """A 40^3 case whose only foreground is a 2^3 cube near one corner."""
    label = np.zeros((40, 40, 40), dtype=np.int64)
    label[3:5, 30:32, 6:8] = 1
    image = label[None].astype(np.float32)
    return PreparedCase("c", image, label, None)


def test_patch_dataset_centres_the_requested_share_of_patches_on_foreground():
    import torch

    from medtransfer.finetune.data import PatchDataset

    def hits(fraction, n=200):
        torch.manual_seed(0)
        dataset = PatchDataset([_blob_case()], (16, 16, 16), length=n, foreground_fraction=fraction)
        return sum(bool(dataset[i]["label"].any()) for i in range(n)) / n

    uniform = (16 / 40) ** 3  # even a uniform patch sometimes catches the cube: at most ~6 % of positions
    assert hits(1.0) == 1.0
    assert hits(0.0) < 3 * uniform
    assert 0.25 < hits(0.33) < 0.33 + 3 * uniform
    with pytest.raises(ValueError, match="fraction"):
        PatchDataset([_blob_case()], (16, 16, 16), length=4, foreground_fraction=1.5)


def test_patch_dataset_foreground_patches_stay_inside_the_volume():
    import torch

    from medtransfer.finetune.data import PatchDataset

    torch.manual_seed(1)
    dataset = PatchDataset([_blob_case()], (16, 16, 16), length=20, foreground_fraction=1.0)
    for i in range(20):
        item = dataset[i]
        assert item["image"].shape == (1, 16, 16, 16)
        assert item["label"].shape == (1, 16, 16, 16)


def test_validation_tiles_cover_every_voxel_once():
    """A 100 x 70 x 30 case tiled by 64^3 patches: before, only the whole tiles (0..63 on the first axis) were
    scored, so a lesion at 80-89 never counted in validation Dice."""
    import torch

    from medtransfer.finetune.data import PatchDataset

    label = np.zeros((100, 70, 30), dtype=np.int64)
    label[80:90, 60:70, 20:30] = 1
    image = np.arange(100 * 70 * 30, dtype=np.float32).reshape(1, 100, 70, 30)
    dataset = PatchDataset([PreparedCase("c", image, label, None)], (64, 64, 64))
    assert len(dataset) == 2 * 2 * 1
    covered = torch.zeros((128, 128, 64), dtype=torch.int64)
    lesion = 0
    for i in range(len(dataset)):
        item = dataset[i]
        start = dataset.tiles[i][1]
        covered[tuple(slice(a, a + 64) for a in start)] += 1
        lesion += int(item["label"].sum())
        assert item["image"].shape == (1, 64, 64, 64)
    assert bool((covered == 1).all())
    assert lesion == 1000
    padded = dataset.cases[0][1]
    assert torch.equal(padded[0, :100, :70, :30], torch.from_numpy(image[0]))
    assert torch.equal(padded[0, 127, 69, 29], padded[0, 99, 69, 29])  # replicated edge, as prediction pads
