"""Small 2D views of a simulated case: montage thumbnails and the slices of the MRI classification source.

Both are taken in RAS orientation (the stored cases have varied orientations), at the working spacing.

MRI classification label (a genuine atlas-derived label): for an axial or coronal slice, the brain lobe
that holds most of the slice's brain voxels, from the subject's warped AAL map (every brain voxel carries its
nearest AAL region): frontal, parietal, temporal, occipital, central (insula, cingulate, hippocampal formation,
deep grey) or cerebellum.  Slices with less than 2% brain are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .atlas import HeadAtlas
from .geometry import downsample_labels

LOBES = ("frontal", "parietal", "temporal", "occipital", "central", "cerebellum")
LOBE_PREFIXES = {
    "frontal": ("Precentral", "Frontal", "Supp_Motor", "Olfactory", "Rectus", "Paracentral", "Rolandic"),
    "parietal": ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Temporal", "Heschl", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital"),
    "central": (
        "Insula",
        "Cingulum",
        "Hippocampus",
        "ParaHippocampal",
        "Amygdala",
        "Caudate",
        "Putamen",
        "Pallidum",
        "Thalamus",
    ),
    "cerebellum": ("Cerebelum", "Vermis"),
}
VIEWS = {"axial": 2, "coronal": 1}


@dataclass
class Thumbnail:
    """Canonical (RAS) axial and coronal slices of a case, with the label of each target on them."""

    axial: np.ndarray
    coronal: np.ndarray
    labels_axial: dict[str, np.ndarray]
    labels_coronal: dict[str, np.ndarray]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # voxel size (mm) along R, A, S

    @property
    def axial_spacing(self) -> tuple[float, float]:
        return self.spacing[0], self.spacing[1]

    @property
    def coronal_spacing(self) -> tuple[float, float]:
        return self.spacing[0], self.spacing[2]


def to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array with axes permuted/flipped to RAS (no resampling)."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, ornt))


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) along R, A, S of the array :func:`to_ras` makes."""
    import nibabel as nib

    from ..data.resample import spacing_of

    sizes = spacing_of(affine)
    out = [1.0, 1.0, 1.0]
    for axis, (ras_axis, _) in enumerate(nib.orientations.io_orientation(affine)):
        out[int(ras_axis)] = float(sizes[axis])
    return out[0], out[1], out[2]


def _pick_slice(mask: np.ndarray, axis: int) -> int:
    """The slice with most of ``mask`` along ``axis`` (centre of the volume when empty)."""
    counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(counts)) if counts.any() else mask.shape[axis] // 2


def canonical_thumbnail(case, targets) -> Thumbnail:
    """Slices through the lesion (largest area) for lesion targets, else near the brain centre."""
    image = to_ras(case.image, case.affine)
    labels = {t: to_ras(case.labels[t], case.affine) for t in targets}
    focus = next((labels[t] for t in targets if "lesion" in str(t) and labels[t].any()), None)
    if focus is None:
        # brain-centred slices: any non-empty label (an MS case may have no lesion), else the head itself
        focus = next((v > 0 for v in labels.values() if v.any()), image > image.mean())
        if not focus.any():
            focus = np.ones(image.shape, dtype=bool)
        axial_index = int(np.mean(np.nonzero(focus.any(axis=(0, 1)))[0]) + 0.1 * focus.shape[2])
        coronal_index = int(np.mean(np.nonzero(focus.any(axis=(0, 2)))[0]))
    else:
        axial_index, coronal_index = _pick_slice(focus, 2), _pick_slice(focus, 1)
    axial_index = min(axial_index, image.shape[2] - 1)
    return Thumbnail(
        axial=image[:, :, axial_index],
        coronal=image[:, coronal_index, :],
        labels_axial={t: v[:, :, axial_index] for t, v in labels.items()},
        labels_coronal={t: v[:, coronal_index, :] for t, v in labels.items()},
        spacing=ras_spacing(case.affine),
    )


def lobe_lut(atlas: HeadAtlas) -> np.ndarray:
    """AAL index -> lobe code (1-based index into :data:`LOBES`, 0 = none)."""
    lut = np.zeros(256, dtype=np.uint8)
    for index, name in atlas.region_names.items():
        for code, lobe in enumerate(LOBES, start=1):
            if name.startswith(LOBE_PREFIXES[lobe]):
                lut[index] = code
                break
    return lut


def centre_crop_or_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Centre a 2D slice in a ``size x size`` canvas (cropping or zero-padding)."""
    out = np.zeros((size, size), dtype=np.float32)
    src, dst = [], []
    for n in image.shape:
        if n >= size:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def classification_slices(case, atlas: HeadAtlas, min_brain_fraction: float = 0.02) -> dict:
    """Axial and coronal slices with their dominant-lobe label; images scaled by the case's 99.5th percentile."""

    def voxel(affine: np.ndarray) -> float:
        return float(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)).mean())

    spacing = voxel(case.affine)
    factor = spacing / voxel(case.affine_1mm)
    image = to_ras(case.image, case.affine)
    lobes = downsample_labels(lobe_lut(atlas)[to_ras(case.region_1mm, case.affine_1mm)], factor, len(LOBES) + 1)
    lobes = lobes[: image.shape[0], : image.shape[1], : image.shape[2]]
    image = np.clip(image / max(float(np.percentile(image, 99.5)), 1e-6), 0, 1.5).astype(np.float32)
    size = int(round(192 / spacing))
    images, labels, views = [], [], []
    for view, axis in VIEWS.items():
        for k in range(image.shape[axis]):
            lobe_slice = np.take(lobes, k, axis=axis)
            counts = np.bincount(lobe_slice.ravel(), minlength=len(LOBES) + 1)[1:]
            if counts.sum() < min_brain_fraction * lobe_slice.size:
                continue
            images.append(centre_crop_or_pad(np.take(image, k, axis=axis), size))
            labels.append(int(np.argmax(counts)))
            views.append(view)
    return {"images": images, "labels": labels, "views": views}
