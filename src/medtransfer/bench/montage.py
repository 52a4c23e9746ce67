"""Montage PNGs written next to each dataset: one per domain and one per task (image + label overlay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import atomic_path
from .layout import DatasetSpec
from .thumbnails import Thumbnail

MAX_COLUMNS = 6


def _display(image: np.ndarray) -> np.ndarray:
    """Transpose to (rows = superior..inferior or anterior..posterior) for imshow with origin lower."""
    return image.T


def _window(image: np.ndarray) -> tuple[float, float]:
    return 0.0, float(np.percentile(image, 99.5)) or 1.0


def _overlay(ax, label: np.ndarray) -> None:
    import numpy.ma as ma

    masked = ma.masked_where(label == 0, label)
    ax.imshow(_display(masked), origin="lower", cmap="tab10", alpha=0.45, vmin=0, vmax=9, interpolation="nearest")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=72, bbox_inches="tight")
    plt.close(fig)


def montage_domain(path: Path, domain: str, target: str, thumbs: list[Thumbnail]) -> None:
    """Rows: axial image, axial overlay, coronal image, coronal overlay; one column per case of the domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thumbs = thumbs[:MAX_COLUMNS]
    fig, axes = plt.subplots(4, len(thumbs), figsize=(2.2 * len(thumbs), 9), squeeze=False)
    for col, thumb in enumerate(thumbs):
        for row, (image, label) in enumerate(
            [
                (thumb.axial, None),
                (thumb.axial, thumb.labels_axial[target]),
                (thumb.coronal, None),
                (thumb.coronal, thumb.labels_coronal[target]),
            ]
        ):
            ax = axes[row, col]
            lo, hi = _window(image)
            ax.imshow(_display(image), origin="lower", cmap="gray", vmin=lo, vmax=hi)
            if label is not None:
                _overlay(ax, label)
            ax.axis("off")
    fig.suptitle(f"{domain}: {target}")
    _save(fig, path)


def montage_task(path: Path, target: str, items: list[tuple[dict, Thumbnail]]) -> None:
    """One column per domain (first case of each): axial image and overlay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts: dict[str, Thumbnail] = {}
    for row, thumb in items:
        firsts.setdefault(row["domain"], thumb)
    fig, axes = plt.subplots(2, len(firsts), figsize=(2.4 * len(firsts), 5), squeeze=False)
    for col, (domain, thumb) in enumerate(firsts.items()):
        lo, hi = _window(thumb.axial)
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(_display(thumb.axial), origin="lower", cmap="gray", vmin=lo, vmax=hi)
            if row == 1:
                _overlay(ax, thumb.labels_axial[target])
            ax.axis("off")
        axes[0, col].set_title(domain, fontsize=9)
    fig.suptitle(target)
    _save(fig, path)


def write_montages(root: Path, spec: DatasetSpec, items: list[tuple[dict, Thumbnail]]) -> None:
    """``montage_<domain>.png`` per domain and ``montage_task.png`` in the dataset folder."""
    domains: dict[str, list[Thumbnail]] = {}
    for row, thumb in items:
        domains.setdefault(row["domain"], []).append(thumb)
    for domain, thumbs in domains.items():
        montage_domain(root / f"montage_{domain}.png", domain, spec.target, thumbs)
    montage_task(root / "montage_task.png", spec.target, items)
