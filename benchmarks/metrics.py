"""Speed of medtransfer's surface metrics and lesion detection against DeepMind's surface-distance and MONAI.

Prints one JSON object.  Surface metrics run side by side in this process on a 1 mm brain mask (181x217x181,
Colin27 ``ch2bet`` > 0, largest component) and a perturbed copy (dilated, shifted, random blobs removed).
Lesion detection runs on a 256^3 volume with 100 random lesions.

Usage: ``python benchmarks/metrics.py [--repeats 3] [--tolerance-mm 1]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable

import numpy as np

from medtransfer.cli import nonnegative_float, positive_int

COLIN_MASK = "/usr/share/mricron/templates/ch2bet.nii.gz"


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest wall time of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def brain_masks(seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Reference brain mask and a perturbed prediction, with the file's spacing."""
    import cc3d
    from scipy import ndimage

    from medtransfer.data.io import load_nifti

    volume = load_nifti(COLIN_MASK)
    ref = cc3d.largest_k(volume.array > 0, k=1, connectivity=26) > 0
    pred = np.roll(ndimage.binary_dilation(ref, iterations=1), 2, axis=1)
    rng = np.random.default_rng(seed)
    grid = np.ogrid[tuple(slice(0, n) for n in ref.shape)]
    surface = np.argwhere(ref ^ ndimage.binary_erosion(ref))
    for centre in surface[rng.choice(len(surface), size=15, replace=False)]:
        radius = rng.uniform(3, 8)
        pred[sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2] = False
    return pred, ref, volume.spacing


def surface_benchmark(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tol: float, repeats: int):
    import surface_distance
    import torch
    from monai.metrics import compute_hausdorff_distance
    from monai.metrics import compute_surface_dice as monai_surface_dice

    from medtransfer.metrics import compute_assd, compute_hd95, compute_surface_dice

    p, r = pred[None, None], ref[None, None]
    tp, tr = torch.from_numpy(p), torch.from_numpy(r)
    ours_t, ours = best_time(lambda: float(compute_surface_dice(p, r, spacing, tol)[0, 0]), repeats)

    def deepmind() -> tuple[float, float, float]:
        dists = surface_distance.compute_surface_distances(ref, pred, spacing)
        return surface_distance.compute_surface_dice_at_tolerance(dists, tol), dists

    dm_t, (dm, dm_dists) = best_time(deepmind, 1)

    def monai(subvoxels: bool) -> float:
        value = monai_surface_dice(tp, tr, [tol], include_background=True, spacing=spacing, use_subvoxels=subvoxels)
        return float(value[0, 0])

    monai_t, monai_value = best_time(lambda: monai(False), repeats)
    monai_sub_t, monai_sub_value = best_time(lambda: monai(True), 1)
    hd_t, hd = best_time(lambda: float(compute_hd95(p, r, spacing)[0, 0]), repeats)
    assd = float(compute_assd(p, r, spacing)[0, 0])
    hd_voxel_t, hd_voxel = best_time(lambda: float(compute_hd95(p, r, spacing, boundary="voxel")[0, 0]), repeats)
    monai_hd_t, monai_hd = best_time(
        lambda: float(compute_hausdorff_distance(tp, tr, include_background=True, percentile=95, spacing=spacing)),
        repeats,
    )
    dm_hd = float(surface_distance.compute_robust_hausdorff(dm_dists, 95))
    gt_to_pred, pred_to_gt = dm_dists["distances_gt_to_pred"], dm_dists["distances_pred_to_gt"]
    area_gt, area_pred = dm_dists["surfel_areas_gt"], dm_dists["surfel_areas_pred"]
    dm_assd = float((gt_to_pred @ area_gt + pred_to_gt @ area_pred) / (area_gt.sum() + area_pred.sum()))
    return {
        "shape": list(ref.shape),
        "spacing_mm": list(spacing),
        "tolerance_mm": tol,
        "surface_dice": {
            "medtransfer_s": ours_t,
            "deepmind_s": dm_t,
            "monai_s": monai_t,
            "monai_subvoxels_s": monai_sub_t,
            "speedup_vs_deepmind": dm_t / ours_t,
            "speedup_vs_monai": monai_t / ours_t,
            "speedup_vs_monai_subvoxels": monai_sub_t / ours_t,
            "value_medtransfer": ours,
            "value_deepmind": float(dm),
            "value_monai_subvoxels": monai_sub_value,
            "value_monai_default_voxel_edges": monai_value,
            "abs_diff_vs_deepmind": abs(ours - float(dm)),
        },
        "hd95_and_assd": {
            "medtransfer_hd95_s": hd_t,
            "deepmind_all_distances_s": dm_t,
            "speedup_vs_deepmind": dm_t / hd_t,
            "medtransfer_hd95_voxel_boundary_s": hd_voxel_t,
            "monai_hd95_s": monai_hd_t,
            "speedup_voxel_boundary_vs_monai": monai_hd_t / hd_voxel_t,
            "hd95_voxel_boundary_medtransfer": hd_voxel,
            "hd95_monai": monai_hd,
            "hd95_medtransfer": hd,
            "hd95_deepmind": dm_hd,
            "assd_medtransfer": assd,
            "assd_deepmind": dm_assd,
        },
    }


def lesion_volumes(size: int = 256, count: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference with ``count`` random ellipsoid lesions; prediction misses some, shifts others, adds a few."""
    rng = np.random.default_rng(seed)
    ref = np.zeros((size,) * 3, dtype=bool)
    pred = np.zeros_like(ref)
    for index in range(count + 10):
        radii = rng.uniform(1.5, 6.0, size=3)
        centre = rng.integers(8, size - 8, size=3)
        box = tuple(slice(int(c - np.ceil(r)), int(c + np.ceil(r)) + 1) for c, r in zip(centre, radii, strict=True))
        grid = np.ogrid[box]
        blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0
        if index < count:
            ref[box] |= blob
        if index % 10 != 3:  # every 10th lesion is missed, the 10 extra ones are false positives
            shifted = tuple(slice(s.start + 1, s.stop + 1) for s in box)
            pred[shifted] |= blob
    return pred, ref


def lesion_benchmark(repeats: int) -> dict:
    from medtransfer.metrics import compute_lesion_detection

    pred, ref = lesion_volumes()
    elapsed, stats = best_time(lambda: compute_lesion_detection(pred[None, None], ref[None, None]), repeats)
    return {
        "shape": list(ref.shape),
        "seconds": elapsed,
        "n_ref": int(stats.n_ref[0, 0]),
        "n_pred": int(stats.n_pred[0, 0]),
        "tp": int(stats.tp[0, 0]),
        "fn": int(stats.fn[0, 0]),
        "fp": int(stats.fp[0, 0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--tolerance-mm", type=nonnegative_float, default=1.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch

    pred, ref, spacing = brain_masks()
    result = {
        "benchmark": "metrics",
        "machine": {"python": platform.python_version(), "torch_threads": torch.get_num_threads()},
        "brain_surface": surface_benchmark(pred, ref, spacing, args.tolerance_mm, args.repeats),
        "lesion_detection_256": lesion_benchmark(args.repeats),
        "targets": {"surface_dice_vs_deepmind": ">= 10x", "surface_dice_vs_monai": ">= 3x", "lesions": "< 1 s"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
