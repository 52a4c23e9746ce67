"""Surface Dice, HD95 and ASSD: hand-worked contours and agreement with DeepMind's surface-distance to 1e-6."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtransfer.errors import ConfigError, DataError
from medtransfer.metrics import (
    ASSDMetric,
    HD95Metric,
    SurfaceDiceMetric,
    compute_assd,
    compute_hd95,
    compute_surface_dice,
    compute_surface_distances,
)
from medtransfer.metrics import surface_distance as sd_module

surface_distance = pytest.importorskip("surface_distance")

# the peers use deprecated SciPy/MONAI namespaces; that is their business
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


@pytest.fixture(autouse=True)
def _deepmind_numpy2(monkeypatch):
    """DeepMind's package still uses ``np.Inf`` (removed in NumPy 2) for empty masks."""
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], count: int) -> np.ndarray:
    grid = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        centre = rng.integers(0, shape).reshape(-1, *([1] * len(shape)))
        radii = rng.uniform(0.8, 4.0, size=len(shape)).reshape(-1, *([1] * len(shape)))
        mask |= (((grid - centre) / radii) ** 2).sum(axis=0) <= 1.0
    return mask


def _deepmind(pred, ref, spacing, tolerance):
    dists = surface_distance.compute_surface_distances(ref, pred, spacing)
    gt_to_pred, pred_to_gt = dists["distances_gt_to_pred"], dists["distances_pred_to_gt"]
    area_gt, area_pred = dists["surfel_areas_gt"], dists["surfel_areas_pred"]
    with np.errstate(invalid="ignore", divide="ignore"):
        sdice = surface_distance.compute_surface_dice_at_tolerance(dists, tolerance)
        assd = (np.sum(gt_to_pred * area_gt) + np.sum(pred_to_gt * area_pred)) / (area_gt.sum() + area_pred.sum())
    hd95 = surface_distance.compute_robust_hausdorff(dists, 95)
    return sdice, hd95, assd


def _ours(pred, ref, spacing, tolerance):
    p, r = pred[None, None], ref[None, None]
    return (
        compute_surface_dice(p, r, spacing, tolerance)[0, 0],
        compute_hd95(p, r, spacing)[0, 0],
        compute_assd(p, r, spacing)[0, 0],
    )


def test_single_pixel_contour_is_a_diamond():
    """A lone pixel's contour joins the 4 edge midpoints: 4 half-diagonals of the voxel."""
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    dists = compute_surface_distances(mask, mask, (2.0, 1.0))
    assert dists.areas_pred.sum() == pytest.approx(4 * 0.5 * math.sqrt(2.0**2 + 1.0**2))
    assert np.all(dists.distances_pred_to_ref == 0)


def test_square_perimeter_by_hand():
    """A 4x4 square at spacing 1: 4 cut corners of length sqrt(2)/2 plus 3 unit edges per side."""
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    assert compute_surface_distances(mask, mask, (1.0, 1.0)).areas_ref.sum() == pytest.approx(2 * math.sqrt(2) + 12)


def test_cube_surface_area_anisotropic():
    """Flat faces of a 4x4x4 cube: interior corners of a face each carry one voxel face area."""
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    areas = compute_surface_distances(mask, mask, (1.0, 2.0, 3.0)).areas_ref
    face_x = 3 * 3 * (2.0 * 3.0)  # face normal to axis 0: interior 3x3 corners, each a 2x3 mm face
    assert areas.max() == pytest.approx(6.0)
    assert np.count_nonzero(np.isclose(areas, 2.0 * 3.0)) == 2 * 9
    assert areas[np.isclose(areas, 2.0 * 3.0)].sum() == pytest.approx(2 * face_x)


def test_shift_by_one_voxel_needs_tolerance_of_that_voxel():
    pred = np.zeros((1, 1, 10, 10, 10), dtype=bool)
    pred[0, 0, 3:7, 3:7, 3:7] = True
    ref = np.roll(pred, 1, axis=4)
    spacing = (1.0, 1.0, 2.5)
    assert compute_surface_dice(pred, ref, spacing, 2.5)[0, 0] == pytest.approx(1.0)
    assert compute_surface_dice(pred, ref, spacing, 2.4)[0, 0] < 1.0
    assert compute_hd95(pred, ref, spacing)[0, 0] == pytest.approx(2.5)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_deepmind_3d_anisotropic(seed):
    rng = np.random.default_rng(seed)
    shape = (18, 15, 12)
    pred, ref = _blobs(rng, shape, 3), _blobs(rng, shape, 3)
    spacing = tuple(rng.uniform(0.4, 3.0, size=3))
    for tolerance in (0.0, 1.0, float(spacing[2]), 2.7):
        expected = _deepmind(pred, ref, spacing, tolerance)
        np.testing.assert_allclose(_ours(pred, ref, spacing, tolerance), expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_deepmind_2d(seed):
    rng = np.random.default_rng(100 + seed)
    pred, ref = _blobs(rng, (30, 26), 4), _blobs(rng, (30, 26), 4)
    spacing = tuple(rng.uniform(0.3, 2.0, size=2))
    for tolerance in (0.0, 0.5, 1.5, 4.0):
        expected = _deepmind(pred, ref, spacing, tolerance)
        np.testing.assert_allclose(_ours(pred, ref, spacing, tolerance), expected, atol=1e-6)


def test_large_tolerance_uses_distances_and_still_agrees():
    rng = np.random.default_rng(7)
    pred, ref = _blobs(rng, (16, 16, 16), 3), _blobs(rng, (16, 16, 16), 3)
    spacing = (0.7, 0.9, 1.1)
    offsets, _ = sd_module._tolerance_offsets(spacing, 3.0)
    assert len(offsets) > sd_module.MAX_TOLERANCE_OFFSETS  # exercises the k-d tree path
    np.testing.assert_allclose(_ours(pred, ref, spacing, 3.0), _deepmind(pred, ref, spacing, 3.0), atol=1e-6)
    assert sd_module._tolerance_offsets(spacing, 50.0)[0] is None  # too many to enumerate
    np.testing.assert_allclose(_ours(pred, ref, spacing, 50.0), _deepmind(pred, ref, spacing, 50.0), atol=1e-6)


def test_masks_touching_the_border_agree_with_deepmind():
    rng = np.random.default_rng(3)
    pred, ref = _blobs(rng, (8, 9, 7), 4), _blobs(rng, (8, 9, 7), 4)
    pred[0], ref[:, -1] = True, True
    spacing = (1.0, 1.5, 2.0)
    np.testing.assert_allclose(_ours(pred, ref, spacing, 1.0), _deepmind(pred, ref, spacing, 1.0), atol=1e-6)


def test_one_empty_mask_follows_deepmind():
    ref = np.zeros((6, 6, 6), dtype=bool)
    ref[1:4, 1:4, 1:4] = True
    empty = np.zeros_like(ref)
    for pred, reference in ((empty, ref), (ref, empty)):
        ours = _ours(pred, reference, (1.0, 1.0, 1.0), 1.0)
        sdice, hd95, _ = _deepmind(pred, reference, (1.0, 1.0, 1.0), 1.0)
        assert ours[0] == sdice == 0.0
        assert ours[1] == hd95 == math.inf
        assert ours[2] == math.inf  # DeepMind: inf one way, 0/0 the other


def test_both_empty_is_nan():
    empty = np.zeros((6, 6, 6), dtype=bool)
    ours = _ours(empty, empty, (1.0, 1.0, 1.0), 1.0)
    sdice, hd95, _ = _deepmind(empty, empty, (1.0, 1.0, 1.0), 1.0)
    assert math.isnan(sdice)
    assert hd95 == math.inf
    assert all(math.isnan(v) for v in ours)


def test_agrees_with_monai_subvoxel_surface_dice():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(11)
    pred = np.stack([_blobs(rng, (14, 12, 10), 3) for _ in range(2)])[:, None]
    ref = np.stack([_blobs(rng, (14, 12, 10), 3) for _ in range(2)])[:, None]
    spacing = (1.0, 0.8, 2.0)
    expected = monai_metrics.compute_surface_dice(
        torch.from_numpy(pred),
        torch.from_numpy(ref),
        [2.0],
        include_background=True,
        spacing=spacing,
        use_subvoxels=True,
    )
    np.testing.assert_allclose(compute_surface_dice(pred, ref, spacing, 2.0), expected.numpy(), atol=1e-6)


def test_label_maps_and_per_class_tolerance():
    ref = np.zeros((1, 10, 10), dtype=np.int64)
    ref[0, 1:4, 1:4], ref[0, 5:9, 5:9] = 1, 2
    pred = np.roll(ref, 1, axis=1)
    values = compute_surface_dice(pred, ref, (1.0, 1.0), tolerance_mm=[0.0, 1.0, 1.0], labels=[1, 2, 3])
    assert values[0, 0] < 1.0
    assert values[0, 1] == pytest.approx(1.0)
    assert math.isnan(values[0, 2])


def test_per_case_spacing_is_used():
    mask = np.zeros((2, 1, 8, 8), dtype=bool)
    mask[:, 0, 2:5, 2:5] = True
    shifted = np.roll(mask, 1, axis=2)
    values = compute_surface_dice(mask, shifted, [(1.0, 1.0), (3.0, 1.0)], tolerance_mm=1.0)
    assert values[0, 0] == pytest.approx(1.0)
    assert values[1, 0] < 1.0


def test_accumulators_aggregate_and_reset():
    mask = np.zeros((1, 1, 8, 8, 8), dtype=bool)
    mask[0, 0, 2:5, 2:5, 2:5] = True
    shifted = np.roll(mask, 2, axis=2)
    metric = SurfaceDiceMetric(tolerance_mm=1.0)
    metric(mask, mask, spacing=(1.0, 1.0, 1.0))
    metric(mask, shifted, spacing=(1.0, 1.0, 1.0))
    expected = (1.0 + compute_surface_dice(mask, shifted, (1.0, 1.0, 1.0), 1.0)[0, 0]) / 2
    assert metric.aggregate() == pytest.approx(expected)
    metric.reset()
    assert metric.get_buffer().size == 0
    hd, assd = HD95Metric(reduction="none"), ASSDMetric()
    assert hd(mask, shifted)[0, 0] == pytest.approx(2.0)
    assert assd(mask, mask)[0, 0] == 0.0


def test_bad_inputs_raise_clear_errors():
    mask = np.zeros((1, 1, 6, 6), dtype=bool)
    with pytest.raises(DataError, match="same shape"):
        compute_surface_dice(mask, np.zeros((1, 1, 6, 7), dtype=bool))
    with pytest.raises(DataError, match="spacing must have 2 values"):
        compute_surface_dice(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="tolerance_mm"):
        compute_surface_dice(mask, mask, tolerance_mm=-1.0)
    with pytest.raises(DataError, match="binary"):
        compute_hd95(mask.astype(np.int64) + 2, mask)


def test_voxel_boundary_agrees_with_monai_defaults():
    """``boundary="voxel"`` reproduces MONAI's HD95, NSD (use_subvoxels=False) and symmetric ASSD (float32)."""
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(5)
    pred = np.stack([_blobs(rng, (14, 12, 10), 3) for _ in range(2)])[:, None]
    ref = np.stack([_blobs(rng, (14, 12, 10), 3) for _ in range(2)])[:, None]
    spacing = (1.0, 0.8, 2.0)
    tp, tr = torch.from_numpy(pred), torch.from_numpy(ref)
    hd95 = monai_metrics.compute_hausdorff_distance(tp, tr, include_background=True, percentile=95, spacing=spacing)
    nsd = monai_metrics.compute_surface_dice(tp, tr, [1.5], include_background=True, spacing=spacing)
    assd = monai_metrics.compute_average_surface_distance(
        tp, tr, include_background=True, symmetric=True, spacing=spacing
    )
    np.testing.assert_allclose(compute_hd95(pred, ref, spacing, boundary="voxel"), hd95.numpy(), rtol=1e-5)
    np.testing.assert_allclose(compute_surface_dice(pred, ref, spacing, 1.5, boundary="voxel"), nsd.numpy(), atol=1e-6)
    np.testing.assert_allclose(compute_assd(pred, ref, spacing, boundary="voxel"), assd.numpy(), rtol=1e-5)
    # and the DeepMind definition really is a different number on the same masks
    assert not np.allclose(compute_hd95(pred, ref, spacing), hd95.numpy(), rtol=1e-3)


def test_unknown_boundary_suggests():
    mask = np.zeros((1, 1, 4, 4), dtype=bool)
    with pytest.raises(ConfigError, match="did you mean 'voxel'"):
        compute_hd95(mask, mask, boundary="voxels")


@pytest.mark.parametrize("boundary", ["surfel", "voxel"])
@pytest.mark.parametrize("empty", ["pred", "ref"])
def test_hd95_is_inf_when_exactly_one_mask_is_empty(boundary, empty):
    """As documented (docs/metrics.md): before, the voxel mode gave NaN for an empty prediction (the quantile of
    all-inf distances), so a failed case dropped out of the mean."""
    cube = np.zeros((6, 6, 6), bool)
    cube[2:4, 2:4, 2:4] = True
    none = np.zeros_like(cube)
    pred, ref = (none, cube) if empty == "pred" else (cube, none)
    assert compute_hd95(pred[None, None], ref[None, None], boundary=boundary)[0, 0] == np.inf
