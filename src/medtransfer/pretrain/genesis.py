"""Models Genesis corruptions (Zhou et al., MICCAI 2019 / MedIA 2021), 2D, on images scaled to [0, 1].

The network sees ``corrupt(x)`` and learns to restore ``x``.  As in the reference implementation
(``MrGiovanni/ModelsGenesis``, ``utils.py: generate_pair``), one call applies in order:

1. local pixel shuffling (probability ``shuffle_prob``): pixels are permuted inside many small blocks, so the
   texture is destroyed but the global shape survives;
2. a non-linear intensity map (probability ``nonlinear_prob``): a monotonic cubic Bezier curve through (0, 0)
   and (1, 1) with two random control points, increasing or (half the time) decreasing;
3. painting (probability ``paint_prob``): in-painting (with probability ``inpaint_ratio``: a few random boxes
   are filled with uniform noise) or out-painting (everything outside a few random boxes becomes noise).

Every function takes a ``numpy.random.Generator`` so a corruption is reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BEZIER_POINTS = 1000


def bezier_curve(points: np.ndarray, n: int = BEZIER_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Sample the Bezier curve of control ``points`` ``(k, 2)`` at ``n`` parameters; returns ``(x, y)``.

    Example:
        >>> x, y = bezier_curve(np.array([[0, 0], [1 / 3, 0], [2 / 3, 1], [1, 1]]), n=3)
        >>> np.round(x, 3).tolist(), np.round(y, 3).tolist()
        ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    """
    from scipy.special import comb

    k = len(points) - 1
    t = np.linspace(0.0, 1.0, n)
    basis = np.stack([comb(k, i) * t**i * (1 - t) ** (k - i) for i in range(k + 1)])  # (k+1, n)
    return basis.T @ points[:, 0], basis.T @ points[:, 1]


def nonlinear_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map intensities through a random monotonic Bezier curve (decreasing half the time)."""
    control = np.array([[0.0, 0.0], rng.random(2), rng.random(2), [1.0, 1.0]])
    xs, ys = bezier_curve(control)
    if rng.random() < 0.5:
        ys = ys[::-1]  # a decreasing map: inverts the contrast
    order = np.argsort(xs)
    return np.interp(image, xs[order], ys[order]).astype(image.dtype)


def local_pixel_shuffle(image: np.ndarray, rng: np.random.Generator, blocks: int | None = None) -> np.ndarray:
    """Permute the pixels inside ``blocks`` random small windows (each side up to a tenth of the image).

    Windows are shuffled one after the other in place, so overlapping windows still give a permutation of the
    image's pixels (the reference copies from the original and may duplicate pixels where windows overlap).
    """
    out = image.copy()
    h, w = image.shape[-2:]
    blocks = max(h * w // 64, 1) if blocks is None else blocks
    max_h, max_w = max(h // 10, 2), max(w // 10, 2)
    for _ in range(blocks):
        bh, bw = int(rng.integers(1, max_h + 1)), int(rng.integers(1, max_w + 1))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        window = out[..., y : y + bh, x : x + bw].reshape(*image.shape[:-2], -1)
        out[..., y : y + bh, x : x + bw] = window[..., rng.permutation(bh * bw)].reshape(*image.shape[:-2], bh, bw)
    return out


def _random_box(h: int, w: int, rng: np.random.Generator, low: float, high: float) -> tuple[slice, slice]:
    bh, bw = (int(rng.integers(int(s * low), max(int(s * high), int(s * low) + 1) + 1)) for s in (h, w))
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    return slice(y, y + bh), slice(x, x + bw)


def inpaint(image: np.ndarray, rng: np.random.Generator, holes: int = 5) -> np.ndarray:
    """Fill up to ``holes`` random boxes (1/6 to 1/3 of each side) with uniform noise."""
    out = image.copy()
    h, w = image.shape[-2:]
    for _ in range(int(rng.integers(1, holes + 1))):
        ys, xs = _random_box(h, w, rng, 1 / 6, 1 / 3)
        out[..., ys, xs] = rng.random(out[..., ys, xs].shape)
    return out


def outpaint(image: np.ndarray, rng: np.random.Generator, windows: int = 5) -> np.ndarray:
    """Keep the image inside up to ``windows`` random boxes (3/7 to 4/7 of each side); noise elsewhere."""
    out = rng.random(image.shape).astype(image.dtype)
    h, w = image.shape[-2:]
    for _ in range(int(rng.integers(1, windows + 1))):
        ys, xs = _random_box(h, w, rng, 3 / 7, 4 / 7)
        out[..., ys, xs] = image[..., ys, xs]
    return out


@dataclass(frozen=True)
class GenesisCorruption:
    """The Models Genesis corruption pipeline with the reference probabilities.

    Example:
        >>> image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
        >>> corrupted = GenesisCorruption()(image, np.random.default_rng(0))
        >>> corrupted.shape, corrupted.dtype
        ((64, 64), dtype('float32'))
    """

    shuffle_prob: float = 0.5
    nonlinear_prob: float = 0.9
    paint_prob: float = 0.9
    inpaint_ratio: float = 0.2

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.clip(image, 0.0, 1.0).astype(np.float32)
        if rng.random() < self.shuffle_prob:
            out = local_pixel_shuffle(out, rng)
        if rng.random() < self.nonlinear_prob:
            out = nonlinear_intensity(out, rng)
        if rng.random() < self.paint_prob:
            out = inpaint(out, rng) if rng.random() < self.inpaint_ratio else outpaint(out, rng)
        return out.astype(np.float32)
