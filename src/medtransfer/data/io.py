"""NIfTI read/write with nibabel.

Arrays come back as ``numpy`` arrays in the file's own voxel order together with the 4x4 affine (voxel ->
RAS+ world, mm).  Writing is atomic (temporary file, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import atomic_path
from .orientation import check_affine

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Volume:
    """A 3D (or 4D, channels last as stored) array with its affine.

    Attributes:
        array: voxel data, shape ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: 4x4 voxel-to-world matrix (mm).
        source: the file it was read from (set by :func:`load_nifti`), so that errors about it name the file.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str | None = field(default=None, compare=False)

    @property
    def where(self) -> str:
        """``"<file>: "`` to start an error message about this volume (empty when not read from a file)."""
        return f"{self.source}: " if self.source else ""

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (norms of the affine's columns)."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def is_nifti(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"case_0000.nii.gz"`` -> ``"case_0000"``."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_nifti(path: str | os.PathLike, *, dtype: np.dtype | type | None = None) -> Volume:
    """Read a NIfTI file.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        dtype: cast the data to this type (``np.float32`` for images); ``None`` keeps the stored type
            (scaled data, i.e. with ``scl_slope``, comes back as float).

    Raises:
        DataError: the file is missing, unreadable or corrupt, or its affine is not a valid voxel-to-world
            mapping (zero, singular or not finite; see :func:`~medtransfer.data.orientation.check_affine`).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if dtype is None:
            array = np.asanyarray(img.dataobj)
        else:
            array = np.asarray(img.get_fdata(dtype=np.float32) if np.dtype(dtype).kind == "f" else img.dataobj)
            array = array.astype(dtype, copy=False)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError, ...)
        raise DataError(f"{path}: unreadable or corrupt NIfTI file ({type(err).__name__}: {err})") from err
    check_affine(affine, source=str(path))
    return Volume(np.asarray(array), affine, source=str(path))


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, *, dtype=None) -> Path:
    """Write ``array`` with ``affine`` to ``path`` atomically (format by suffix, ``.nii.gz`` compresses).

    Labels should be written with an integer ``dtype`` (``np.uint8`` / ``np.int16``); images as float32.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti(path):
        raise DataError(f"{path}: output must end in .nii or .nii.gz")
    array = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
