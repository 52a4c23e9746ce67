"""Label sanity of simulated cases (in memory, Colin27 atlas subsampled to 2 mm): lesions, classes, domains."""

from __future__ import annotations

import numpy as np

from medtransfer.bench import Cohort, Target, get_profile, list_profiles, simulate_case
from medtransfer.bench.atlas import Tissue, brain_mask, load_head_atlas
from medtransfer.bench.deform import random_subject
from medtransfer.bench.lesions import STROKE_VOLUME_MM3, add_ms_lesions, add_stroke_lesion, territory_mask


def test_atlas_has_every_tissue_and_a_plausible_brain():
    full = load_head_atlas()
    counts = np.bincount(full.tissue.ravel(), minlength=len(Tissue))
    assert all(counts[t] > 1000 for t in Tissue if t != Tissue.LESION)
    assert counts[Tissue.LESION] == 0
    brain_ml = sum(counts[t] for t in range(Tissue.CSF, Tissue.LESION)) / 1000
    assert 1100 < brain_ml < 2000
    # T1 contrast of the real scan: white matter brighter than grey matter brighter than CSF
    median = {t: np.median(full.image[full.tissue == t]) for t in (Tissue.CSF, Tissue.GM, Tissue.WM)}
    assert median[Tissue.CSF] < median[Tissue.GM] < median[Tissue.WM]


def test_brain_mask_closes_one_voxel_cracks_but_keeps_the_outline():
    # a skull-stripped "brain" (a 9-voxel cube) with a zero slit one voxel wide cut 4 voxels deep from the top,
    # as ch2bet has in deep sulci, and a loose bright voxel (kept out: not the largest component)
    image = np.zeros((15, 15, 15), dtype=np.float32)
    image[3:12, 3:12, 3:12] = 1.0
    image[7, 5:10, 8:12] = 0.0
    image[0, 0, 0] = 1.0
    mask = brain_mask(image)
    expected = np.zeros_like(mask)
    expected[3:12, 3:12, 3:12] = True
    expected[7, 5:10, 11] = False  # a closing by one voxel leaves a notch one voxel deep at the crack's mouth
    np.testing.assert_array_equal(mask, expected)
    # so does one two voxels wide; a gap three voxels wide is anatomy, not a crack: it stays open
    image[7:9, 5:10, 8:12] = 0.0
    np.testing.assert_array_equal(brain_mask(image)[7:9, 5:10, 8:11], True)
    image[6:9, 5:10, 8:12] = 0.0
    assert not brain_mask(image)[7, 6:9, 9:12].any()  # (the closing only rounds its floor and ends)


def test_atlas_brain_has_no_one_voxel_cracks():
    from scipy import ndimage

    full = load_head_atlas()
    brain = np.isin(full.tissue, [int(t) for t in range(Tissue.CSF, Tissue.LESION)])
    closed = ndimage.binary_closing(brain, ndimage.generate_binary_structure(3, 1), border_value=0)
    assert (closed & ~brain).sum() == 0


def test_ms_lesions_lie_in_white_matter_and_are_hypointense(tiny_atlas):
    rng = np.random.default_rng(3)
    image, tissue, _ = random_subject(tiny_atlas, rng)
    before = tissue.copy()
    wm_level = np.median(image[tissue == Tissue.WM])
    painted, after, lesions = add_ms_lesions(image.copy(), tissue, np.random.default_rng(5), voxel_mm=2.0)
    assert lesions.any()
    assert np.isin(before[lesions], [Tissue.WM, Tissue.CEREBELLUM_WM]).all()
    assert (after[lesions] == Tissue.LESION).all()
    assert np.median(painted[lesions]) < 0.9 * wm_level


def test_stroke_lesion_stays_in_one_hemisphere_territory(tiny_atlas):
    names = tiny_atlas.region_names
    for seed in range(8):
        image, tissue, region = random_subject(tiny_atlas, np.random.default_rng(seed))
        _, _, lesion, info = add_stroke_lesion(image, tissue, region, tiny_atlas, np.random.default_rng(seed))
        assert lesion.any()
        sides = {names[int(r)][-1] for r in np.unique(region[lesion])}
        assert sides == {info["hemisphere"]}
        territory = territory_mask(region, tiny_atlas, info["territory"], info["hemisphere"])
        assert territory[lesion].all()  # the half-contrast pockets of its paint stay in the territory too
        volume = lesion.sum() * 8.0
        assert volume <= STROKE_VOLUME_MM3[1] * 1.01
        assert np.isin(tissue[lesion], [Tissue.GM, Tissue.WM, Tissue.DEEP_GREY]).all()  # parenchyma, never CSF


def test_lesions_are_inside_the_brain_mask_and_targets_are_consistent(tiny_atlas):
    targets = (Target.BRAIN_EXTRACTION, Target.MS_LESION)
    case = simulate_case(tiny_atlas, get_profile("siemens_3t"), Cohort.MS, targets, seed=11, spacing=4.0)
    brain, lesion = case.labels_1mm[Target.BRAIN_EXTRACTION], case.labels_1mm[Target.MS_LESION]
    assert lesion.sum() > 0
    assert (brain[lesion > 0] == 1).all()
    assert 0 < case.info["lesion_volume_mm3"] <= 20 * 1500
    assert case.image.shape == case.labels[Target.BRAIN_EXTRACTION].shape


def test_same_seed_same_case_in_memory(tiny_atlas):
    make = lambda seed: simulate_case(  # noqa: E731
        tiny_atlas, get_profile("ge_3t"), Cohort.STROKE, (Target.STROKE_LESION,), seed=seed, spacing=4.0
    )
    a, b, c = make(1), make(1), make(2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels_1mm[Target.STROKE_LESION], b.labels_1mm[Target.STROKE_LESION])
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def _contrast(case) -> np.ndarray:
    """Median CSF, GM and extra-cerebral intensity relative to white matter (scale-free statistics)."""
    anatomy, brain = case.labels[Target.ANATOMY], case.labels[Target.BRAIN_EXTRACTION]
    wm = np.median(case.image[anatomy == 3])
    head = (case.image > 0.2 * wm) & (brain == 0)
    return (
        np.array(
            [np.median(case.image[anatomy == 1]), np.median(case.image[anatomy == 2]), np.median(case.image[head])]
        )
        / wm
    )


def test_domains_differ_in_intensity_statistics(tiny_atlas):
    targets = (Target.BRAIN_EXTRACTION, Target.ANATOMY)
    stats = {
        name: _contrast(simulate_case(tiny_atlas, get_profile(name), Cohort.HEALTHY, targets, seed=4, spacing=2.0))
        for name in list_profiles()
    }
    names = list(stats)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(stats[a] - stats[b]).max() > 0.03, (a, b, stats[a], stats[b])
