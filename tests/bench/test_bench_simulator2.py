"""What brainshift simulator 2 changed, each checked on a case worked out by hand (docs/brainshift.md)."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.bench import get_profile, list_profiles
from medtransfer.bench.atlas import BRAIN_TISSUES
from medtransfer.bench.deform import DeformationConfig
from medtransfer.bench.geometry import box_weights, downsample, downsample_labels, scaled_affine
from medtransfer.bench.lesions import paint
from medtransfer.bench.simulate import artefact_decisions


def test_artefacts_do_not_follow_the_pose():
    """Motion used to happen exactly when the x-rotation was negative (same stream): now they are independent."""
    profile = get_profile("philips_15t")  # motion 0.5
    agree = 0
    config = DeformationConfig()
    for seed in range(40):
        # random_affine's first draw is the x-rotation, uniform in +-rotation_deg, from the pose stream [seed, 0]
        angle_x = np.random.default_rng([seed, 0]).uniform(-config.rotation_deg, config.rotation_deg)
        motion, _ = artefact_decisions(profile, seed)
        agree += motion == (angle_x < 0)
    assert 8 <= agree <= 32  # 40 of 40 before; about 20 expected for independent coins


def test_scanner_artefacts_apply_the_decisions(tiny_atlas, monkeypatch):
    """scanner_artefacts adds motion exactly when artefact_decisions says so (philips_15t: motion 50 %)."""
    import torchio as tio

    from medtransfer.bench import simulate

    calls = []
    monkeypatch.setattr(tio, "RandomMotion", lambda **kw: calls.append(kw) or (lambda subject: subject))
    profile = get_profile("philips_15t")
    image = np.ones((8, 8, 8), np.float32)
    for seed in range(6):
        calls.clear()
        simulate.scanner_artefacts(image, np.eye(4), profile, seed)
        assert bool(calls) == artefact_decisions(profile, seed)[0]


def test_box_weights_by_hand():
    # 3 one-mm voxels into 1.5 mm: [0, 1.5) = 1 + half of voxel 1; [1.5, 3) = half of voxel 1 + 1
    np.testing.assert_allclose(box_weights(3, 1.5), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]], rtol=1e-6)
    np.testing.assert_allclose(box_weights(7, 3.0), [[1 / 3] * 3 + [0] * 4, [0] * 3 + [1 / 3] * 3 + [0]], rtol=1e-6)


def test_three_mm_averages_the_whole_footprint():
    volume = np.zeros((6, 6, 6), np.float32)
    volume[1, 1, 1] = 1.0  # the centre voxel of coarse voxel (0, 0, 0)
    volume[3, 3, 3] = 1.0  # a corner voxel of coarse voxel (1, 1, 1)
    out = downsample(volume, 3.0)
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0, 0, 0], 1 / 27, rtol=1e-5)  # centre sampling gave 1.0
    np.testing.assert_allclose(out[1, 1, 1], 1 / 27, rtol=1e-5)  # centre sampling gave 0.0
    assert out.sum() == pytest.approx(2 / 27, rel=1e-5)
    four = np.arange(8**3, dtype=np.float32).reshape(8, 8, 8)
    np.testing.assert_allclose(downsample(four, 4.0)[1, 0, 1], four[4:8, 0:4, 4:8].mean(), rtol=1e-6)
    channels = np.stack([volume, 2 * volume])
    np.testing.assert_allclose(downsample(channels, 3.0)[1], 2 * out, rtol=1e-6)


def test_three_mm_labels_are_the_partial_volume_majority():
    labels = np.zeros((6, 3, 3), np.uint8)
    labels[1, 1, 1] = 1  # only the centre of coarse voxel 0: 1 of 27 -> background
    labels[3:6] = 2
    labels[4, 1, 1] = 0  # all but the centre of coarse voxel 1: 26 of 27 -> class 2
    out = downsample_labels(labels, 3.0, 3)
    assert out.tolist() == [[[0]], [[2]]]


def test_box_average_is_centred_where_the_affine_says():
    """The footprint of coarse voxel i is 1 mm voxels [i*s, (i+1)*s): its centre is where scaled_affine puts it
    (exactly for whole-mm spacings; at 1.5 mm a half-covered voxel counts at its own centre, off by 1/12 mm)."""
    for spacing in (1.5, 2.0, 3.0, 4.0):
        ramp = np.broadcast_to(np.arange(24, dtype=np.float32)[:, None, None], (24, 2, 2)).copy()
        coarse = downsample(ramp, spacing)[:, 0, 0]  # the mean 1 mm index under each coarse voxel
        affine = scaled_affine(np.eye(4), spacing)
        centres = [(affine @ [i, 0, 0, 1])[0] for i in range(len(coarse))]  # 1 mm index of each coarse centre
        np.testing.assert_allclose(coarse, centres, atol=1e-4 if spacing % 1 == 0 else 1 / 12 + 1e-4)


def test_paint_labels_exactly_the_half_contrast_voxels():
    image = np.ones((20, 20, 20), np.float32)
    mask = np.zeros_like(image, bool)
    mask[6:14, 6:14, 6:14] = True
    mask[9:11, 9:11, 6:9] = False  # a notch: a concave pocket the smoothing half-fills
    painted, label = paint(image.copy(), mask, 0.0, sigma=1.0)
    contrast = 1 - painted  # the lesion's share of each voxel (level 0, background 1)
    assert (label >= mask).all()
    assert contrast[label].min() >= 0.5
    assert contrast[~label].max() < 0.5
    assert contrast[~label].max() > 0.2  # the soft edge is still there, below half


def test_paint_never_labels_outside_within():
    image = np.ones((20, 20, 20), np.float32)
    mask = np.zeros_like(image, bool)
    mask[6:14, 6:14, 6:14] = True
    mask[9:11, 9:11, 6:9] = False
    within = np.ones_like(mask)
    within[9:11, 9:11, 6:9] = False  # the pocket is not tissue the lesion may take (CSF, for a stroke)
    painted, label = paint(image.copy(), mask, 0.0, sigma=1.0, within=within)
    assert not label[~within].any()
    assert (1 - painted)[~label].max() < 0.5  # and no voxel there is changed by half the lesion's contrast


@pytest.mark.parametrize("domain", list_profiles())
def test_bias_fields_are_tens_of_percent(tiny_atlas, domain):
    """Inside the brain, p99/p1 of the field: a median 1.05-1.6 (it was 3x for ge_3t), never above 2.5."""
    import torch
    import torchio as tio

    brain = np.isin(tiny_atlas.tissue, BRAIN_TISSUES)
    ratios = []
    for seed in range(12):
        torch.manual_seed(seed)
        image = tio.ScalarImage(tensor=torch.ones((1, *brain.shape)), affine=tiny_atlas.affine)
        field = tio.RandomBiasField(coefficients=get_profile(domain).bias)(image).data[0].numpy()[brain]
        ratios.append(np.percentile(field, 99) / np.percentile(field, 1))
    assert 1.02 < np.median(ratios) < 1.6
    assert max(ratios) < 2.5


def test_a_build_of_another_simulator_is_not_reused(tmp_path):
    import json

    from medtransfer.bench.build import check_simulator, simulator_of
    from medtransfer.errors import ConfigError

    old, new = tmp_path / "Dataset004_StrokeLesion", tmp_path / "new"
    for folder, benchmark in ((old, {"seed": 1}), (new, {"seed": 1, "simulator": 2})):
        folder.mkdir()
        (folder / "dataset.json").write_text(json.dumps({"benchmark": benchmark}))
    assert (simulator_of(old), simulator_of(new)) == (1, 2)
    check_simulator(new)
    with pytest.raises(
        ConfigError, match=r"Dataset004_StrokeLesion: built by brainshift simulator 1, this code builds"
    ):
        check_simulator(old)
