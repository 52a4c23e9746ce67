"""Qualitative overlays: a slice of a few cases with the reference and the prediction drawn on it.

Sources, per run folder (first match below it):

- ``predictions/`` and ``reference/`` NIfTI label maps named by case (as ``medtransfer evaluate RUN``
  expects), with the intensity image from ``images/<case>.nii.gz`` or ``images/<case>_0000.nii.gz`` when
  present (else the reference is shown in grey).  The slice shown is the one with the most reference
  foreground along the last axis.
- ``overlays/*.png``: ready-made pictures (e.g. written by a custom cell function), embedded as they are.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .document import Figure
from .results import find_dir

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class OverlaySource:
    """Where a cell's overlays come from: its label (cell id) and run folder."""

    label: str
    run_dir: Path


def collect_overlays(sources: Iterable[OverlaySource], limit: int = 4) -> list[Figure]:
    """Up to ``limit`` overlay figures, at most one per run folder first, in the given order."""
    figures: list[Figure] = []
    for source in sources:
        if len(figures) >= limit:
            break
        figure = _png_overlay(source) or _nifti_overlay(source)
        if figure is not None:
            figures.append(figure)
    return figures


def _png_overlay(source: OverlaySource) -> Figure | None:
    folder = find_dir(source.run_dir, "overlays")
    for path in sorted(folder.glob("*.png")) if folder else []:
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            return Figure(_name(source, path.stem), data, f"{source.label}: {path.stem}")
        log.warning("%s is not a PNG file; skipped", path)
    return None


def _nifti_overlay(source: OverlaySource) -> Figure | None:
    from ..data.io import is_nifti, load_nifti, strip_nifti_suffix
    from .plots import overlay

    predictions, reference = find_dir(source.run_dir, "predictions"), find_dir(source.run_dir, "reference")
    if predictions is None or reference is None:
        return None
    for pred_path in sorted(p for p in predictions.iterdir() if is_nifti(p)):
        case = strip_nifti_suffix(pred_path.name)
        ref_path = _nifti_named(reference, case)
        if ref_path is None:
            continue
        pred, ref = load_nifti(pred_path).array, load_nifti(ref_path).array
        if pred.shape != ref.shape or ref.ndim not in (2, 3):
            log.warning("%s: prediction %s and reference %s differ; skipped", case, pred.shape, ref.shape)
            continue
        image = _image(pred_path.parent.parent, source.run_dir, case, ref)
        index = _best_slice(ref)
        picked = [a[..., index] if a.ndim == 3 else a for a in (image, ref > 0, pred > 0)]
        title = f"{source.label}\n{case}" + (f", slice {index}" if ref.ndim == 3 else "")
        return Figure(_name(source, case), overlay(*picked, title), f"{source.label}: case {case}")
    return None


def _image(parent: Path, run_dir: Path, case: str, ref: np.ndarray) -> np.ndarray:
    from ..data.io import load_nifti

    folder = find_dir(parent, "images") or find_dir(run_dir, "images")
    path = None
    if folder is not None:
        path = _nifti_named(folder, case) or _nifti_named(folder, f"{case}_0000")
    if path is not None:
        image = load_nifti(path).array
        if image.ndim == ref.ndim + 1:  # channels last: the first channel
            image = image[..., 0]
        if image.shape == ref.shape:
            return image.astype(float)
    return ref.astype(float)


def _nifti_named(folder: Path, stem: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _best_slice(ref: np.ndarray) -> int:
    if ref.ndim == 2:
        return 0
    counts = (ref > 0).reshape(-1, ref.shape[-1]).sum(axis=0)
    return int(np.argmax(counts)) if counts.any() else ref.shape[-1] // 2


def _name(source: OverlaySource, stem: str, limit: int = 80) -> str:
    """File stem of an overlay: label and case, ``_`` for other characters; a name cut to ``limit`` characters ends
    in a short hash of the whole label and case, so two long names that share their first characters differ."""
    full = f"{source.label}_{stem}"
    name = "".join(c if c.isalnum() else "_" for c in full)
    if len(name) > limit:
        name = name[: limit - 9] + "_" + hashlib.sha1(full.encode("utf-8")).hexdigest()[:8]
    return "overlay_" + name
