"""Input conventions shared by every ``compute_*`` function.

Metrics take batch-first inputs like MONAI's, as NumPy arrays or torch tensors:

* one-hot / binary masks ``(B, C, *spatial)`` (bool or 0/1), when ``labels`` is ``None``;
* integer label maps ``(B, *spatial)`` (or ``(B, 1, D, H, W)``) with ``labels=[1, 2, ...]``: channel ``c`` is
  ``label_map == labels[c]``.

``spatial`` is 2D or 3D.  Spacing (mm) is one value per spatial axis for the whole batch, or one such sequence per
case; ``None`` means 1 mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DataError


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view of a NumPy array or (CPU/GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_class_masks(pred: Any, ref: Any, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(B, C, *spatial)`` for a prediction and a reference.

    Args:
        pred: masks ``(B, C, *spatial)`` or, with ``labels``, label maps ``(B, *spatial)``.
        ref: same layout and shape as ``pred``.
        labels: label values that make the channels; ``None`` when inputs are already masks.

    Raises:
        DataError: shapes differ, the number of dimensions is wrong, or masks are not binary.
    """
    pred, ref = to_numpy(pred), to_numpy(ref)
    if pred.shape != ref.shape:
        raise DataError(f"prediction and reference must have the same shape, got {pred.shape} and {ref.shape}")
    if labels is not None:
        if pred.ndim == 5 and pred.shape[1] == 1:  # MONAI-style (B, 1, D, H, W) label maps
            pred, ref = pred[:, 0], ref[:, 0]
        if pred.ndim not in (3, 4):
            raise DataError(f"label maps must be (B, *spatial) with 2 or 3 spatial dims, got shape {pred.shape}")
        values = list(labels)
        return _one_hot(pred, values), _one_hot(ref, values)
    if pred.ndim not in (4, 5):
        raise DataError(
            f"masks must be (B, C, *spatial) with 2 or 3 spatial dims, got shape {pred.shape}; "
            "pass labels=[...] for integer label maps (B, *spatial)"
        )
    return _binary(pred, "prediction"), _binary(ref, "reference")


def _one_hot(label_map: np.ndarray, labels: list[int]) -> np.ndarray:
    return np.stack([label_map == value for value in labels], axis=1)


def _binary(mask: np.ndarray, what: str) -> np.ndarray:
    if mask.dtype == bool:
        return mask
    binary = mask != 0
    if np.any(binary & (mask != 1)):
        found = np.unique(mask)[:6].tolist()
        raise DataError(f"{what} masks must be binary (0/1 or bool), found values {found}; use labels=[...]")
    return binary


def per_case_spacing(spacing: Any, batch_size: int, spatial_dims: int) -> list[tuple[float, ...]]:
    """Normalise ``spacing`` to one tuple of ``spatial_dims`` positive floats per case.

    Raises:
        DataError: wrong length or non-positive values.
    """
    if spacing is None:
        return [(1.0,) * spatial_dims] * batch_size
    array = np.asarray(to_numpy(spacing), dtype=np.float64)
    if array.ndim == 0:
        array = np.full(spatial_dims, float(array))
    if array.ndim == 1:
        array = np.broadcast_to(array, (batch_size, array.size))
    if array.shape != (batch_size, spatial_dims):
        raise DataError(
            f"spacing must have {spatial_dims} values (or one sequence per case for {batch_size} cases), "
            f"got {np.asarray(spacing).tolist()}"
        )
    if not np.all(np.isfinite(array) & (array > 0)):
        raise DataError(f"spacing values must be positive and finite, got {array.tolist()}")
    return [tuple(float(s) for s in row) for row in array]
