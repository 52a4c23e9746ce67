"""The head label map of brainshift, built from the real Colin27 scan and the AAL atlas (mricron-data).

* brain mask: largest connected component of ``ch2bet > 0`` with holes filled (docs/brainshift.md), closed with the
  6-neighbourhood first: ``ch2bet`` is zero in the deepest sulci, and a raw threshold cuts cracks one or two
  voxels wide into the mask whose walls are a fifth of its surface; brain-extraction references (BET, CC359's
  silver standard) are closed surfaces, and a network working at 1.5-3 mm cannot draw 1 mm cracks;
* inside the brain, CSF / grey / white matter by 3-class k-means on the (slightly smoothed) real intensities;
  deep grey (caudate, putamen, pallidum, thalamus) and cerebellum (grey and white) from AAL;
* outside the brain but inside the head, extra-cerebral tissue split by intensity into dark (bone, dura, air
  cavities), intermediate (muscle, skin) and bright (fat, marrow);
* every brain voxel also carries its nearest AAL region (AAL labels cortex only), which defines lobes for the
  MRI classification source and vascular territories for stroke-like lesions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data.io import load_nifti
from .sources import colin27_files, read_aal_names


class Tissue(enum.IntEnum):
    """Codes of the head label map (what each voxel is made of)."""

    BACKGROUND = 0
    FAT = 1
    BONE = 2
    SOFT = 3
    CSF = 4
    GM = 5
    WM = 6
    DEEP_GREY = 7
    CEREBELLUM_GM = 8
    CEREBELLUM_WM = 9
    LESION = 10


BRAIN_TISSUES = (Tissue.CSF, Tissue.GM, Tissue.WM, Tissue.DEEP_GREY, Tissue.CEREBELLUM_GM, Tissue.CEREBELLUM_WM)
BRAIN_TISSUES_WITH_LESION = (*BRAIN_TISSUES, Tissue.LESION)
DEEP_GREY_PREFIXES = ("Caudate", "Putamen", "Pallidum", "Thalamus")
CEREBELLUM_PREFIXES = ("Cerebelum", "Vermis")
MARGIN_MM = 10


@dataclass(frozen=True)
class HeadAtlas:
    """Colin27 as a labelled head on its 1 mm grid (cropped to the head plus a margin).

    Attributes:
        image: real T1 intensities (float32, Colin27 ``ch2``), shape ``(X, Y, Z)``.
        tissue: :class:`Tissue` codes (uint8), same shape.
        region: nearest AAL region index inside the brain, 0 elsewhere (uint8).
        affine: voxel -> RAS mm of the cropped grid.
        region_names: AAL index -> name.
    """

    image: np.ndarray
    tissue: np.ndarray
    region: np.ndarray
    affine: np.ndarray
    region_names: dict[int, str]

    def regions_matching(self, prefixes: tuple[str, ...], hemisphere: str | None = None) -> list[int]:
        """AAL indices whose name starts with one of ``prefixes`` (and ends in ``_L``/``_R`` if given)."""
        out = []
        for index, name in self.region_names.items():
            if name.startswith(prefixes) and (hemisphere is None or name.endswith(f"_{hemisphere}")):
                out.append(index)
        return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (empty mask -> empty)."""
    import cc3d

    labels = cc3d.connected_components(mask.astype(np.uint8), connectivity=6)
    if labels.max() == 0:
        return np.zeros_like(mask, dtype=bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def brain_mask(brain_image: np.ndarray) -> np.ndarray:
    """Largest component of ``ch2bet > 0``, closed with the 6-neighbourhood (cracks up to 2 voxels) and with holes
    filled."""
    from scipy import ndimage

    mask = largest_component(brain_image > 0)
    mask = ndimage.binary_closing(mask, ndimage.generate_binary_structure(3, 1), border_value=0)
    return ndimage.binary_fill_holes(mask)


def head_mask(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Head = largest component of the thresholded (smoothed) T1, closed and hole-filled, plus the brain."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(t1.astype(np.float32), 1.0)
    head = largest_component(smooth > 0.12 * np.percentile(t1[brain], 95))
    head = ndimage.binary_closing(head, iterations=3)
    return ndimage.binary_fill_holes(head) | brain


def kmeans_1d(values: np.ndarray, centres: tuple[float, ...], iterations: int = 20) -> np.ndarray:
    """Deterministic 1D k-means; returns the sorted cluster centres."""
    c = np.asarray(centres, dtype=np.float64)
    for _ in range(iterations):
        assign = np.argmin(np.abs(values[:, None] - c[None]), axis=1)
        c = np.array([values[assign == k].mean() if np.any(assign == k) else c[k] for k in range(len(c))])
    return np.sort(c)


def classify_brain(t1: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """CSF / GM / WM codes inside ``brain`` by 3-class k-means on intensities smoothed with sigma 0.5 mm."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(t1.astype(np.float32), 0.5)
    values = smooth[brain].astype(np.float64)
    lo, hi = np.percentile(values, [5, 95])
    centres = kmeans_1d(values[:: max(1, values.size // 200_000)], (lo, (lo + hi) / 2, hi))
    cuts = (centres[:-1] + centres[1:]) / 2
    classes = np.digitize(smooth, cuts)  # 0 CSF, 1 GM, 2 WM
    tissue = np.zeros(t1.shape, np.uint8)
    tissue[brain] = np.array([Tissue.CSF, Tissue.GM, Tissue.WM], np.uint8)[classes[brain]]
    return tissue


def classify_extracerebral(t1: np.ndarray, head: np.ndarray, brain: np.ndarray, tissue: np.ndarray) -> None:
    """Label head voxels outside the brain as bone (dark), soft (intermediate) or fat (bright), in place."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(t1.astype(np.float32), 0.7)
    gm = np.median(t1[tissue == Tissue.GM])
    wm = np.median(t1[tissue == Tissue.WM])
    extra = head & ~brain
    tissue[extra] = Tissue.SOFT
    tissue[extra & (smooth < 0.55 * gm)] = Tissue.BONE
    tissue[extra & (smooth > 1.1 * wm)] = Tissue.FAT


def fill_regions(aal: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Give every brain voxel the index of its nearest AAL region (AAL labels grey matter only)."""
    from scipy import ndimage

    _, nearest = ndimage.distance_transform_edt(aal == 0, return_indices=True)
    filled = aal[tuple(nearest)]
    return np.where(brain, filled, 0).astype(np.uint8)


def assign_atlas_structures(tissue: np.ndarray, region: np.ndarray, names: dict[int, str]) -> None:
    """Deep grey and cerebellum from AAL regions, in place (CSF stays CSF)."""

    def in_regions(prefixes: tuple[str, ...]) -> np.ndarray:
        ids = [i for i, n in names.items() if n.startswith(prefixes)]
        return np.isin(region, ids)

    parenchyma = (tissue == Tissue.GM) | (tissue == Tissue.WM)
    tissue[in_regions(DEEP_GREY_PREFIXES) & parenchyma] = Tissue.DEEP_GREY
    cerebellum = in_regions(CEREBELLUM_PREFIXES)
    tissue[cerebellum & (tissue == Tissue.GM)] = Tissue.CEREBELLUM_GM
    tissue[cerebellum & (tissue == Tissue.WM)] = Tissue.CEREBELLUM_WM


def crop_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    idx = np.nonzero(mask)
    lows = [max(0, int(i.min()) - margin) for i in idx]
    highs = [min(n, int(i.max()) + margin + 1) for i, n in zip(idx, mask.shape, strict=True)]
    return tuple(slice(lo, hi) for lo, hi in zip(lows, highs, strict=True))


@lru_cache(maxsize=1)
def load_head_atlas() -> HeadAtlas:
    """Build (once per process) the Colin27 head atlas; raises MissingSourceError without mricron-data."""
    files = colin27_files()
    t1 = load_nifti(files.t1, dtype=np.float32)
    bet = load_nifti(files.brain, dtype=np.float32).array
    aal = load_nifti(files.aal).array.astype(np.uint8)
    names = read_aal_names(files.aal_names)
    brain = brain_mask(bet)
    head = head_mask(t1.array, brain)
    tissue = classify_brain(t1.array, brain)
    region = fill_regions(aal, brain)
    assign_atlas_structures(tissue, region, names)
    classify_extracerebral(t1.array, head, brain, tissue)
    box = crop_box(head, MARGIN_MM)
    affine = t1.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64)
    image = np.where(head, t1.array, np.minimum(t1.array, np.percentile(t1.array[~head], 99)))
    return HeadAtlas(image[box].copy(), tissue[box].copy(), region[box].copy(), affine, names)
