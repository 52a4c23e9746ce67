"""``load_nifti`` on a header asking for more memory than there is: one line naming the file, shape and size."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medtransfer.data.io import load_nifti
from medtransfer.errors import DataError


@pytest.mark.parametrize("dtype", [None, np.float32])
def test_a_header_too_large_for_memory_names_its_shape_and_size(tmp_path, dtype):
    """dims 32767^3 x 8 of float32 (a damaged header): 32767^3 * 8 * 4 bytes = 1048480.003 GiB, more than any
    address space, so reading always fails with MemoryError, which used to print as 'MemoryError: ' alone."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape((32767, 32767, 32767, 8))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 1004))
    with pytest.raises(DataError) as err:
        load_nifti(path, dtype=dtype)
    assert str(err.value) == (
        f"{path}: not enough memory to read its voxels: the header gives shape (32767, 32767, 32767, 8) of float32 "
        "(1048480.0 GiB); check the header's dimensions (a damaged header?) or read it on a machine with more memory"
    )
    assert isinstance(err.value.__cause__, MemoryError)
