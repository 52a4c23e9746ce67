"""Subjects: the atlas under a random affine and a random smooth (low-frequency) deformation.

Labels (nearest) and real intensities (linear) are warped with the same sampling grid, so the ground truth
stays exact.  All sampling uses ``torch.nn.functional.grid_sample`` on a voxel grid with ``align_corners=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DeformationConfig:
    """Ranges of the random subject transform.

    Attributes:
        rotation_deg: maximum absolute rotation about each axis.
        scale: maximum relative scaling per axis (0.08 -> 0.92..1.08).
        translation_mm: maximum absolute translation per axis.
        displacement_mm: standard deviation of the smooth displacement at its control points.
        control_points: control points per axis of the smooth displacement (fewer = smoother).
    """

    rotation_deg: float = 10.0
    scale: float = 0.08
    translation_mm: float = 5.0
    displacement_mm: float = 3.5
    control_points: int = 5


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z."""
    cx, cy, cz = np.cos(angles_rad)
    sx, sy, sz = np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_affine(rng: np.random.Generator, config: DeformationConfig) -> tuple[np.ndarray, np.ndarray]:
    """A random 3x3 linear part (rotation x anisotropic scale) and translation (mm)."""
    angles = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg, 3))
    scales = 1 + rng.uniform(-config.scale, config.scale, 3)
    translation = rng.uniform(-config.translation_mm, config.translation_mm, 3)
    return rotation_matrix(angles) @ np.diag(scales), translation


def random_displacement(rng: np.random.Generator, shape: tuple[int, ...], config: DeformationConfig) -> torch.Tensor:
    """A smooth displacement field in mm, shape ``(3, X, Y, Z)``: random control points, trilinear upsampling."""
    n = config.control_points
    coarse = rng.normal(0.0, config.displacement_mm, (1, 3, n, n, n)).astype(np.float32)
    field = F.interpolate(torch.from_numpy(coarse), size=shape, mode="trilinear", align_corners=True)
    return field[0]


def sampling_grid(shape: tuple[int, ...], matrix: np.ndarray, translation: np.ndarray, displacement: torch.Tensor):
    """Source voxel coordinates for every output voxel, as a ``grid_sample`` grid ``(1, X, Y, Z, 3)``.

    Output voxel ``p`` (1 mm grid) samples the atlas at ``c + M (p - c) + t + u(p)`` with ``c`` the grid centre.
    In normalised coordinates ``n = (p - c) / c`` this is ``C^-1 M C n + C^-1 t``, built by ``affine_grid``.
    """
    half = (np.asarray(shape, dtype=np.float64) - 1) / 2
    theta = np.zeros((3, 4))
    theta[:, :3] = (matrix * half[None, :]) / half[:, None]
    theta[:, 3] = translation / half
    theta = theta[::-1][:, [2, 1, 0, 3]]  # grid_sample's coordinate order is (Z, Y, X)
    theta_t = torch.as_tensor(theta.copy(), dtype=torch.float32)[None]
    grid = F.affine_grid(theta_t, [1, 1, *shape], align_corners=True)
    scale = torch.as_tensor(1 / half[::-1].copy(), dtype=torch.float32)
    return grid + displacement.flip(0).permute(1, 2, 3, 0).unsqueeze(0) * scale


def warp(volume: np.ndarray, grid: torch.Tensor, *, mode: str) -> np.ndarray:
    """Sample ``volume`` ``(X, Y, Z)`` (or ``(C, X, Y, Z)``) at ``grid``; zeros outside."""
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    batched = tensor[None, None] if tensor.ndim == 3 else tensor[None]
    out = F.grid_sample(batched, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return (out[0] if tensor.ndim == 3 else out).numpy()


def random_subject(atlas, rng: np.random.Generator, config: DeformationConfig = DeformationConfig()):
    """Warp the atlas into a new subject; returns ``(image, tissue, region)`` on the atlas' 1 mm grid."""
    shape = atlas.image.shape
    matrix, translation = random_affine(rng, config)
    grid = sampling_grid(shape, matrix, translation, random_displacement(rng, shape, config))
    image = warp(atlas.image, grid, mode="bilinear")
    labels = warp(np.stack([atlas.tissue, atlas.region]).astype(np.float32), grid, mode="nearest")
    tissue, region = (np.rint(x).astype(np.uint8) for x in labels)
    return image.astype(np.float32), tissue, region


def rotation_degrees(matrix: np.ndarray) -> float:
    """Total rotation angle of the rotational part of ``matrix`` (for logging and tests)."""
    u, _, vt = np.linalg.svd(matrix)
    r = u @ vt
    return math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
