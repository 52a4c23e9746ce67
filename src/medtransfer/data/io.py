"""NIfTI read/write with nibabel.

Arrays come back as ``numpy`` arrays in the file's own voxel order together with the 4x4 affine (voxel ->
RAS+ world, mm).  Writing is atomic (temporary file, then rename).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils import atomic_path
from .orientation import check_affine

logger = logging.getLogger(__name__)

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
    """True when the file name ends in ``.nii`` or ``.nii.gz``, in any case (``SCAN.NII.GZ`` too)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"case_0000.nii.gz"`` -> ``"case_0000"`` (``"B.NII.GZ"`` -> ``"B"``)."""
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
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
    img = None
    try:
        img = nib.load(str(path))
        stored = np.dtype(img.get_data_dtype())
        if stored.kind == "c":
            raise DataError(
                f"{path}: complex-valued voxels ({stored}); give a real-valued scan (e.g. the magnitude image)"
            )
        if stored.fields:
            raise DataError(
                f"{path}: colour (RGB / RGBA) voxels ({', '.join(stored.names)}); give a greyscale scan (one "
                "intensity per voxel)"
            )
        if any(n == 0 for n in img.shape):
            raise DataError(f"{path}: an axis of length 0 (shape {tuple(img.shape)}); the file holds no voxels")
        if dtype is None:
            array = np.asanyarray(img.dataobj)
        elif np.dtype(dtype).kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                array = np.asarray(img.get_fdata(dtype=np.float32)).astype(dtype, copy=False)
            _refuse_overflow(img, array, path)
        else:
            array = np.asarray(img.dataobj).astype(dtype, copy=False)
        affine = np.asarray(img.affine, dtype=np.float64)
    except DataError:
        raise
    except MemoryError as err:
        raise DataError(_memory_message(path, img, dtype)) from err
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError, ...)
        reason = " ".join(str(err).split())  # one line: nibabel's messages can span several
        raise DataError(f"{path}: unreadable or corrupt NIfTI file ({type(err).__name__}: {reason})") from err
    check_affine(affine, source=str(path))
    _warn_units(img, path)
    return Volume(_drop_singleton_dims(np.asarray(array)), affine, source=str(path))


def _memory_message(path: Path, img, dtype: np.dtype | type | None) -> str:
    """``<file>: not enough memory ...`` naming the shape and size the header asks for (a damaged header's dims)."""
    if img is None:
        return f"{path}: not enough memory to read the file"
    shape = tuple(int(n) for n in img.shape)
    # unscaled voxels keep their stored type; scaled ones (scl_slope) come back as float64
    scaled = getattr(img.dataobj, "slope", 1.0) != 1.0 or getattr(img.dataobj, "inter", 0.0) != 0.0
    kind = np.dtype(dtype) if dtype is not None else np.dtype(np.float64 if scaled else img.get_data_dtype())
    size = float(np.prod(shape, dtype=np.float64)) * kind.itemsize / 2**30
    return (
        f"{path}: not enough memory to read its voxels: the header gives shape {shape} of {kind} ({size:.1f} GiB); "
        "check the header's dimensions (a damaged header?) or read it on a machine with more memory"
    )


def _drop_singleton_dims(array: np.ndarray) -> np.ndarray:
    """A 5D+ array with length-1 axes after the third (NIfTI's time axis of 1 before vector components, e.g.
    ``(X, Y, Z, 1, C)`` or ``(X, Y, Z, 1, 1)``) as the 3D or channels-last 4D array it holds; others as they are."""
    if array.ndim <= 4:
        return array
    kept = array.shape[:3] + tuple(n for n in array.shape[3:] if n != 1)
    return array.reshape(kept) if len(kept) <= 4 else array


def _refuse_overflow(img, array: np.ndarray, path: Path) -> None:
    """Refuse finite stored values that do not fit in float32 (they would read as infinite voxels)."""
    if array.dtype.itemsize > 4 or np.all(np.isfinite(array)):
        return
    stored = np.asanyarray(img.dataobj)
    overflow = int(np.count_nonzero(np.isinf(array) & np.isfinite(stored)))
    if overflow:
        raise DataError(
            f"{path}: {overflow} voxel(s) hold finite values beyond float32's range (|value| up to "
            f"{float(np.abs(stored[np.isfinite(stored)]).max()):.3g}, float32 stops at 3.4e38); rescale the scan"
        )


_UNIT_SCALE = {"meter": 1000.0, "micron": 0.001}


def warn_unoriented(path: str | os.PathLike) -> None:
    """Warn when neither the qform nor the sform of the NIfTI file ``path`` has a code: its orientation is unknown
    and its axes are read as nibabel's default (x towards the left, y anterior, z superior), so a scan stored
    otherwise is seen mirrored or rotated (the label map written for it keeps the uncoded header); and when both
    are coded but place the scan more than a voxel apart (tools differ in which one they use)."""
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        codes = int(header["qform_code"]), int(header["sform_code"])
        qform, sform = header.get_qform(), header.get_sform()
        shape = (tuple(header.get_data_shape()[:3]) + (1, 1, 1))[:3]  # a 2D file is refused later, not here
    except Exception:  # noqa: BLE001 - not a NIfTI-1/2 header: nothing to say
        return
    if all(codes):
        corners = np.array(
            [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
        )
        apart = float(np.linalg.norm((corners @ qform.T - corners @ sform.T)[:, :3], axis=1).max())
        voxel = float(np.sqrt((sform[:3, :3] ** 2).sum(axis=0)).min())
        if apart > voxel:
            logger.warning(
                "%s: its qform and sform place the scan up to %.1f mm apart (voxels of %.2g mm); medtransfer, as "
                "nibabel, uses the sform, ITK-based tools (SimpleITK, Slicer, nnU-Net's reader) may use the qform: "
                "the label map keeps both, but check which one is right for this scan",
                path,
                apart,
                voxel,
            )
    if codes == (0, 0):
        logger.warning(
            "%s: the header gives no orientation (qform_code and sform_code are 0); its voxel axes are read as "
            "nibabel's default (x towards the left, y anterior, z superior): if the scan is stored otherwise, the "
            "model sees it mirrored or rotated and the label map is wrong. Set the qform / sform from the scanner's "
            "DICOM (dcm2niix does) before predicting",
            path,
        )


def _warn_units(img, path: Path) -> None:
    """Warn when the header gives voxel sizes in meters or microns: medtransfer (like nibabel, nnU-Net's readers
    differ) reads the affine as millimetres, so a scan stored in meters would look 1000 times too small."""
    try:
        unit = img.header.get_xyzt_units()[0]
    except Exception:  # noqa: BLE001 - not a NIfTI header (units are a NIfTI field)
        return
    if unit in _UNIT_SCALE:
        spacing = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
        logger.warning(
            "%s: the header says voxel sizes are in %ss (%s); medtransfer reads the affine as millimetres, as "
            "nibabel does: if the scan is really %s mm per voxel, rewrite its affine in mm",
            path,
            unit,
            " x ".join(f"{s:g}" for s in spacing),
            " x ".join(f"{s * _UNIT_SCALE[unit]:g}" for s in spacing),
        )


def save_nifti(
    path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, *, dtype=None, like: str | os.PathLike | None = None
) -> Path:
    """Write ``array`` with ``affine`` to ``path`` atomically (format by suffix, ``.nii.gz`` compresses).

    Labels should be written with an integer ``dtype`` (``np.uint8`` / ``np.int16``); images as float32.  ``like``:
    a NIfTI file on the same grid whose qform, sform, their codes (scanner, aligned, MNI, ...) and spatial unit the
    output keeps, so that a mask of an MNI-space scan stays marked MNI (and a sheared sform keeps its own qform);
    without it both forms are ``affine`` with code 1 (scanner).
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
    if like is not None:
        _copy_geometry(img, like)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def _copy_geometry(img, like: str | os.PathLike) -> None:
    """Give ``img`` the qform, sform, codes and spatial unit of the file ``like``, when they describe the affine
    ``img`` already has (they do for a prediction of that file); otherwise ``img`` keeps its plain header."""
    import nibabel as nib

    try:
        header = nib.load(str(like)).header
        (qform, qcode), (sform, scode) = header.get_qform(coded=True), header.get_sform(coded=True)
        unit = header.get_xyzt_units()[0]
    except Exception:  # noqa: BLE001 - not a NIfTI header: keep the plain one
        return
    affine = img.affine.copy()
    # no code on either form (an unknown orientation): the output says so too, or viewers that read such a file
    # as unoriented (ITK, Slicer, ITK-SNAP) would place a label map with coded forms mirrored beside its scan
    img.set_qform(qform if qcode else None, code=int(qcode))
    img.set_sform(sform if scode else None, code=int(scode))
    if not np.allclose(img.header.get_best_affine(), affine, atol=1e-4):  # another grid: back to the plain header
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        return
    if unit in ("meter", "mm", "micron"):
        img.header.set_xyzt_units(xyz=unit)
