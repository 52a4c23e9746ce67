"""Random 2D slices and 3D patches from cached arrays, with foreground oversampling (torch wrappers: ``datasets``).

Samplers work on anything with ``case_id``, ``image`` ``(C, X, Y, Z)`` and ``label`` ``(X, Y, Z)`` (e.g.
:class:`~medtransfer.data.cache.CachedCase`, memory-mapped).  They are deterministic given a
``numpy.random.Generator``: the same seed gives the same stream of samples.

Foreground oversampling follows nnU-Net: with probability ``foreground_prob`` the sample is forced to contain a
random foreground voxel (the patch is centred on it as far as the borders allow); otherwise the location is uniform.
Patches larger than the array are padded (image with ``pad_value``, label with 0), smaller ones are cropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, DataError


class ArrayCase(Protocol):
    case_id: str
    image: np.ndarray
    label: np.ndarray | None


@dataclass(frozen=True)
class InMemoryCase:
    """A case given directly as arrays (tests, or data that never touched the cache)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None


def _window_start(n: int, p: int, rng: np.random.Generator | None, centre: int | None) -> int:
    """Start of a length-``p`` window on an axis of length ``n`` (negative = padding before)."""
    if n <= p:
        return -((p - n) // 2)
    if centre is not None:
        return int(np.clip(centre - p // 2, 0, n - p))
    return int(rng.integers(0, n - p + 1)) if rng is not None else (n - p) // 2


def extract_window(array: np.ndarray, starts: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """``array[..., s0:s0+p0, s1:s1+p1, ...]`` over the last ``len(size)`` axes, padding outside with ``pad_value``."""
    lead = array.shape[: array.ndim - len(size)]
    out = np.full((*lead, *size), pad_value, dtype=array.dtype)
    src, dst = [], []
    for start, p, n in zip(starts, size, array.shape[len(lead) :], strict=True):
        lo, hi = max(start, 0), min(start + p, n)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - start, lo - start + max(hi - lo, 0)))
    out[(..., *dst)] = array[(..., *src)]
    return out


def _check_cases(cases: Sequence[ArrayCase]) -> None:
    if not cases:
        raise DataError("no cases to sample from")
    for case in cases:
        if case.label is None:
            raise DataError(f"case {case.case_id!r} has no label; samplers need labelled cases")
        if case.image.ndim != 4 or case.image.shape[1:] != case.label.shape:
            raise DataError(f"case {case.case_id!r}: image {case.image.shape} must be (C, *label {case.label.shape})")


class SliceSampler:
    """Random 2D slices along ``axis`` (0, 1 or 2 of ``(X, Y, Z)``).

    Args:
        cases: labelled cases.
        patch_size: ``(H, W)`` of every sample, or ``None`` for the full slice (cases must then share a shape).
        axis: slice axis.
        foreground_prob: probability of forcing a foreground pixel into the sample.
        slices: optional case id -> allowed slice indices (label budgets); cases not listed use every slice.
        pad_value: image padding value.

    Example:
        >>> case = InMemoryCase("a", np.zeros((1, 4, 5, 6), np.float32), np.zeros((4, 5, 6), np.uint8))
        >>> s = SliceSampler([case], patch_size=(8, 8), axis=2).sample(np.random.default_rng(0))
        >>> s["image"].shape, s["label"].shape
        ((1, 8, 8), (8, 8))
    """

    def __init__(
        self,
        cases: Sequence[ArrayCase],
        *,
        patch_size: tuple[int, int] | None = None,
        axis: int = 2,
        foreground_prob: float = 0.33,
        slices: Mapping[str, Sequence[int]] | None = None,
        pad_value: float = 0.0,
    ) -> None:
        _check_cases(cases)
        if axis not in (0, 1, 2) or not 0 <= foreground_prob <= 1:
            raise ConfigError(f"axis must be 0, 1 or 2 and foreground_prob in [0, 1], got {axis}, {foreground_prob}")
        self.cases, self.axis, self.patch_size = list(cases), axis, patch_size
        self.foreground_prob, self.pad_value = foreground_prob, pad_value
        self.allowed = [self._allowed(c, slices) for c in self.cases]
        self.foreground = [self._foreground(c, allowed) for c, allowed in zip(self.cases, self.allowed, strict=True)]

    def _allowed(self, case: ArrayCase, slices: Mapping[str, Sequence[int]] | None) -> np.ndarray:
        n = case.label.shape[self.axis]
        chosen = np.arange(n) if slices is None or case.case_id not in slices else np.asarray(slices[case.case_id])
        if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= n:
            raise DataError(f"case {case.case_id!r}: slice indices must be within 0..{n - 1} along axis {self.axis}")
        return chosen

    def _foreground(self, case: ArrayCase, allowed: np.ndarray) -> np.ndarray:
        other = tuple(a for a in range(3) if a != self.axis)
        has_fg = np.asarray(case.label).any(axis=other)
        return allowed[has_fg[allowed]]

    def __len__(self) -> int:
        """Number of allowed slices over all cases."""
        return int(sum(a.size for a in self.allowed))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random slice: ``{"image": (C, H, W) float32, "label": (H, W) int64, "case", "index"}``."""
        k = int(rng.integers(len(self.cases)))
        force = rng.random() < self.foreground_prob and self.foreground[k].size > 0
        pool = self.foreground[k] if force else self.allowed[k]
        index = int(pool[rng.integers(pool.size)])
        return self.get(k, index, rng, force)

    def get(self, k: int, index: int, rng: np.random.Generator | None = None, force: bool = False) -> dict[str, Any]:
        """Slice ``index`` of case ``k``; crop position random (``rng``), foreground-centred or central."""
        case = self.cases[k]
        label = np.take(case.label, index, axis=self.axis)
        image = np.take(case.image, index, axis=self.axis + 1)
        size = self.patch_size or label.shape
        centre = _random_foreground(label, rng) if force else [None, None]
        starts = [_window_start(n, p, rng, c) for n, p, c in zip(label.shape, size, centre, strict=True)]
        return {
            "image": extract_window(np.asarray(image, dtype=np.float32), starts, size, self.pad_value),
            "label": extract_window(np.asarray(label, dtype=np.int64), starts, size, 0),
            "case": case.case_id,
            "index": index,
        }


class PatchSampler:
    """Random 3D patches ``(D, H, W)`` with foreground oversampling.

    Args:
        cases: labelled cases.
        patch_size: patch shape over ``(X, Y, Z)``.
        foreground_prob: probability of forcing a foreground voxel into the patch.
        pad_value: image padding value.
        max_foreground_points: foreground voxel coordinates kept per case (random subset) for the forced draws.
    """

    def __init__(
        self,
        cases: Sequence[ArrayCase],
        patch_size: tuple[int, int, int],
        *,
        foreground_prob: float = 0.33,
        pad_value: float = 0.0,
        max_foreground_points: int = 10_000,
    ) -> None:
        _check_cases(cases)
        if len(patch_size) != 3 or min(patch_size) < 1:
            raise ConfigError(f"patch_size must be three positive integers, got {patch_size}")
        self.cases, self.patch_size = list(cases), tuple(int(p) for p in patch_size)
        self.foreground_prob, self.pad_value = foreground_prob, pad_value
        subset_rng = np.random.default_rng(0)
        self.foreground = []
        for case in self.cases:
            points = np.argwhere(np.asarray(case.label) > 0)
            if len(points) > max_foreground_points:
                points = points[subset_rng.choice(len(points), max_foreground_points, replace=False)]
            self.foreground.append(points)

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random patch: ``{"image": (C, D, H, W) float32, "label": (D, H, W) int64, "case", "start"}``."""
        k = int(rng.integers(len(self.cases)))
        case, points = self.cases[k], self.foreground[k]
        force = rng.random() < self.foreground_prob and len(points) > 0
        centre = points[rng.integers(len(points))] if force else [None, None, None]
        shape = case.label.shape
        starts = [_window_start(n, p, rng, c) for n, p, c in zip(shape, self.patch_size, centre, strict=True)]
        return {
            "image": extract_window(case.image, starts, self.patch_size, self.pad_value).astype(np.float32),
            "label": extract_window(case.label, starts, self.patch_size, 0).astype(np.int64),
            "case": case.case_id,
            "start": tuple(starts),
        }


def _random_foreground(label: np.ndarray, rng: np.random.Generator) -> list[int | None]:
    points = np.argwhere(label > 0)
    return list(points[rng.integers(len(points))]) if len(points) else [None] * label.ndim
