"""Six simulated scanner profiles (3 vendors x 2 field strengths): the domains of brainshift.

A profile changes what a real T1 scan looks like without changing the anatomy:

* per-tissue contrast: each tissue's real intensities are multiplied by a profile factor; the factor map is
  smoothed by 1 mm so that partial-volume voxels blend between tissues, and the real texture is kept;
* a global gamma (non-linear intensity response) and intensity scale (arbitrary scanner units);
* resolution: thick slices along one axis (a Gaussian slice profile, FWHM = slice thickness, on the 1 mm grid;
  no TorchIO ``RandomAnisotropy``) and an extra isotropic Gaussian blur;
* a smooth multiplicative bias field (TorchIO ``RandomBiasField``), stronger at 3 T: inside the brain its
  p99/p1 ratio is a median 1.1 (1.5 T) to 1.45 (ge_3t, up to about 1.7) at 2 mm, the 10-40 % non-uniformity
  that BrainWeb simulates as typical (until simulator 2 the coefficients were 3x larger: ge_3t a median 3x);
* motion and ghosting artefacts (TorchIO ``RandomMotion``, ``RandomGhosting``) on some profiles;
* Rician noise (magnitude of complex Gaussian noise), stronger at 1.5 T.

Each subject jitters its profile a little (factors, gamma, noise) so a domain is a distribution, not a filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .atlas import Tissue

WM_REFERENCE = 110.0  # Colin27 white matter intensity; the gamma curve pivots here


@dataclass(frozen=True)
class ScannerProfile:
    """One simulated scanner.

    Attributes:
        name: registry key, ``<vendor>_<field>``.
        vendor: manufacturer-like label.
        field_strength: 1.5 or 3.0 (tesla).
        factors: multiplicative intensity factor per :class:`Tissue` (missing tissues: 1.0).
        gamma: exponent of the intensity response around white matter.
        scale: arbitrary intensity unit of the scanner.
        bias: maximum polynomial coefficient of the bias field.
        noise: Rician noise standard deviation relative to white matter.
        slice_axis: axis (of the RAS 1 mm grid) with thick slices, or ``None``.
        slice_thickness: thickness of those slices in mm (FWHM of the Gaussian slice profile).
        blur_mm: extra isotropic Gaussian blur (standard deviation, mm).
        motion: probability of a motion artefact.
        ghosting: probability of a ghosting artefact.
    """

    name: str
    vendor: str
    field_strength: float
    factors: dict[int, float] = field(default_factory=dict)
    gamma: float = 1.0
    scale: float = 1.0
    bias: float = 0.3
    noise: float = 0.03
    slice_axis: int | None = None
    slice_thickness: float = 1.0
    blur_mm: float = 0.0
    motion: float = 0.0
    ghosting: float = 0.0

    def factor(self, tissue: Tissue) -> float:
        """Intensity factor of ``tissue`` (derived tissues average their parents)."""
        f = self.factors
        if tissue == Tissue.DEEP_GREY:
            return f.get(Tissue.DEEP_GREY, (f.get(Tissue.GM, 1.0) + f.get(Tissue.WM, 1.0)) / 2)
        if tissue == Tissue.CEREBELLUM_GM:
            return f.get(Tissue.GM, 1.0)
        if tissue == Tissue.CEREBELLUM_WM:
            return f.get(Tissue.WM, 1.0)
        if tissue == Tissue.LESION:
            return f.get(Tissue.LESION, (f.get(Tissue.CSF, 1.0) + f.get(Tissue.GM, 1.0)) / 2)
        return f.get(tissue, 1.0)


T = Tissue
PROFILES: dict[str, ScannerProfile] = {
    p.name: p
    for p in (
        ScannerProfile("siemens_3t", "siemens", 3.0, {}, gamma=1.0, scale=1.0, bias=0.1, noise=0.02),
        ScannerProfile(
            "siemens_15t",
            "siemens",
            1.5,
            {T.CSF: 1.15, T.GM: 1.04, T.WM: 0.97, T.FAT: 0.9},
            gamma=1.1,
            scale=0.4,
            bias=0.05,
            noise=0.05,
            slice_axis=0,
            slice_thickness=1.6,
        ),
        ScannerProfile(
            "ge_3t",
            "ge",
            3.0,
            {T.FAT: 1.4, T.SOFT: 0.75, T.BONE: 0.5, T.CSF: 1.3, T.GM: 0.95, T.WM: 1.05},
            gamma=0.7,
            scale=4.0,
            bias=0.2,
            noise=0.025,
            ghosting=0.5,
        ),
        ScannerProfile(
            "ge_15t",
            "ge",
            1.5,
            {T.FAT: 0.7, T.SOFT: 1.35, T.BONE: 1.7, T.CSF: 1.3, T.GM: 1.0, T.WM: 0.98},
            gamma=1.25,
            scale=2.0,
            bias=0.1,
            noise=0.06,
            slice_axis=2,
            slice_thickness=3.0,
        ),
        ScannerProfile(
            "philips_3t",
            "philips",
            3.0,
            {T.FAT: 1.2, T.SOFT: 1.15, T.BONE: 1.2, T.CSF: 0.7, T.GM: 0.9, T.WM: 1.12},
            gamma=1.3,
            scale=0.02,
            bias=0.13,
            noise=0.03,
        ),
        ScannerProfile(
            "philips_15t",
            "philips",
            1.5,
            {T.FAT: 0.85, T.SOFT: 0.65, T.BONE: 0.8, T.CSF: 1.45, T.GM: 1.1, T.WM: 0.92},
            gamma=0.9,
            scale=10.0,
            bias=0.07,
            noise=0.055,
            slice_axis=1,
            slice_thickness=2.0,
            blur_mm=0.5,
            motion=0.5,
        ),
    )
}


def list_profiles() -> list[str]:
    """Names of the six scanner profiles, in domain order."""
    return list(PROFILES)


def unknown_name(name: str, choices, *, what: str) -> str:
    """``unknown <what> 'x'; did you mean 'y'? Allowed: ...`` (:func:`medtransfer.errors.did_you_mean`)."""
    from ..errors import did_you_mean

    return did_you_mean(str(name), [str(c) for c in choices], what=what)


def get_profile(name: str) -> ScannerProfile:
    """Look up a profile by name (did-you-mean on a typo)."""
    if name not in PROFILES:
        raise ConfigError(unknown_name(name, PROFILES, what="scanner profile"))
    return PROFILES[name]


def jitter(profile: ScannerProfile, rng: np.random.Generator, amount: float = 0.05) -> ScannerProfile:
    """A subject-specific copy: factors and gamma times ``exp(N(0, amount))``, noise times U(0.8, 1.2)."""
    factors = {t: profile.factor(t) * float(np.exp(rng.normal(0, amount))) for t in Tissue}
    return ScannerProfile(
        **{
            **profile.__dict__,
            "factors": factors,
            "gamma": profile.gamma * float(np.exp(rng.normal(0, amount))),
            "noise": profile.noise * float(rng.uniform(0.8, 1.2)),
        }
    )


def apply_contrast(image: np.ndarray, tissue: np.ndarray, profile: ScannerProfile) -> np.ndarray:
    """Per-tissue factors (smoothed 1 mm for partial volumes) and the gamma curve, on the 1 mm grid."""
    from scipy import ndimage

    lut = np.array([profile.factor(t) for t in Tissue], dtype=np.float32)
    factor = ndimage.gaussian_filter(lut[tissue], 1.0)
    out = np.clip(image * factor, 0, None) / WM_REFERENCE
    return (WM_REFERENCE * out**profile.gamma).astype(np.float32)
