"""Reorientation to canonical RAS+ voxel order and back, exactly (axis permutations and flips only).

Uses nibabel's orientation algebra (``io_orientation``, ``ornt_transform``, ``apply_orientation``,
``inv_ornt_aff``): no interpolation, so the inverse restores the original array bit for bit and the affine to float
precision.  Oblique affines are reoriented to the closest canonical axes, as ``nibabel.as_closest_canonical`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

# Smallest allowed ratio of the affine's smallest to largest singular value: below it a voxel axis has (almost) no
# extent in the world and no orientation can be read from the affine (nibabel: "Unable to find out axis ...").
MIN_AFFINE_CONDITION = 1e-6


@dataclass(frozen=True)
class Reorientation:
    """How an array was reoriented: nibabel orientation transform (``(3, 2)``: axis, flip) and shapes.

    Attributes:
        transform: ``ornt_transform(input_ornt, RAS)``, rows ``(target axis, +-1)`` per input axis.
        input_shape: spatial shape before reorientation.
    """

    transform: tuple[tuple[int, int], ...]
    input_shape: tuple[int, int, int]

    @property
    def is_identity(self) -> bool:
        return self.transform == ((0, 1), (1, 1), (2, 1))

    @property
    def output_shape(self) -> tuple[int, int, int]:
        shape = [0, 0, 0]
        for in_axis, (out_axis, _) in enumerate(self.transform):
            shape[out_axis] = self.input_shape[in_axis]
        return tuple(shape)

    def to_dict(self) -> dict:
        return {"transform": [list(row) for row in self.transform], "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, data: dict) -> Reorientation:
        return cls(tuple((int(a), int(f)) for a, f in data["transform"]), tuple(int(s) for s in data["input_shape"]))


def _ornt(transform: tuple[tuple[int, int], ...]) -> np.ndarray:
    return np.asarray(transform, dtype=float)


def check_affine(affine: np.ndarray, *, source: str | None = None) -> None:
    """Refuse an affine whose 3x3 part cannot map voxels to the world: not finite, zero or singular.

    Args:
        affine: 4x4 voxel-to-world matrix.
        source: the file it belongs to, named in the message.

    Raises:
        DataError: what is wrong with the affine (with its 3x3 part) and what is allowed.
    """
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    problem = None
    if not np.isfinite(linear).all():
        problem = "has non-finite (NaN or inf) entries"
    else:
        singular = np.linalg.svd(linear, compute_uv=False)
        if singular[0] == 0:
            problem = "is zero"
        elif singular[-1] <= MIN_AFFINE_CONDITION * singular[0]:
            problem = "is singular (a voxel axis has no extent or two axes point the same way)"
    if problem is not None:
        where = f"{source}: " if source else ""
        matrix = np.array2string(linear, precision=3, separator=",", max_line_width=10_000).replace("\n", "")
        raise DataError(
            f"{where}the voxel-to-world affine {problem}: {matrix}; a scan needs an invertible affine with non-zero "
            "voxel sizes (fix the header's sform/qform, e.g. copy it from the original scan)"
        )


def canonical_transform(affine: np.ndarray, shape: tuple[int, ...], *, source: str | None = None) -> Reorientation:
    """The :class:`Reorientation` that brings an array with ``affine`` to RAS+ voxel order.

    Raises:
        DataError: the affine is zero, singular or not finite (:func:`check_affine`; ``source`` names the file).
    """
    import nibabel.orientations as nio

    check_affine(affine, source=source)

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))
    rows = tuple((int(axis), int(flip)) for axis, flip in transform)
    return Reorientation(rows, tuple(int(s) for s in shape[:3]))


def reorient_array(array: np.ndarray, reorientation: Reorientation, *, inverse: bool = False) -> np.ndarray:
    """Apply (or undo) ``reorientation`` to the first three axes of ``array`` (extra trailing axes are kept)."""
    import nibabel.orientations as nio

    transform = _ornt(reorientation.transform)
    if inverse:
        transform = _inverse_ornt(transform)
    return np.ascontiguousarray(nio.apply_orientation(array, transform))


def reorient_affine(affine: np.ndarray, reorientation: Reorientation, *, inverse: bool = False) -> np.ndarray:
    """The affine matching :func:`reorient_array` of an array that had ``affine``."""
    import nibabel.orientations as nio

    transform = _ornt(reorientation.transform)
    shape = reorientation.input_shape
    if inverse:
        transform, shape = _inverse_ornt(transform), reorientation.output_shape
    return np.asarray(affine, dtype=np.float64) @ nio.inv_ornt_aff(transform, shape)


def _inverse_ornt(transform: np.ndarray) -> np.ndarray:
    inverse = np.zeros_like(transform)
    for in_axis, (out_axis, flip) in enumerate(transform):
        inverse[int(out_axis)] = (in_axis, flip)
    return inverse


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, Reorientation]:
    """Reorient ``array`` (spatial axes first) with ``affine`` to RAS+.

    Returns:
        ``(array_ras, affine_ras, reorientation)``; undo with :func:`from_canonical`.

    Example:
        >>> arr = np.arange(24).reshape(2, 3, 4)
        >>> ras, aff, how = to_canonical(arr, np.diag([-1.0, 1.0, 1.0, 1.0]))
        >>> bool((from_canonical(ras, aff, how)[0] == arr).all())
        True
    """
    reorientation = canonical_transform(affine, array.shape)
    return reorient_array(array, reorientation), reorient_affine(affine, reorientation), reorientation


def from_canonical(
    array: np.ndarray, affine: np.ndarray, reorientation: Reorientation
) -> tuple[np.ndarray, np.ndarray]:
    """Undo :func:`to_canonical`: the array and affine in the original voxel order."""
    return reorient_array(array, reorientation, inverse=True), reorient_affine(affine, reorientation, inverse=True)
