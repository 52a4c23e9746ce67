"""LesionMix (CarveMix with in-plane rescaling) on hand-made cases: where the carved lesion lands, what its label and
intensities become, which cases give and receive, and that a draw repeats under the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.finetune import FinetuneConfig
from medtransfer.finetune.data import LesionMix, PreparedCase, SliceDataset, lesion_donors


def _case(name, shape, lesion=None, inside=10.0, outside=2.0):
    """Image ``outside`` everywhere and ``inside`` on the lesion box ``lesion`` (label 1 there)."""
    label = np.zeros(shape, dtype=np.int64)
    image = np.full((1, *shape), outside, dtype=np.float32)
    if lesion is not None:
        label[lesion] = 1
        image[(0, *lesion)] = inside
    return PreparedCase(name, image, label, None)


def _mixed_item(cases, p=1.0, scale=(1.0, 1.0), margin=0, context=0, target=1, seed=0):
    shape = tuple(max(c.label.shape[a] for c in cases) for a in (0, 1))
    dataset = SliceDataset(cases, 2, shape, context=context, lesion_mix=LesionMix(p, scale, margin))
    i = next(i for i, (ci, _) in enumerate(dataset.index) if ci == target)
    torch.manual_seed(seed)
    return dataset, dataset[i]


def test_the_carved_lesion_lands_at_the_same_position_with_its_label_and_intensities():
    donor = _case("a", (20, 20, 8), (slice(8, 10), slice(12, 14), slice(3, 5)))
    receiver = _case("b", (20, 20, 8), outside=1.0)
    _, item = _mixed_item([donor, receiver])
    label, image = item["label"][0].numpy(), item["image"][0].numpy()
    expected = np.zeros((20, 20), dtype=np.int64)
    expected[8:10, 12:14] = 1
    np.testing.assert_array_equal(label, expected)
    assert (image[8:10, 12:14] == 10.0).all()  # weight 1 on the lesion: the donor's intensities
    ring = image[7, 11:15]  # next to the lesion: a blend of the receiver (1) and the donor's surroundings (2)
    assert ((ring > 1.0) & (ring <= 2.0)).all()
    far = np.ones((20, 20), dtype=bool)
    far[8 - 3 : 10 + 3, 12 - 3 : 14 + 3] = False  # outside the carved box (lesion grown by margin + 3 voxels)
    assert (image[far] == 1.0).all()


def test_a_case_never_receives_its_own_lesions_and_one_donor_is_enough():
    donor = _case("a", (20, 20, 8), (slice(8, 10), slice(12, 14), slice(3, 5)))
    receiver = _case("b", (20, 20, 8), outside=1.0)
    dataset, item = _mixed_item([donor, receiver], target=0)
    plain = SliceDataset([donor, receiver], 2, (20, 20))
    ci, s = dataset.index[next(i for i, (c, _) in enumerate(dataset.index) if c == 0)]
    assert torch.equal(item["image"], plain[plain.index.index((ci, s))]["image"])  # p = 1, but nothing to take
    assert [d.case for d in dataset.lesion_mix.donors] == [0]
    # no foreground anywhere, or a single case: nothing is carved
    assert SliceDataset([receiver, receiver], 2, (20, 20), lesion_mix=LesionMix(1.0)).lesion_mix is None
    assert SliceDataset([donor], 2, (20, 20), lesion_mix=LesionMix(1.0)).lesion_mix is None


def test_donors_are_the_connected_components_and_their_slices():
    case = _case("a", (20, 20, 8), (slice(2, 4), slice(2, 4), slice(1, 3)))
    case.label[15:17, 15:17, 5] = 1  # a second lesion, one slice thick
    donors = lesion_donors([case], axis=2, margin=1)
    assert sorted(d.slices for d in donors) == [(1, 2), (5,)]
    big = next(d for d in donors if d.slices == (1, 2))
    # box: the lesion grown by margin + 3 = 4 voxels, clipped at the array's edge
    assert big.box == (slice(0, 8), slice(0, 8), slice(0, 7))
    assert big.weight.max() == 1.0
    assert big.weight.min() >= 0.0


def test_rescaling_shrinks_the_lesion_about_its_centre():
    donor = _case("a", (40, 40, 6), (slice(16, 24), slice(20, 28), slice(2, 4)))  # 8 x 8, centre (20, 24)
    receiver = _case("b", (40, 40, 6), outside=1.0)
    _, item = _mixed_item([donor, receiver], scale=(0.5, 0.5))
    label = item["label"][0].numpy()
    assert label.sum() == 16  # 4 x 4: half the size in each in-plane axis
    rows, cols = np.nonzero(label)
    assert abs(rows.mean() + 0.5 - 20) <= 1
    assert abs(cols.mean() + 0.5 - 24) <= 1


def test_relative_positions_map_between_cases_of_other_sizes():
    donor = _case("a", (20, 20, 8), (slice(4, 6), slice(14, 16), slice(5, 6)))  # centre (5, 15) of 20, slice 5 of 8
    receiver = _case("b", (40, 30, 16), outside=1.0)
    dataset, item = _mixed_item([donor, receiver])
    rows, cols = np.nonzero(item["label"][0].numpy())
    assert (rows.mean() + 0.5, cols.mean() + 0.5) == pytest.approx((10.0, 22.5), abs=1.0)
    torch.manual_seed(0)
    draw = dataset.lesion_mix.draw(1)
    assert draw.source_slice == 5
    assert draw.target_slice in (10, 11)


def test_context_slices_take_the_donor_s_matching_slices():
    donor = _case("a", (20, 20, 8), (slice(8, 10), slice(8, 10), slice(3, 4)))  # one slice thick, at 3
    receiver = _case("b", (20, 20, 8), outside=1.0)
    _, item = _mixed_item([donor, receiver], context=1)
    image = item["image"].numpy()  # offsets -1, 0, +1
    assert (image[1, 8:10, 8:10] == 10.0).all()
    # the neighbours hold the donor's surroundings there (2), blended by the soft edge of the carve
    assert ((image[0, 8:10, 8:10] > 1.0) & (image[0, 8:10, 8:10] < 10.0)).all()
    assert ((image[2, 8:10, 8:10] > 1.0) & (image[2, 8:10, 8:10] < 10.0)).all()


def test_a_draw_repeats_under_the_same_seed_and_p_is_honoured():
    donor = _case("a", (20, 20, 8), (slice(8, 10), slice(12, 14), slice(3, 5)))
    receiver = _case("b", (20, 20, 8), outside=1.0)
    cases = [donor, receiver]
    _, first = _mixed_item(cases, scale=(0.5, 1.25), margin=2, seed=7)
    _, again = _mixed_item(cases, scale=(0.5, 1.25), margin=2, seed=7)
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["label"], again["label"])
    dataset = SliceDataset(cases, 2, (20, 20), lesion_mix=LesionMix(0.3))
    torch.manual_seed(0)
    draws = [dataset.lesion_mix.draw(1) for _ in range(2000)]
    assert 0.25 < sum(d is not None for d in draws) / 2000 < 0.35


@pytest.mark.parametrize("value", [-0.1, 1.5, "yes", True])
def test_lesion_mix_must_be_a_probability(value):
    with pytest.raises(ConfigError, match="lesion_mix must be a probability in \\[0, 1\\]"):
        FinetuneConfig.from_dict({"data": "d", "out": "o", "lesion_mix": value})


def test_lesion_mix_refuses_a_slice_budget():
    with pytest.raises(ConfigError, match="lesion_mix carves lesions between whole labelled scans"):
        FinetuneConfig.from_dict({"data": "d", "out": "o", "lesion_mix": 0.3, "n_labelled": 1, "every_kth_slice": 4})
    donor = _case("a", (20, 20, 8), (slice(8, 10), slice(12, 14), slice(3, 5)))
    with pytest.raises(ValueError, match="whole labelled scans"):
        SliceDataset([donor, donor], 2, (20, 20), slices={"a": [3]}, lesion_mix=LesionMix(0.5))


@pytest.mark.parametrize(("axis", "order"), [(0, (2, 0, 1)), (1, (0, 2, 1))])
def test_slice_axes_0_and_1_carve_what_axis_2_carves(axis, order):
    """The same volumes transposed so that axis 0 or 1 is the slice axis give the same items (two channels, 2.5D,
    rescaled): every axis-dependent index of the mix would show up here."""
    rng = np.random.default_rng(0)

    def case(name, shape, lesion=None):
        c = _case(name, shape, lesion)
        image = np.concatenate([c.image, rng.normal(size=(1, *shape)).astype(np.float32)])
        return PreparedCase(name, image, c.label, None)

    cases = [case("a", (18, 22, 14), (slice(3, 7), slice(5, 11), slice(8, 11))), case("b", (24, 16, 20))]
    moved = [
        PreparedCase(
            c.case_id,
            np.ascontiguousarray(c.image.transpose(0, *[a + 1 for a in order])),
            np.ascontiguousarray(c.label.transpose(order)),
            None,
        )
        for c in cases
    ]

    def item(cs, ax, seed):
        shape = tuple(max(c.label.shape[a] for c in cs) for a in range(3) if a != ax)
        dataset = SliceDataset(cs, ax, shape, context=1, lesion_mix=LesionMix(1.0, (0.5, 1.25), 2))
        torch.manual_seed(seed)
        return dataset[len(dataset) - 1]  # a slice of case b

    for seed in range(8):
        ref, got = item(cases, 2, seed), item(moved, axis, seed)
        assert ref["label"].sum() > 0
        torch.testing.assert_close(got["image"], ref["image"])
        assert torch.equal(got["label"], ref["label"])


def test_the_rescaled_label_covers_the_rescaled_lesion():
    """Bilinear intensities and the label resized alike (centre-aligned): at 0.5x and 1.25x the label is where the
    carved lesion is bright."""
    donor = _case("a", (40, 40, 6), (slice(16, 23), slice(20, 27), slice(2, 4)), inside=10.0, outside=1.0)
    receiver = _case("b", (40, 40, 6), outside=1.0)
    for factor in (0.5, 1.25):
        _, item = _mixed_item([donor, receiver], scale=(factor, factor))
        bright = item["image"][0].numpy() > 5.5
        label = item["label"][0].numpy() > 0
        assert _bounding_box(bright) == _bounding_box(label), factor  # nearest-neighbour would shift it a row
        assert (bright & label).sum() >= 0.75 * label.sum(), factor  # at 0.5x the blurred corners fall under 5.5


def _bounding_box(mask):
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_a_lesion_at_the_edge_keeps_its_place_when_rescaled():
    donor = _case("a", (40, 40, 6), (slice(0, 4), slice(18, 22), slice(2, 4)))  # rows 0-3: box clipped at 0
    receiver = _case("b", (40, 40, 6), outside=1.0)
    _, item = _mixed_item([donor, receiver], scale=(0.5, 0.5))
    rows, _ = np.nonzero(item["label"][0].numpy())
    assert abs(rows.mean() + 0.5 - 2.0) <= 0.5  # centre of rows 0-3 is 2.0
