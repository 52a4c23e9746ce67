"""Lesion inference options: 2.5D stacking, test-time mirroring, small-component removal and its tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.data.layouts import load_dataset
from medtransfer.errors import ConfigError
from medtransfer.finetune import FinetuneConfig
from medtransfer.finetune.data import PreparedCase, SliceDataset
from medtransfer.infer.postprocess import (
    EVIDENCE_PERCENTILE,
    apply_postprocess,
    check_lesion_prior,
    check_min_component,
    lesion_size_cap,
    lesion_size_prior,
    lesion_volumes_by_case,
    prediction_bound,
    remove_small_components,
    source_lesion_volumes,
    tune_min_component,
    tune_on_validation,
)
from medtransfer.infer.sliding_window import context_stack, mirror_axes, predict_slices
from testkit import threshold_dataset


def _case(image: np.ndarray) -> PreparedCase:
    return PreparedCase("c", image, np.zeros(image.shape[1:], dtype=np.int64), info=None)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_train_and_predict_stacking_agree_and_edges_repeat(axis):
    image = np.random.default_rng(0).normal(size=(2, 4, 5, 6)).astype(np.float32)
    shape = tuple(s for i, s in enumerate(image.shape[1:]) if i != axis)
    data = SliceDataset([_case(image)], axis, shape, context=1)
    stacked = context_stack(torch.from_numpy(image).movedim(axis + 1, 0), 1)  # what predict_slices feeds
    n = image.shape[axis + 1]
    assert len(data) == n
    for s in range(n):
        assert torch.equal(data[s]["image"], stacked[s])
    # channel order: offset -1 (both channels), 0, +1; the first slice's "previous" slice is itself
    first = data[0]["image"]
    assert first.shape[0] == 6
    assert torch.equal(first[0:2], first[2:4])
    assert torch.equal(first[4:6], torch.from_numpy(np.take(image, 1, axis=axis + 1)))
    last = data[n - 1]["image"]
    assert torch.equal(last[4:6], last[2:4])


class _Ramp(nn.Module):
    """A deterministic, position-dependent 2D "model" (so that flips change its output)."""

    def forward(self, x):
        h, w = x.shape[-2:]
        ramp = torch.arange(h * w, dtype=x.dtype).reshape(h, w) / (h * w)
        return x[:, :1] * 3 + ramp - 0.4


def test_mirroring_is_the_mean_of_the_flipped_predictions():
    image = torch.randn(1, 4, 4, 3)
    model = _Ramp()
    got = predict_slices(model, image, axis=2, divisor=1, mirror=True)
    slices = image.movedim(3, 0)
    expected = torch.zeros(slices.shape[0], 2, 4, 4)
    for dims in [(), (2,), (3,), (2, 3)]:
        x = slices.flip(dims) if dims else slices
        p = torch.sigmoid(model(x))
        p = p.flip(dims) if dims else p
        expected += torch.cat([1 - p, p], 1) / 4
    torch.testing.assert_close(got, expected.movedim(0, 3))
    plain = predict_slices(model, image, axis=2, divisor=1)
    assert not torch.allclose(plain, got)  # the ramp is not symmetric: mirroring does change the result
    assert len(mirror_axes(3)) == 8


def test_component_filter_by_size_hand_worked():
    mask = np.zeros((8, 8, 3), bool)
    mask[0, 0, 0] = True  # 1 voxel
    mask[3:5, 3:5, 1] = True  # 4 voxels
    mask[6, 6, 0] = mask[7, 7, 1] = True  # 2 voxels, diagonal neighbours: one 26-connected component
    assert remove_small_components(mask, 2).sum() == 6
    assert remove_small_components(mask, 3).sum() == 4
    assert remove_small_components(mask, 5).sum() == 0
    assert remove_small_components(mask, 0).sum() == 7
    labels = mask.astype(np.int64)
    # 2 x 2 x 4 mm voxels = 16 mm³: 40 mm³ is 2.5 voxels, so only the 4-voxel component stays
    assert apply_postprocess(labels, (2.0, 2.0, 4.0), {"min_component_mm3": 40.0}).sum() == 4
    assert apply_postprocess(labels, (2.0, 2.0, 4.0), {}).sum() == 7


def _specks_case(extra_speck: bool = False):
    ref = np.zeros((10, 10, 4), bool)
    ref[1:4, 1:4, 1:3] = True  # one 18-voxel lesion
    ref[6:8, 6:8, 1] = True  # one 4-voxel lesion
    pred = ref.copy()
    pred[0, 9, 0] = pred[9, 0, 3] = True  # two 1-voxel false positives
    pred[5, 0:2, 3] = True  # a 2-voxel false positive
    if extra_speck:
        pred[9, 8:10, 0] = True  # a second 2-voxel one
    return pred, ref


def test_tuning_picks_the_size_with_the_best_validation_f1():
    pred, ref = _specks_case()
    # min 0: 5 components, tp 2, fp 3 -> precision 0.4, recall 1, F1 4/7; min 2: the 1-voxel FPs go -> precision
    # 2/3, F1 0.8; min 3: every FP goes -> F1 1; min 5: the 4-voxel lesion goes too -> recall 0.5, F1 2/3;
    # min 20: nothing left -> F1 0
    best, scores = tune_min_component([pred], [ref], voxel_volume_mm3=8.0, candidates=(0, 2, 3, 5, 20))
    assert best == 24.0  # 3 voxels of 8 mm³
    assert scores == pytest.approx({"0": 4 / 7, "16": 0.8, "24": 1.0, "40": 2 / 3, "160": 0.0})


def test_tuning_never_chooses_a_size_above_the_training_lesion_cap():
    pred, ref = _specks_case()
    # same case as above: the best F1 (1.0) is at 3 voxels = 24 mm³; a cap of 20 mm³ allows 0 and 16 only
    best, scores = tune_min_component([pred], [ref], 8.0, candidates=(0, 2, 3, 5, 20), max_mm3=20.0)
    assert best == 16.0
    assert scores["24"] == 1.0  # still reported
    # a cap above the best size changes nothing: the best allowed F1 wins, not the largest allowed size (40)
    assert tune_min_component([pred], [ref], 8.0, candidates=(0, 2, 3, 5, 20), max_mm3=50.0)[0] == 24.0
    # a validation set that cannot tell the sizes apart (nothing found: F1 0 everywhere) -> the largest allowed
    empty = np.zeros_like(pred)
    best, scores = tune_min_component([empty], [ref], 8.0, candidates=(0, 2, 3, 5, 20), max_mm3=30.0)
    assert set(scores.values()) == {0.0}
    assert best == 24.0
    # without a cap the smallest of the tied sizes is kept (the old rule)
    assert tune_min_component([empty], [ref], 8.0, candidates=(0, 2, 3, 5, 20))[0] == 0.0
    # a plateau of the best F1: 3 and 4 voxels both remove every false positive and keep the 4-voxel lesion
    # (F1 1.0), 5 voxels removes it too (2/3).  With a cap the larger tied size (32 mm³) wins, without it the smaller
    best, scores = tune_min_component([pred], [ref], 8.0, candidates=(0, 2, 3, 4, 5, 20), max_mm3=50.0)
    assert (scores["24"], scores["32"], scores["40"]) == (1.0, 1.0, pytest.approx(2 / 3))
    assert best == 32.0
    assert tune_min_component([pred], [ref], 8.0, candidates=(0, 2, 3, 4, 5, 20))[0] == 24.0


def test_validation_evidence_may_remove_more_than_the_free_size_only_when_strictly_better():
    pred, ref = _specks_case(extra_speck=True)
    sizes = (0, 2, 3, 4, 5, 20)  # voxels of 8 mm³: 0, 16, 24, 32, 40, 160 mm³
    # min 0: 2 true + 4 false components -> P 1/3, R 1, F1 0.5; min 2: the 1-voxel specks go -> P 1/2, F1 2/3;
    # min 3 and 4: every false positive goes -> F1 1; min 5: the 4-voxel lesion goes too -> R 1/2, F1 2/3; min 20:
    # nothing is left -> F1 0
    best, scores = tune_min_component([pred], [ref], 8.0, candidates=sizes, max_mm3=20.0)
    assert scores == pytest.approx({"0": 0.5, "16": 2 / 3, "24": 1.0, "32": 1.0, "40": 2 / 3, "160": 0.0})
    assert best == 16.0  # free size 20 mm³, no evidence cap: the old rule
    # an evidence cap of 35 mm³: 24 and 32 beat the free sizes' best (2/3); of the two tied above, the smaller
    assert tune_min_component([pred], [ref], 8.0, candidates=sizes, max_mm3=20.0, evidence_max_mm3=35.0)[0] == 24.0
    assert tune_min_component([pred], [ref], 8.0, candidates=sizes, max_mm3=20.0, evidence_max_mm3=20.0)[0] == 16.0
    # the largest size tied at the best among the free sizes stays; above the free size a tie (32 mm³: F1 1, as
    # 24) does not pay for deleting more, and 40 (F1 2/3) is worse
    assert tune_min_component([pred], [ref], 8.0, candidates=sizes, max_mm3=30.0, evidence_max_mm3=100.0)[0] == 24.0
    # training lesions of one voxel (MS at a coarse grid): the free size (4 mm³) is under a voxel (8 mm³), so only
    # 0 is free; without the evidence rule nothing could ever be removed, with it the specks go
    assert tune_min_component([pred], [ref], 8.0, candidates=sizes, max_mm3=4.0)[0] == 0.0
    assert tune_min_component([pred], [ref], 8.0, candidates=sizes, max_mm3=4.0, evidence_max_mm3=35.0)[0] == 24.0
    # the evidence cap needs a free size to stand on: without max_mm3 it changes nothing (smallest tie, old rule)
    assert tune_min_component([pred], [ref], 8.0, candidates=(2, 3, 4, 5), evidence_max_mm3=35.0)[0] == 24.0


def test_default_candidates_reach_past_120_voxels_so_the_caps_bound_the_choice():
    # 1 mm voxels: a detected 10x10x10 stroke (1000 voxels, 1 ml) and a 5x5x6 false positive (150 voxels, 0.15 ml)
    ref = np.zeros((40, 40, 40), bool)
    ref[5:15, 5:15, 5:15] = True
    pred = ref.copy()
    pred[25:30, 25:30, 25:31] = True
    best, scores = tune_min_component([pred], [ref], 1.0, max_mm3=1000.0)
    # sizes 0..120 keep the false positive (F1 2/3); 200..800 remove it and keep the stroke (F1 1); 1200 and up
    # remove both (F1 0).  Ties at the best F1 under the free size (1000 mm³) go to the largest: 800.
    assert scores["120"] == pytest.approx(2 / 3)
    assert scores["200"] == scores["800"] == 1.0
    assert scores["1200"] == scores["20000"] == 0.0
    assert best == 800.0
    # the list stops being the bound: the free size is (a free size of 150 mm³ keeps the false positive)
    assert tune_min_component([pred], [ref], 1.0, max_mm3=150.0)[0] == 120.0
    assert tune_min_component([pred], [ref], 1.0, max_mm3=150.0, evidence_max_mm3=250.0)[0] == 200.0
    # without a free size (no training lesions to go by) the choice stays within the first candidates, to 120
    # voxels: all tie at F1 2/3 there, and without a cap the smallest tie is kept, although 200 scores 1
    assert tune_min_component([pred], [ref], 1.0)[0] == 0.0
    assert tune_min_component([pred], [ref], 1.0, evidence_max_mm3=5000.0)[0] == 0.0


def test_without_validation_cases_the_free_size_of_the_training_labels_is_kept(tmp_path):
    dataset = load_dataset(threshold_dataset(tmp_path / "data"))  # t0: two 4x4x4 lesions of 1 mm³ voxels

    def never(_):
        raise AssertionError("nothing is predicted without validation cases")

    post = tune_on_validation(never, dataset, [], ["t0"])
    # two lesions of 64 mm³: no spread, so both prediction bounds are 64 mm³; free size half of it, 32; nothing tuned
    (key,) = post["prior_lesion_volumes_mm3"]
    assert key.endswith(" data/t0")  # the label's hash, then its name
    assert post == {
        "min_component_mm3": 32.0,
        "tuned_on": [],
        "val_lesion_f1": {},
        "max_mm3_from_training_lesions": 32.0,
        "max_mm3_if_validation_better": 64.0,
        "lesion_prior": {
            "mode": "auto",
            "training_lesions": 2,
            "source_lesions": 0,
            "source_scans_shared": 0,
            "source_pooled": False,
            "agreement_p": None,
        },
        "prior_lesion_volumes_mm3": {key: [64.0, 64.0]},
    }
    assert tune_on_validation(never, dataset, [], [])["min_component_mm3"] == 0.0  # no training lesions: none


def test_a_source_s_lesions_join_the_training_lesions_in_the_caps(tmp_path):
    dataset = load_dataset(threshold_dataset(tmp_path / "data"))  # t0: two 64 mm³ lesions

    def never(_):
        raise AssertionError("nothing is predicted without validation cases")

    # pooled log volumes ln4 * (2, 3, 3, 3, 3, 4): the source's scans s/a (16, 64) and s/b (64, 256) with t0's two.
    # Mean 3 ln4, SD ln4 sqrt(2/5); n = 6, t_{5, 0.95} = 2.0150, t_{5, 0.80} = 0.9195, sqrt(1 + 1/6) = 1.0801:
    # free size 0.5 * 4^(3 - 2.0150 * 0.63246 * 1.0801) = 0.5 * 4^1.62346, evidence cap 4^(3 - 0.62817) = 4^2.37183
    source = {"s/a": [16.0, 64.0], "s/b": [64.0, 256.0]}
    post = tune_on_validation(never, dataset, [], ["t0"], source)
    (t0,) = post["prior_lesion_volumes_mm3"]
    # Mann-Whitney, t0 (64, 64) against 16, 64, 64, 256: each 64 scores 1 (above 16) + 0.5 + 0.5 (ties), so
    # U = 2 x 2 = 4 = n1 n2 / 2 and p = 1; complete separation could reach 2 / C(6, 2) = 0.13 at best,
    # which cannot refuse at 0.05: not tested, not pooled
    assert post["lesion_prior"] == {
        "mode": "auto",
        "training_lesions": 2,
        "source_lesions": 4,
        "source_scans_shared": 0,
        "source_pooled": False,
        "agreement_p": None,
        "why": "2 training and 4 source lesion(s): too few for a Mann-Whitney test to reach p < 0.05",
    }
    assert post["prior_lesion_volumes_mm3"] == {t0: [64.0, 64.0]}
    assert post["max_mm3_from_training_lesions"] == 32.0
    # pooled as asked: both, untested
    post = tune_on_validation(never, dataset, [], ["t0"], source, "pooled")
    assert post["max_mm3_from_training_lesions"] == pytest.approx(0.5 * 4**1.62346, abs=2e-3)
    assert post["max_mm3_if_validation_better"] == pytest.approx(4**2.37183, abs=2e-2)
    assert post["min_component_mm3"] == post["max_mm3_from_training_lesions"]
    assert post["lesion_prior"]["source_pooled"] is True
    assert post["prior_lesion_volumes_mm3"] == {t0: [64.0, 64.0], **source}
    # a chain: a model fine-tuned from that one on the same scan counts t0 once (its record already holds t0), and
    # so does one whose source knew t0 by another name or folder (the label's hash is what identifies it)
    renamed = {t0.split()[0] + " elsewhere/case_7": [64.0, 64.0], **source}
    again = tune_on_validation(never, dataset, [], ["t0"], renamed, "pooled")
    assert again["lesion_prior"]["source_lesions"] == 4
    chained = tune_on_validation(never, dataset, [], ["t0"], post["prior_lesion_volumes_mm3"], "pooled")
    assert chained["prior_lesion_volumes_mm3"] == post["prior_lesion_volumes_mm3"]
    assert chained["lesion_prior"]["source_lesions"] == 4
    assert chained["max_mm3_from_training_lesions"] == post["max_mm3_from_training_lesions"]
    # a source trained on one of this run's test (or validation) scans, v0 (a chain on one dataset with another split),
    # leaves its lesions out, whatever the source called it; a scan the run merely does not use (another domain's,
    # outside the label budget) still counts
    (v0,) = lesion_volumes_by_case(dataset, ["v0"])
    v0_source = {v0.split()[0] + " other/v9": [64.0, 100.0], **source}
    leaky = tune_on_validation(never, dataset, [], ["t0"], v0_source, "pooled", test_ids=["v0"])
    assert leaky["lesion_prior"]["source_scans_held_out"] == 1
    assert leaky["lesion_prior"]["source_lesions"] == 4
    assert leaky["prior_lesion_volumes_mm3"] == post["prior_lesion_volumes_mm3"]
    assert leaky["max_mm3_from_training_lesions"] == post["max_mm3_from_training_lesions"]
    assert "source_scans_held_out" not in post["lesion_prior"]  # recorded only where something was left out
    unused = tune_on_validation(never, dataset, [], ["t0"], v0_source, "pooled")
    assert unused["lesion_prior"]["source_lesions"] == 6
    assert "source_scans_held_out" not in unused["lesion_prior"]
    assert lesion_size_prior({}, {"h d/a": [5.0], "k d/b": [6.0]}, "pooled", held_out={"h d/a"})[0] == {"k d/b": [6.0]}
    # the training lesions alone, as asked
    target = tune_on_validation(never, dataset, [], ["t0"], source, "target")
    assert target["max_mm3_from_training_lesions"] == 32.0
    assert target["lesion_prior"]["source_pooled"] is False
    # a slice budget (no whole training scan): nothing to test the source against, so nothing unless pooled is asked
    assert tune_on_validation(never, dataset, [], [], {"s/a": [64.0, 64.0]})["min_component_mm3"] == 0.0
    assert tune_on_validation(never, dataset, [], [], {"s/a": [64.0, 64.0]}, "pooled")["min_component_mm3"] == 32.0


def test_the_source_s_lesions_are_pooled_unless_their_sizes_differ():
    # complete separation: the exact two-sided Mann-Whitney p is 2 / C(n1 + n2, n1)
    strokes = {"t/a": [20000.0, 40000.0], "t/b": [80000.0]}
    small = {f"s/{i}": [float(v)] for i, v in enumerate((10, 20, 30, 40, 50))}
    volumes, record = lesion_size_prior(strokes, small)
    assert record["agreement_p"] == pytest.approx(2 / 56, abs=1e-9)  # 0.036 < 0.05: an MS source, refused
    assert record["source_pooled"] is False
    assert volumes == strokes
    assert record["why"] == (
        "the source's lesions differ in size (median 30 mm³ against 40000 mm³ in training; Mann-Whitney p = 0.036)"
    )
    # three against four cannot reach 0.05 (2 / 35 = 0.057): not tested, not pooled
    volumes, record = lesion_size_prior(strokes, {k: small[k] for k in list(small)[:4]})
    assert record["agreement_p"] is None
    assert record["source_pooled"] is False
    assert record["why"].startswith("3 training and 4 source lesion(s): too few")
    # the same law (interleaved volumes): p = 1 -> pooled, training cases first
    volumes, record = lesion_size_prior({"t/a": [20.0, 40.0], "t/b": [30.0]}, small)
    assert record["agreement_p"] > 0.5
    assert record["source_pooled"] is True
    assert list(volumes) == ["t/a", "t/b", *small]
    # pooled: no test; target: no source
    volumes, record = lesion_size_prior(strokes, small, "pooled")
    assert record["source_pooled"] is True
    assert record["agreement_p"] is None
    assert lesion_size_prior(strokes, small, "target")[1] == {
        "mode": "target",
        "training_lesions": 3,
        "source_lesions": 5,
        "source_scans_shared": 0,
        "source_pooled": False,
        "agreement_p": None,
    }
    # thousands of lesions (a large public set as the source): the test's reach is worked out without overflow
    rng = np.random.default_rng(0)
    many = {"t/x": list(np.exp(rng.uniform(5, 10, 5000)))}
    volumes, record = lesion_size_prior(many, {"s/x": list(np.exp(rng.uniform(5, 10, 50000)))})
    assert record["source_pooled"] is True
    assert record["agreement_p"] > 0.05
    # a source whose scans are all training scans offers nothing; keys are scans: a label hash first, else the key
    volumes, record = lesion_size_prior(strokes, {"t/a": [20000.0, 40000.0]})
    assert record["source_lesions"] == 0
    assert record["source_scans_shared"] == 1
    assert not record["source_pooled"]
    spaced = {
        "patient 01": [30.0],
        "patient 02": [40.0],
        "0123456789abcdef x/1": [50.0],
        "0123456789abcdef y/2": [60.0],
    }
    volumes, record = lesion_size_prior({}, spaced, "pooled")
    assert list(volumes) == ["patient 01", "patient 02", "0123456789abcdef x/1"]  # one hash, one scan
    assert record["source_scans_shared"] == 1
    # no training lesions (a slice budget): auto cannot test, so nothing is pooled
    assert lesion_size_prior({}, small)[1]["why"].startswith("no training lesions")
    assert lesion_size_prior(strokes, None)[1]["source_lesions"] == 0


def test_a_checkpoint_s_recorded_lesion_volumes_are_read_back_or_ignored():
    def ckpt(value):
        return {"meta": {"postprocess": {"prior_lesion_volumes_mm3": value}}}

    assert source_lesion_volumes(ckpt({"d/a": [64.0, 12.5], "d/b": []})) == {"d/a": [64.0, 12.5], "d/b": []}
    assert source_lesion_volumes(ckpt({"d/a": [3]})) == {"d/a": [3.0]}
    bad = [None, {}, [64.0], "64", {"d/a": [64.0, -1.0]}, {"d/a": [float("nan")]}, {"d/a": [True]}, {"d/a": "x"}]
    for value in bad:
        assert source_lesion_volumes(ckpt(value)) is None, value
    for checkpoint in (None, "x", {"meta": "x"}, {"meta": {}}, {"meta": {"postprocess": "x"}}, ["meta"]):
        assert source_lesion_volumes(checkpoint) is None, checkpoint
    assert check_lesion_prior(" Pooled ") == "pooled"
    with pytest.raises(ConfigError, match=r"min_component_prior must be one of auto, target, pooled, got 'both'"):
        check_lesion_prior("both")
    with pytest.raises(ConfigError, match="min_component_prior"):
        FinetuneConfig(data="d", out="o", min_component_prior=None)


def test_lesion_size_cap_is_half_the_5_percent_prediction_bound_of_training_lesion_volumes():
    a = np.zeros((12, 12, 12), bool)
    a[0:2, 0:2, 0:2] = True  # 8 voxels
    a[5:8, 5:8, 5:8] = True  # 27 voxels
    b = np.zeros((6, 6, 6), bool)
    b[0, 0, 0:4] = True  # 4 voxels
    # volumes in mm³: a at 1 mm³/voxel -> 8, 27; b at 8 mm³/voxel -> 32.  Log volumes 2.0794, 3.2958, 3.4657: mean
    # 2.9470, sd 0.7561; n = 3, sqrt(1 + 1/3) = 1.1547; Student's t with 2 degrees of freedom (tables): 2.920 at
    # 0.95, 1.061 at 0.80.  Free size: 0.5 exp(2.9470 - 2.920 * 0.7561 * 1.1547) = 0.5 exp(0.3976) = 0.744
    assert lesion_size_cap([a, b], [1.0, 8.0]) == pytest.approx(0.744, abs=1e-3)
    # the evidence cap: exp(2.9470 - 1.061 * 0.7561 * 1.1547) = exp(2.0210) = 7.55
    assert lesion_size_cap([a, b], [1.0, 8.0], EVIDENCE_PERCENTILE, factor=1.0) == pytest.approx(7.55, abs=0.01)
    # lesions of one volume have no spread: the bound is that volume; one lesion (or none) gives no bound
    assert lesion_size_cap([a[:4, :4, :4]] * 2, [1.0, 1.0]) == pytest.approx(4.0)  # half of 8 mm³
    assert lesion_size_cap([a[:4, :4, :4]], [1.0]) is None
    assert lesion_size_cap([np.zeros((3, 3, 3), bool)], [1.0]) is None
    assert lesion_size_cap([], []) is None


def test_prediction_bound_is_calibrated_where_the_percentile_of_a_few_lesions_is_not():
    # the bound's defining property: a new lesion of the same law falls under it with the stated probability.
    # 5000 training sets of 6 log-normal lesion volumes (one stroke per scan, 6 training scans), each with a new
    # lesion: under the 5 % bound ~5 % of the time, under the 20 % bound ~20 %; under the plain 5th percentile of
    # the 6 volumes (what the free size used to halve) far more often (about 1 in 6, order statistics)
    rng = np.random.default_rng(0)
    logs = rng.normal(8.0, 1.5, (5000, 7))
    training, new = np.exp(logs[:, :6]), np.exp(logs[:, 6])
    under = {p: np.mean([n < prediction_bound(t, p) for t, n in zip(training, new, strict=True)]) for p in (5.0, 20.0)}
    assert under[5.0] == pytest.approx(0.05, abs=0.012)
    assert under[20.0] == pytest.approx(0.20, abs=0.02)
    assert np.mean(new < np.percentile(training, 5, axis=1)) > 0.12


def test_min_component_option_is_checked():
    assert check_min_component("AUTO") == "auto"
    assert check_min_component(None) is None
    assert check_min_component(12) == 12.0
    with pytest.raises(ConfigError, match="min_component_mm3 must be 'auto', null or a volume"):
        check_min_component("big")
    with pytest.raises(ConfigError):
        check_min_component(-1)


def test_a_scan_s_lesion_key_is_its_label_whatever_the_file(tmp_path):
    from types import SimpleNamespace

    import nibabel as nib

    from medtransfer.infer.postprocess import lesion_volumes_by_case

    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1  # one lesion of 8 voxels of 0.9 x 0.9 x 2 mm: 12.96 mm³
    mask[5, 4, 3] = 1  # and one of 1 voxel, 1.62 mm³
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    files = {
        "gz": ("a.nii.gz", mask),
        "nii": ("b.nii", mask),
        "float": ("c.nii.gz", mask.astype(np.float32)),
        "4d": ("d.nii.gz", mask[..., None].astype(np.int16)),
        "flipped": ("e.nii.gz", mask[::-1].copy()),
    }
    for name, array in files.values():
        nib.save(nib.Nifti1Image(array, affine), tmp_path / name)
    cases = {case: SimpleNamespace(label=tmp_path / name) for case, (name, _) in files.items()}
    dataset = SimpleNamespace(root=tmp_path / "Dataset009_X", get=cases.__getitem__)
    by_case = lesion_volumes_by_case(dataset, list(files))
    keys = {case: key.split(" ")[0] for key in by_case for case in files if key.endswith(f"/{case}")}
    assert keys["gz"] == keys["nii"] == keys["float"] == keys["4d"]  # one scan, however it is stored
    assert keys["flipped"] != keys["gz"]  # another voxel grid is another scan
    # the recipe, pinned: SHA-256 of repr((shape, spacing rounded to 6 digits)) and the packed voxels, 16 hex digits
    import hashlib

    spacing = [0.9, 0.9, 2.0]
    expected = hashlib.sha256(repr(((6, 5, 4), spacing)).encode() + np.packbits(mask > 0).tobytes()).hexdigest()[:16]
    assert keys["gz"] == expected
    assert sorted(by_case[f"{expected} Dataset009_X/gz"]) == pytest.approx([1.62, 12.96])


def test_label_hashes_and_volumes_are_read_once_while_the_file_is_unchanged(tmp_path, monkeypatch):
    """A run tunes its best and last checkpoints one after the other: each label file is read once, and read
    again when it changes (its size or modification time)."""
    import os

    from medtransfer.data.io import save_nifti
    from medtransfer.infer import postprocess

    dataset = load_dataset(threshold_dataset(tmp_path / "data"))
    reads = []
    real = postprocess._lesion_mask
    monkeypatch.setattr(postprocess, "_lesion_mask", lambda path: reads.append(path) or real(path))
    first = lesion_volumes_by_case(dataset, ["t0"])
    assert lesion_volumes_by_case(dataset, ["t0"]) == first
    assert postprocess.held_out_scans(dataset, ["t0"]) == {next(iter(first)).split()[0]}
    assert len(reads) == 1
    label = dataset.get("t0").label
    bigger = np.zeros((16, 16, 8), np.uint8)
    bigger[0:8, 0:8, 0:4] = 1  # one lesion of 256 mm³ now
    save_nifti(label, bigger, np.eye(4))
    os.utime(label, ns=(1, 1))  # another modification time, whatever the clock's resolution
    (volumes,) = lesion_volumes_by_case(dataset, ["t0"]).values()
    assert volumes == [256.0]
    assert len(reads) == 2


def test_the_dataset_s_labelled_held_out_scans_never_feed_the_caps(tmp_path):
    """A scan of labelsTs (the dataset's own test set) is held out of the caps even when the run's split does not
    name it."""
    import shutil

    from medtransfer.infer.postprocess import held_out_scans

    root = threshold_dataset(tmp_path / "data")
    (root / "imagesTs").mkdir()
    (root / "labelsTs").mkdir()
    shutil.copy(root / "imagesTr" / "v0_0000.nii.gz", root / "imagesTs" / "x9_0000.nii.gz")
    shutil.copy(root / "labelsTr" / "v0.nii.gz", root / "labelsTs" / "x9.nii.gz")
    dataset = load_dataset(root)
    (v0,) = lesion_volumes_by_case(dataset, ["v0"])
    assert held_out_scans(dataset, []) == {v0.split()[0]}  # x9 is v0's label: one hash

    def never(_):
        raise AssertionError("nothing is predicted without validation cases")

    source = {v0.split()[0] + " elsewhere/x9": [64.0, 100.0], "s/a": [16.0, 64.0]}
    post = tune_on_validation(never, dataset, [], ["t0"], source, "pooled")
    assert post["lesion_prior"]["source_scans_held_out"] == 1
    assert post["lesion_prior"]["source_lesions"] == 2


def _pooled_f1(preds, refs):
    from medtransfer.metrics.lesions import LesionStats, compute_lesion_detection, reduce_lesion_stats

    stats = LesionStats.concatenate(
        [compute_lesion_detection(p[None, None], r[None, None]) for p, r in zip(preds, refs, strict=True)]
    )
    return float(reduce_lesion_stats(stats, "micro")["f1"][0])


def test_tuning_scores_each_case_at_its_own_voxel_size_as_predict_applies_it():
    """Validation scans at 1 mm and 2 mm; case B has an 8-voxel (64 mm³) false positive.  Before, the candidates were
    voxel counts of case A applied to B's 8 mm³ voxels too: 30 mm³ (30 voxels) looked perfect on validation, but
    predict removes components under 30 mm³ = 3.75 voxels of B, keeping the false positive (F1 0.8)."""
    ref_a = np.zeros((40, 40, 40), bool)
    ref_a[5:10, 5:10, 5:9] = True  # 100 voxels = 100 mm³
    ref_b = np.zeros((20, 20, 20), bool)
    ref_b[2:5, 2:5, 2:6] = True  # 36 voxels = 288 mm³
    pred_b = ref_b.copy()
    pred_b[12:14, 12:14, 12:14] = True  # 8 voxels = 64 mm³
    size, scores = tune_min_component([ref_a, pred_b], [ref_a, ref_b], [1.0, 8.0], candidates=(0, 30, 70), max_mm3=80.0)
    # 0 and 30 mm³ keep B's 64 mm³ speck: 2 found / 3 predicted, F1 = 2 * (1 * 2/3) / (1 + 2/3) = 0.8
    assert scores == pytest.approx({"0": 0.8, "30": 0.8, "70": 1.0})
    assert size == 70.0
    applied = [
        apply_postprocess(p.astype(np.uint8), s, {"min_component_mm3": size}) > 0
        for p, s in ((ref_a, (1, 1, 1)), (pred_b, (2, 2, 2)))
    ]
    assert _pooled_f1(applied, [ref_a, ref_b]) == pytest.approx(scores["70"])
    with pytest.raises(ValueError, match="2 voxel volumes for 1 cases"):
        tune_min_component([ref_a], [ref_a], [1.0, 8.0])


def test_touching_classes_are_one_component_when_small_ones_are_removed():
    """Tumour core (2) inside oedema (1): 12 + 12 touching voxels are one 24-voxel lesion, as tuning counts it; each
    class alone is under 20 voxels, which before deleted the lesion.  The 1-voxel speck goes, the labels stay."""
    pred = np.zeros((20, 20, 20), np.uint8)
    pred[2:5, 2:4, 2:4] = 1
    pred[5:8, 2:4, 2:4] = 2
    noisy = pred.copy()
    noisy[15, 15, 15] = 1
    size, scores = tune_min_component([noisy > 0], [pred > 0], 1.0, candidates=(0, 2, 20), max_mm3=20.0)
    assert size == 20.0
    assert scores["20"] == 1.0
    assert np.array_equal(apply_postprocess(noisy, (1, 1, 1), {"min_component_mm3": size}), pred)
