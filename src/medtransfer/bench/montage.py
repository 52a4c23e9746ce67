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
TILE = 128
COLOURS = (
    np.array(
        [[0, 0, 0], [255, 127, 14], [44, 160, 44], [31, 119, 180], [214, 39, 40], [148, 103, 189], [227, 119, 194]],
        dtype=np.float32,
    )
    / 255.0
)


def _tile(image: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    """One ``TILE x TILE`` RGB tile: the slice (superior/anterior up), windowed, with an optional overlay."""
    grey = image.T[::-1]
    grey = np.clip(grey / (np.percentile(grey, 99.5) or 1.0), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label is not None:
        lab = label.T[::-1]
        colour = COLOURS[np.minimum(lab, len(COLOURS) - 1)]
        alpha = np.where(lab > 0, 0.45, 0.0)[..., None]
        rgb = rgb * (1 - alpha) + colour * alpha
    out = np.zeros((TILE, TILE, 3), dtype=np.float32)
    h, w = min(TILE, rgb.shape[0]), min(TILE, rgb.shape[1])
    y0, x0 = (TILE - h) // 2, (TILE - w) // 2
    sy, sx = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = rgb[sy : sy + h, sx : sx + w]
    return out


def _upsample(image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour upsampling so that coarse builds (e.g. 4 mm) still give readable tiles."""
    factor = max(1, TILE // max(image.shape))
    return image.repeat(factor, 0).repeat(factor, 1)


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
        [_tile(_upsample(t.axial), None) for t in thumbs],
        [_tile(_upsample(t.axial), _upsample(t.labels_axial[target])) for t in thumbs],
        [_tile(_upsample(t.coronal), None) for t in thumbs],
        [_tile(_upsample(t.coronal), _upsample(t.labels_coronal[target])) for t in thumbs],
    ]
    _figure(path, rows, names[:MAX_COLUMNS], f"{domain}: {target}")


def montage_task(path: Path, target: str, items: list[tuple[dict, Thumbnail]]) -> None:
    """One column per domain (first case of each): axial image and overlay."""
    firsts: dict[str, Thumbnail] = {}
    for row, thumb in items:
        firsts.setdefault(row["domain"], thumb)
    rows = [
        [_tile(_upsample(t.axial), None) for t in firsts.values()],
        [_tile(_upsample(t.axial), _upsample(t.labels_axial[target])) for t in firsts.values()],
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
