"""Lesions painted into a subject on its 1 mm grid; the lesion mask is the ground truth by construction.

* MS-like: 0-20 small irregular white-matter lesions per subject (volumes log-uniform 10-1500 mm3, about half
  of them periventricular), hypointense on T1 (between fluid and grey matter: "black holes").
* stroke-like: one large irregular lesion inside one hemisphere's vascular territory (MCA, ACA or PCA, each
  the union of AAL regions it supplies), grown in its grey and white matter only (sulcal and ventricular CSF,
  which a lesion's fluid-dark core would barely change, is never labelled; until simulator 2 it was), volumes
  log-uniform from 0.3 to 150 ml so that small strokes occur, a fluid-dark core (cavitation, as dark as the
  ventricles) fading to a less hypointense rim (gliosis).

The label is where the painted lesion contrast is at least half (see :func:`paint`).

A lesion is grown from a seed as a thresholded smooth random field with a radial fall-off, restricted to an
allowed mask; the threshold is chosen to hit the drawn volume and the largest 6-connected piece is kept (usually,
but not necessarily, the one holding the seed; the kept volume can fall short of the drawn one).
"""

from __future__ import annotations

import numpy as np

from .atlas import HeadAtlas, Tissue, largest_component

TERRITORIES = {
    "mca": (
        "Precentral",
        "Postcentral",
        "Frontal_Mid",
        "Frontal_Inf",
        "Rolandic_Oper",
        "Insula",
        "SupraMarginal",
        "Angular",
        "Temporal_Sup",
        "Temporal_Mid",
        "Temporal_Pole",
        "Heschl",
        "Parietal_Inf",
        "Putamen",
        "Pallidum",
        "Caudate",
    ),
    "aca": (
        "Frontal_Sup",
        "Frontal_Med_Orb",
        "Rectus",
        "Cingulum_Ant",
        "Cingulum_Mid",
        "Paracentral_Lobule",
        "Supp_Motor_Area",
        "Precuneus",
        "Olfactory",
    ),
    "pca": (
        "Calcarine",
        "Cuneus",
        "Lingual",
        "Occipital",
        "Fusiform",
        "ParaHippocampal",
        "Hippocampus",
        "Thalamus",
        "Temporal_Inf",
        "Cingulum_Post",
    ),
}
TERRITORY_WEIGHTS = {"mca": 0.6, "aca": 0.15, "pca": 0.25}
MS_VOLUME_MM3 = (10.0, 1500.0)
STROKE_VOLUME_MM3 = (300.0, 150_000.0)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw whose logarithm is uniform on ``[log low, log high]``."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def grow_blob(
    allowed: np.ndarray, seed: tuple[int, ...], volume: float, rng: np.random.Generator, roughness: float = 0.6
) -> np.ndarray:
    """An irregular connected blob of at most about ``volume`` voxels near ``seed`` inside ``allowed`` (the largest
    6-connected piece of the thresholded field, which need not hold the seed)."""
    from scipy import ndimage

    radius = (3 * volume / (4 * np.pi)) ** (1 / 3)
    half = int(np.ceil(2.2 * radius)) + 3
    box = tuple(slice(max(0, s - half), min(n, s + half + 1)) for s, n in zip(seed, allowed.shape, strict=True))
    local_allowed = allowed[box]
    grids = np.ogrid[tuple(slice(b.start - s, b.stop - s) for b, s in zip(box, seed, strict=True))]
    distance = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grids)) / max(radius, 1.0)
    noise = ndimage.gaussian_filter(rng.normal(size=local_allowed.shape).astype(np.float32), max(radius / 2.5, 1.0))
    noise /= noise.std() + 1e-6
    score = -distance + roughness * noise
    candidates = np.sort(score[local_allowed])[::-1]
    if candidates.size == 0:
        return np.zeros(allowed.shape, dtype=bool)
    threshold = candidates[min(int(volume), candidates.size) - 1]
    local = largest_component(local_allowed & (score >= threshold))
    out = np.zeros(allowed.shape, dtype=bool)
    out[box] = local
    return out


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of a non-empty ``mask`` grown by ``margin`` voxels."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - margin), int(i.max()) + margin + 1) for i in idx)


def paint(
    image: np.ndarray,
    mask: np.ndarray,
    level: np.ndarray | float,
    sigma: float = 0.7,
    within: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``image`` towards ``level`` with soft (partial-volume) edges, in place; returns ``(image, label)``.

    The blend weight is 1 inside ``mask`` and the Gaussian-smoothed mask outside it (about 0.3 next to a flat
    edge).  The label is where the weight reaches 0.5 (``mask`` plus the concave pockets that the smoothing
    fills), restricted to ``within`` when given (outside it the weight is capped at 0.45): every voxel changed by
    at least half the lesion contrast is labelled, and no labelled voxel is changed by less.  (Until simulator 2
    the weight was ``1.5 x`` the smoothed mask, so a half-contrast rim lay outside the label.)
    """
    from scipy import ndimage

    label = mask.copy()
    if not mask.any():
        return image, label
    box = bounding_box(mask, int(4 * sigma) + 2)
    local = mask[box]
    weight = np.maximum(ndimage.gaussian_filter(local.astype(np.float32), sigma), local)
    if within is not None:  # outside ``within`` the lesion stays below half contrast, so it is never labelled there
        weight = np.where(within[box] | local, weight, np.minimum(weight, 0.45))
    label[box] |= weight >= 0.5
    level = level[box] if isinstance(level, np.ndarray) else level
    image[box] = image[box] * (1 - weight) + level * weight
    return image, label


def tissue_level(image: np.ndarray, tissue: np.ndarray, code: Tissue) -> float:
    """Median intensity of one tissue class in this subject."""
    values = image[tissue == code]
    return float(np.median(values)) if values.size else 0.0


def fluid_level(image: np.ndarray, tissue: np.ndarray) -> float:
    """Intensity of pure CSF (ventricles): the 10th percentile of the CSF class.

    The CSF class's median is mostly partial volume with grey matter (sulci); cavitated lesion cores and
    "black holes" are fluid, as dark as the ventricles.
    """
    values = image[tissue == Tissue.CSF]
    return float(np.percentile(values, 10)) if values.size else 0.0


def random_voxel(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, ...] | None:
    """A uniformly drawn voxel of ``mask`` (``None`` when empty)."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return tuple(int(i) for i in np.unravel_index(int(idx[rng.integers(idx.size)]), mask.shape))


def periventricular(tissue: np.ndarray, voxel_mm: float = 1.0, depth_mm: float = 12, reach_mm: float = 6) -> np.ndarray:
    """Voxels within ``reach_mm`` of deep CSF (CSF deeper than ``depth_mm`` in the brain), on a 2x coarser grid."""
    from scipy import ndimage

    coarse, step = tissue[::2, ::2, ::2], 2 * voxel_mm
    ventricles = (coarse == Tissue.CSF) & (ndimage.distance_transform_edt(coarse >= Tissue.CSF) * step > depth_mm)
    near = ndimage.distance_transform_edt(~ventricles) * step <= reach_mm
    full = near.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    return full[: tissue.shape[0], : tissue.shape[1], : tissue.shape[2]]


def add_ms_lesions(image, tissue, rng: np.random.Generator, max_lesions: int = 20, voxel_mm: float = 1.0):
    """Paint 0-``max_lesions`` MS-like lesions; returns ``(image, tissue, lesion_mask)``.

    ``voxel_mm`` is the (isotropic) voxel size of the grid, so that lesion volumes stay in mm3.
    """
    from scipy import ndimage

    wm = (tissue == Tissue.WM) | (tissue == Tissue.CEREBELLUM_WM)
    deep_wm = ndimage.binary_erosion(wm, iterations=1)
    near_ventricles = deep_wm & periventricular(tissue, voxel_mm)
    csf_level, gm_level = fluid_level(image, tissue), tissue_level(image, tissue, Tissue.GM)
    lesions = np.zeros(tissue.shape, dtype=bool)
    for _ in range(int(rng.integers(0, max_lesions + 1))):
        seed = random_voxel(near_ventricles if rng.random() < 0.5 else deep_wm, rng)
        if seed is None:
            break
        blob = grow_blob(wm & ~lesions, seed, log_uniform(rng, *MS_VOLUME_MM3) / voxel_mm**3, rng)
        level = csf_level + rng.uniform(0.25, 0.85) * (gm_level - csf_level)
        image, label = paint(image, blob, level, within=wm)
        lesions |= label
    tissue = np.where(lesions, np.uint8(Tissue.LESION), tissue)
    return image, tissue, lesions


def territory_mask(region: np.ndarray, atlas: HeadAtlas, territory: str, hemisphere: str) -> np.ndarray:
    """Voxels whose nearest AAL region belongs to ``territory`` in ``hemisphere`` (``L``/``R``)."""
    return np.isin(region, atlas.regions_matching(TERRITORIES[territory], hemisphere))


def add_stroke_lesion(image, tissue, region, atlas: HeadAtlas, rng: np.random.Generator):
    """Paint one stroke-like lesion; returns ``(image, tissue, lesion_mask, info)``."""
    names = list(TERRITORY_WEIGHTS)
    territory = names[int(rng.choice(len(names), p=list(TERRITORY_WEIGHTS.values())))]
    hemisphere = "L" if rng.random() < 0.5 else "R"
    parenchyma = np.isin(tissue, [Tissue.GM, Tissue.WM, Tissue.DEEP_GREY])
    allowed = territory_mask(region, atlas, territory, hemisphere) & parenchyma
    voxel_mm = float(np.abs(np.linalg.det(atlas.affine[:3, :3]))) ** (1 / 3)
    volume = log_uniform(rng, *STROKE_VOLUME_MM3) / voxel_mm**3
    seed = random_voxel(allowed, rng)
    if seed is None:
        return image, tissue, np.zeros(tissue.shape, bool), {"territory": territory, "hemisphere": hemisphere}
    lesion = grow_blob(allowed, seed, volume, rng, roughness=0.9)
    csf_level, gm_level = fluid_level(image, tissue), tissue_level(image, tissue, Tissue.GM)
    if lesion.any():
        levels = _stroke_levels(lesion, csf_level, gm_level, rng)
        image, lesion = paint(image, lesion, levels, sigma=1.0, within=allowed)
    tissue = np.where(lesion, np.uint8(Tissue.LESION), tissue)
    return image, tissue, lesion, {"territory": territory, "hemisphere": hemisphere}


def _stroke_levels(lesion: np.ndarray, csf_level: float, gm_level: float, rng: np.random.Generator) -> np.ndarray:
    """CSF-like core (cavitation) rising towards grey-matter-like values at the rim (gliosis)."""
    from scipy import ndimage

    box = bounding_box(lesion, 1)
    depth = np.zeros(lesion.shape, dtype=np.float32)
    depth[box] = ndimage.distance_transform_edt(lesion[box])
    rim = np.exp(-depth / rng.uniform(1.5, 3.0))
    core = csf_level * rng.uniform(0.8, 1.1)
    return (core + rim * 0.6 * (gm_level - core)).astype(np.float32)
