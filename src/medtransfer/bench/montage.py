"""Montage PNGs written next to each dataset: one per domain and one per task (image + label overlay).

Tiles are composed as one RGB array (fast) and drawn in a single matplotlib axes with titles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic_path
from .layout import DatasetSpec
from .thumbnails import Thumbnail

MAX_COLUMNS = 6
TILE = 160  # pixels
MM_PER_PIXEL = 1.5  # every tile shows 240 mm at one scale, whatever the build's spacing and field of view
COLOURS = (
    np.array(
        [[0, 0, 0], [255, 127, 14], [44, 160, 44], [31, 119, 180], [214, 39, 40], [148, 103, 189], [227, 119, 194]],
        dtype=np.float32,
    )
    / 255.0
)


def _to_display_grid(
    image: np.ndarray, label: np.ndarray | None, spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray | None]:
    """A 2D slice (and its label) resampled to ``MM_PER_PIXEL`` (linear for the image, nearest for the label)."""
    from scipy import ndimage

    factors = [s / MM_PER_PIXEL for s in spacing]
    image = ndimage.zoom(image.astype(np.float32), factors, order=1)
    if label is not None:
        label = ndimage.zoom(label, factors, order=0)
    return image, label


def _tile(image: np.ndarray, label: np.ndarray | None, spacing: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """One ``TILE x TILE`` RGB tile of a RAS slice (superior/anterior up) with voxels of ``spacing`` mm: resampled
    to the common display scale, windowed, centred on the head, with an optional label overlay."""
    image, label = _to_display_grid(image, label, spacing)
    grey = image.T[::-1]
    grey = np.clip(grey / (np.percentile(grey, 99.5) or 1.0), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label is not None:
        lab = label.T[::-1]
        colour = COLOURS[np.minimum(lab, len(COLOURS) - 1)]
        alpha = np.where(lab > 0, 0.45, 0.0)[..., None]
        rgb = rgb * (1 - alpha) + colour * alpha
    # centre the head, not the stored field of view: the bounding box of the rows and columns that cross at
    # least 3 clearly bright pixels (a stray noise pixel must not stretch it)
    bright = grey > 0.2
    centre = []
    for axis in (1, 0):
        hits = np.flatnonzero(bright.sum(axis=axis) >= 3)
        n = grey.shape[1 - axis]
        centre.append((hits[0] + hits[-1] + 1) // 2 if hits.size else n // 2)
    out = np.zeros((TILE, TILE, 3), dtype=np.float32)
    src, dst = [], []
    for c, n in zip(centre, grey.shape, strict=True):
        start = c - TILE // 2  # the tile's first row/column in slice coordinates
        lo, hi = max(start, 0), min(start + TILE, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[dst[0], dst[1]] = rgb[src[0], src[1]]
    return out


def _figure(path: Path, rows: list[list[np.ndarray]], titles: list[str], suptitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    canvas = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    fig = plt.figure(figsize=(canvas.shape[1] / 72, canvas.shape[0] / 72 + 0.5), dpi=72)
    ax = fig.add_axes((0, 0, 1, canvas.shape[0] / (canvas.shape[0] + 36)))
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for col, title in enumerate(titles):
        ax.text((col + 0.5) * TILE, -4, title, ha="center", va="bottom", fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=72)
    plt.close(fig)


def montage_domain(path: Path, domain: str, target: str, thumbs: list[Thumbnail], names: list[str]) -> None:
    """Rows: axial image, axial overlay, coronal image, coronal overlay; one column per case of the domain."""
    thumbs = thumbs[:MAX_COLUMNS]
    rows = [
        [_tile(t.axial, None, t.axial_spacing) for t in thumbs],
        [_tile(t.axial, t.labels_axial[target], t.axial_spacing) for t in thumbs],
        [_tile(t.coronal, None, t.coronal_spacing) for t in thumbs],
        [_tile(t.coronal, t.labels_coronal[target], t.coronal_spacing) for t in thumbs],
    ]
    _figure(path, rows, names[:MAX_COLUMNS], f"{domain}: {target}")


def montage_task(path: Path, target: str, items: list[tuple[dict, Thumbnail]]) -> None:
    """One column per domain (first case of each): axial image and overlay."""
    firsts: dict[str, Thumbnail] = {}
    for row, thumb in items:
        firsts.setdefault(row["domain"], thumb)
    rows = [
        [_tile(t.axial, None, t.axial_spacing) for t in firsts.values()],
        [_tile(t.axial, t.labels_axial[target], t.axial_spacing) for t in firsts.values()],
    ]
    _figure(path, rows, list(firsts), str(target))


def write_montages(root: Path, spec: DatasetSpec, items: list[tuple[dict, Thumbnail]]) -> None:
    """``montage_<domain>.png`` per domain and ``montage_task.png`` in the dataset folder."""
    domains: dict[str, list[tuple[dict, Thumbnail]]] = {}
    for row, thumb in items:
        domains.setdefault(row["domain"], []).append((row, thumb))
    for domain, entries in domains.items():
        names = [row["case"] for row, _ in entries]
        montage_domain(root / f"montage_{domain}.png", domain, spec.target, [t for _, t in entries], names)
    montage_task(root / "montage_task.png", spec.target, items)
