"""Spatial data augmentation of training items (2D slices and 3D patches), drawn from torch's global RNG.

``augment: spatial`` applies, per item, a random flip of each spatial axis (p = 0.5 each) and, with
probability ``p_affine``, a rotation (about the slice normal in 2D, about each axis in 3D) and an isotropic
scaling, resampled with bilinear interpolation for the image and nearest neighbour for the label (nnU-Net's
spatial transforms, without elastic deformation).  Intensities are never touched, so a scanner's contrast,
the very thing a domain-shift study measures, stays what it is.  ``augment: spatial_intensity`` adds a random
gamma and brightness (:class:`IntensityAugment`, monotone, for lesion recipes within one scanner).

Parameters come from torch's global generator, which the trainer checkpoints and restores, so a resumed run
draws the same augmentations as an uninterrupted one (the same rule as the random 3D patch positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F

from ..errors import ConfigError, did_you_mean


class AugmentMode(StrEnum):
    """What augmentation the training items get."""

    NONE = "none"
    SPATIAL = "spatial"
    SPATIAL_INTENSITY = "spatial_intensity"

    @classmethod
    def parse(cls, value: str | AugmentMode | None) -> AugmentMode:
        if value is None or value is False:
            return cls.NONE
        try:
            return cls(str(value).lower())
        except ValueError as err:
            raise ConfigError(did_you_mean(str(value), [m.value for m in cls], what="augment")) from err


@dataclass(frozen=True)
class SpatialAugment:
    """Random flips, rotation and scaling of an ``{"image": (C, *S), "label": (1, *S)}`` item.

    Attributes:
        max_rotation_deg: rotations are drawn uniformly from ``[-max, max]`` degrees.
        scale_range: isotropic zoom factor range.
        p_affine: probability of rotating and scaling an item.
        p_flip: probability of flipping each spatial axis.
    """

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    p_affine: float = 0.5
    p_flip: float = 0.5

    def __call__(self, item: dict) -> dict:
        image, label = item["image"], item["label"]
        dims = image.ndim - 1
        flips = [d + 1 for d in range(dims) if float(torch.rand(())) < self.p_flip]
        if flips:
            image, label = image.flip(flips), label.flip(flips)
        if float(torch.rand(())) < self.p_affine:
            theta = self._theta(tuple(image.shape[1:]))
            image = _warp(image, theta, "bilinear")
            label = _warp(label, theta, "nearest")
        return {**item, "image": image.contiguous(), "label": label.contiguous()}

    def _theta(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The ``affine_grid`` matrix of a rotation + zoom in voxel space for an array of spatial ``shape``.

        ``affine_grid`` works in coordinates normalised to [-1, 1] per axis (last axis first); conjugating with
        the half-sizes makes the transform rigid in voxels, whatever the aspect ratio.
        """
        dims = len(shape)
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        angles = (2 * torch.rand(1 if dims == 2 else 3) - 1) * math.radians(self.max_rotation_deg)
        half = torch.diag(torch.tensor([s / 2 for s in reversed(shape)], dtype=torch.float32))
        linear = torch.linalg.inv(half) @ (_rotation(angles, dims) / scale) @ half  # output -> input: zoom in
        theta = torch.zeros(dims, dims + 1)
        theta[:, :dims] = linear
        return theta


def _rotation(angles: torch.Tensor, dims: int) -> torch.Tensor:
    """Rotation matrix: one angle in 2D, rotations about the three axes (composed) in 3D."""
    if dims == 2:
        c, s = math.cos(float(angles[0])), math.sin(float(angles[0]))
        return torch.tensor([[c, -s], [s, c]])
    out = torch.eye(3)
    for axis, angle in enumerate(angles.tolist()):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def _warp(array: torch.Tensor, theta: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample ``array`` ``(C, *S)`` through the affine ``theta`` (normalised coordinates, zero padding)."""
    x = array[None].float()
    grid = F.affine_grid(theta[None].to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
    return out.to(array.dtype) if not array.dtype.is_floating_point else out


@dataclass(frozen=True)
class IntensityAugment:
    """Random gamma and brightness of an item's image, both monotone: a lesion darker than its surroundings stays
    darker, by a similar margin (no noise or blur, which would hide a lesion of a few voxels).

    Attributes:
        gamma_range: ``log`` of the gamma drawn uniformly from ``[-r, r]``; applied to the image rescaled to
            ``[0, 1]`` and mapped back to its range (nnU-Net's gamma transform).
        brightness_range: multiplicative factor range.
        p_gamma: probability of the gamma transform; ``p_brightness`` of the brightness factor.
    """

    gamma_range: float = 0.3
    brightness_range: tuple[float, float] = (0.85, 1.15)
    p_gamma: float = 0.5
    p_brightness: float = 0.5

    def __call__(self, item: dict) -> dict:
        image = item["image"].float()
        if float(torch.rand(())) < self.p_gamma:
            low, high = image.min(), image.max()
            span = (high - low).clamp_min(1e-6)
            gamma = math.exp((2 * float(torch.rand(())) - 1) * self.gamma_range)
            image = ((image - low) / span) ** gamma * span + low
        if float(torch.rand(())) < self.p_brightness:
            low, high = self.brightness_range
            image = image * (low + (high - low) * float(torch.rand(())))
        return {**item, "image": image}


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order."""

    transforms: tuple

    def __call__(self, item: dict) -> dict:
        for transform in self.transforms:
            item = transform(item)
        return item


def create_augment(mode: str | AugmentMode | None) -> SpatialAugment | Compose | None:
    """The augmentation callable of ``mode`` (``None`` for ``none``)."""
    mode = AugmentMode.parse(mode)
    if mode is AugmentMode.SPATIAL:
        return SpatialAugment()
    if mode is AugmentMode.SPATIAL_INTENSITY:
        return Compose((SpatialAugment(), IntensityAugment()))
    return None
