"""One brainshift case: subject (deformed atlas) -> lesions -> scanner profile -> working grid -> stored geometry.

The ground truth of every target is derived from the warped tissue map on the 1 mm grid (exact by
construction) and kept twice: at 1 mm (for surface metrics at 1 mm tolerance) and at the working spacing
(for training: the class with the largest partial-volume fraction of each coarse voxel; see
``geometry.downsample_labels``).  Both carry affines describing the same physical space.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from .atlas import BRAIN_TISSUES_WITH_LESION, HeadAtlas, Tissue
from .deform import DeformationConfig, random_subject
from .geometry import crop_or_pad, downsample, downsample_labels, random_field_of_view, random_orientation, reorient
from .lesions import add_ms_lesions, add_stroke_lesion
from .profiles import WM_REFERENCE, ScannerProfile, apply_contrast, jitter


class Target(enum.StrEnum):
    """Segmentation targets of brainshift (one nnU-Net dataset each)."""

    BRAIN_EXTRACTION = "brain_extraction"
    ANATOMY = "anatomy"
    MS_LESION = "ms_lesion"
    STROKE_LESION = "stroke_lesion"


class Cohort(enum.StrEnum):
    """Subjects drawn for a target: healthy subjects serve brain extraction and anatomy."""

    HEALTHY = "healthy"
    MS = "ms"
    STROKE = "stroke"


# What the generated data looks like changes only with this number; dataset.json records it ("benchmark":
# {"simulator": N}).  2 (2026-12-07): artefact decisions on a stream of their own, box-averaged working grids,
# lesion labels where the paint reaches half contrast, stroke labels without CSF, bias fields 3x weaker, the MRI
# classification source from heads of its own (docs/brainshift.md, "Simulator versions").
SIMULATOR_VERSION = 2

ANATOMY_LABELS = {"background": 0, "csf": 1, "grey_matter": 2, "white_matter": 3, "deep_grey": 4, "cerebellum": 5}
_ANATOMY_LUT = np.zeros(len(Tissue), dtype=np.uint8)
_ANATOMY_LUT[[Tissue.CSF, Tissue.GM, Tissue.WM, Tissue.DEEP_GREY, Tissue.CEREBELLUM_GM, Tissue.CEREBELLUM_WM]] = (
    1,
    2,
    3,
    4,
    5,
    5,
)


@dataclass
class SimulatedCase:
    """Arrays of one case.

    Attributes:
        image: T1 image at the working spacing (float32).
        affine: its voxel -> RAS mm affine.
        labels: target name -> label map at the working spacing (uint8).
        labels_1mm: target name -> label map on the 1 mm grid (uint8).
        affine_1mm: affine of the 1 mm label maps.
        region_1mm: nearest-AAL-region map on the 1 mm grid (for the MRI classification source).
        info: what was drawn (lesion count/volume, territory, orientation...).
    """

    image: np.ndarray
    affine: np.ndarray
    labels: dict[str, np.ndarray]
    labels_1mm: dict[str, np.ndarray]
    affine_1mm: np.ndarray
    region_1mm: np.ndarray
    info: dict = field(default_factory=dict)


def target_labels(tissue: np.ndarray, lesion: np.ndarray | None, targets: tuple[str, ...]) -> dict[str, np.ndarray]:
    """1 mm label maps of the requested targets from a tissue map."""
    out = {}
    if Target.BRAIN_EXTRACTION in targets:
        out[Target.BRAIN_EXTRACTION] = np.isin(tissue, BRAIN_TISSUES_WITH_LESION).astype(np.uint8)
    if Target.ANATOMY in targets:
        out[Target.ANATOMY] = _ANATOMY_LUT[np.minimum(tissue, len(Tissue) - 1)]
    for name in (Target.MS_LESION, Target.STROKE_LESION):
        if name in targets:
            out[name] = np.zeros(tissue.shape, np.uint8) if lesion is None else lesion.astype(np.uint8)
    return out


def resolution_blur(image: np.ndarray, profile: ScannerProfile) -> np.ndarray:
    """Slice profile (Gaussian, FWHM = slice thickness) along the slice axis plus in-plane blur, 1 mm grid."""
    from scipy import ndimage

    sigma = np.full(3, profile.blur_mm, dtype=np.float64)
    if profile.slice_axis is not None and profile.slice_thickness > 1:
        sigma[profile.slice_axis] = np.hypot(sigma[profile.slice_axis], profile.slice_thickness / 2.355)
    return ndimage.gaussian_filter(image, sigma) if np.any(sigma > 0) else image


def artefact_decisions(profile: ScannerProfile, seed: int) -> tuple[bool, bool]:
    """Whether a case gets motion and ghosting: draws of the stream ``[seed, 5]``, used by nothing else."""
    rng = np.random.default_rng([seed, 5])
    return bool(rng.random() < profile.motion), bool(rng.random() < profile.ghosting)


def scanner_artefacts(image: np.ndarray, affine: np.ndarray, profile: ScannerProfile, seed: int) -> np.ndarray:
    """TorchIO bias field, motion and ghosting on the working grid, seeded.

    Whether motion and ghosting happen is drawn from a stream of its own (``[seed, 5]``): ``simulate_case`` draws
    the head's pose from ``[seed, 0]``, and until simulator 2 this function used ``default_rng(seed)``, the same
    stream, so motion happened exactly when the x-rotation was negative.
    """
    import torch
    import torchio as tio

    motion, ghosting = artefact_decisions(profile, seed)
    transforms = [tio.RandomBiasField(coefficients=profile.bias)]
    if motion:
        transforms.append(tio.RandomMotion(degrees=4, translation=4, num_transforms=2))
    if ghosting:
        transforms.append(tio.RandomGhosting(num_ghosts=(2, 6), intensity=(0.2, 0.5), axes=(0, 1)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        subject = tio.ScalarImage(tensor=torch.from_numpy(image[None].copy()), affine=affine)
        out = tio.Compose(transforms)(subject)
    return np.clip(out.data[0].numpy(), 0, None)


def rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise (what magnitude MR images carry)."""
    real = image + rng.normal(0, sigma, image.shape)
    imag = rng.normal(0, sigma, image.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def simulate_case(
    atlas: HeadAtlas,
    profile: ScannerProfile,
    cohort: Cohort,
    targets: tuple[str, ...],
    *,
    seed: int,
    spacing: float,
    deformation: DeformationConfig | None = None,
) -> SimulatedCase:
    """Simulate one case; everything random derives from ``seed``."""
    rngs = [np.random.default_rng([seed, k]) for k in range(5)]
    image, tissue, region = random_subject(atlas, rngs[0], deformation or DeformationConfig())
    info: dict = {}
    lesion = None
    if cohort == Cohort.MS:
        voxel_mm = float(np.abs(np.linalg.det(atlas.affine[:3, :3]))) ** (1 / 3)
        image, tissue, lesion = add_ms_lesions(image, tissue, rngs[1], voxel_mm=voxel_mm)
    elif cohort == Cohort.STROKE:
        image, tissue, lesion, info = add_stroke_lesion(image, tissue, region, atlas, rngs[1])
    if lesion is not None:
        info["lesion_volume_mm3"] = round(float(lesion.sum() * abs(np.linalg.det(atlas.affine[:3, :3]))), 1)
    subject_profile = jitter(profile, rngs[2])
    image = resolution_blur(apply_contrast(image, tissue, subject_profile), subject_profile)
    labels_1mm = target_labels(tissue, lesion, targets)
    before, after = random_field_of_view(rngs[3])
    image, affine_1mm = crop_or_pad(image, atlas.affine, before, after)
    labels_1mm = {k: crop_or_pad(v, atlas.affine, before, after)[0] for k, v in labels_1mm.items()}
    region, _ = crop_or_pad(region, atlas.affine, before, after)
    return _to_working_grid(image, labels_1mm, region, affine_1mm, subject_profile, spacing, rngs[4], seed, info)


def _to_working_grid(image, labels_1mm, region, affine_1mm, profile, spacing, rng, seed, info) -> SimulatedCase:
    from .geometry import scaled_affine

    factor = spacing / float(np.sqrt((affine_1mm[:3, :3] ** 2).sum(axis=0)).mean())  # 1 for the real atlas grid
    affine = scaled_affine(affine_1mm, factor)
    image = scanner_artefacts(downsample(image, factor), affine, profile, seed)
    image = rician_noise(image, profile.noise * WM_REFERENCE, rng) * profile.scale
    labels = {k: downsample_labels(v, factor, int(v.max()) + 1) for k, v in labels_1mm.items()}
    axes, flips = random_orientation(rng)
    info["orientation"] = f"{axes}{flips}"
    image, affine = reorient(image, affine, axes, flips)
    labels = {k: reorient(v, affine_1mm, axes, flips)[0] for k, v in labels.items()}
    region, affine_1mm_out = reorient(region, affine_1mm, axes, flips)
    labels_1mm = {k: reorient(v, affine_1mm, axes, flips)[0] for k, v in labels_1mm.items()}
    return SimulatedCase(image.astype(np.float32), affine, labels, labels_1mm, affine_1mm_out, region, info)
