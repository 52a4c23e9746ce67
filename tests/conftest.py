"""Shared fixtures: tiny synthetic volumes built in memory (STYLE.md: no committed image files)."""

from __future__ import annotations

import os

# pytest-xdist runs one worker per core: one intra-op thread each avoids oversubscription (10x slower on 2 cores).
# Set before torch is imported so that subprocesses started by tests inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Tests that check learning must give the same numbers on every x86 CPU: `precision: auto` would train in bf16 on
# CPUs with avx512_bf16/AMX and in fp32 on AVX2-only ones, so the suite pins `auto` to fp32 (subprocesses and grid
# workers inherit it).  Explicit precisions still win (the bf16 tests ask for bf16); `MEDTRANSFER_PRECISION=bf16
# make test` runs the learning tests in bf16 to check that their margins hold there too.
os.environ.setdefault("MEDTRANSFER_PRECISION", "fp32")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)  # noqa: NPY002  (legacy global seed for code that still uses it)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test starts with one intra-op thread, whatever an earlier test (e.g. a grid cell) set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def unpinned_precision(monkeypatch):
    """``auto`` as users get it: the suite's fp32 pin lifted and the CPU probe re-read (and re-read after)."""
    from medtransfer.train.config import PRECISION_ENV
    from medtransfer.train.precision import cpu_has_fast_bf16

    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cpu_has_fast_bf16.cache_clear()
    yield
    cpu_has_fast_bf16.cache_clear()


def _test_device() -> str:
    """Where the ``gpu``-marked tests run: ``cuda``, or the CPU when ``MEDTRANSFER_TEST_DEVICE=cpu`` (a dry run)."""
    return os.environ.get("MEDTRANSFER_TEST_DEVICE", "cuda")


@pytest.fixture
def test_device() -> torch.device:
    """The device of the ``gpu``-marked tests (see :func:`_test_device`)."""
    return torch.device(_test_device())


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or _test_device() == "cpu":
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def sphere_volume() -> np.ndarray:
    """A (16, 16, 16) float image with a bright sphere of radius 5 in the centre."""
    grid = np.indices((16, 16, 16)).astype(np.float32)
    dist = np.sqrt(((grid - 7.5) ** 2).sum(axis=0))
    return (dist <= 5).astype(np.float32)


@pytest.fixture
def write_raw_affine():
    """``write(path, array, affine)``: a NIfTI whose sform is ``affine`` as given, even a zero or singular one
    (``save_nifti`` and nibabel's constructor refuse those, but such files exist in the wild)."""
    import nibabel as nib

    def write(path, array, affine):
        header = nib.Nifti1Header()
        header.set_data_shape(array.shape)
        header.set_data_dtype(array.dtype)
        header["sform_code"], header["qform_code"] = 1, 0
        header["srow_x"], header["srow_y"], header["srow_z"] = np.asarray(affine, dtype=np.float64)[:3]
        nib.save(nib.Nifti1Image(array, None, header), str(path))
        return path

    return write


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """An existing folder in which no file can be created (mode 0o555).

    Root ignores the mode; then the refusal is emulated where medtransfer creates every file it writes
    (``medtransfer.utils._create_temporary``, used by the atomic writer and the writability check), with the
    ``PermissionError`` the system would raise.
    """
    import errno

    from medtransfer import utils

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        pass
    else:  # privileged: the mode is not enforced
        (folder / "probe").unlink()
        create = utils._create_temporary

        def refuse(path, suffix):
            if folder in (path.parent, *path.parent.parents):
                raise PermissionError(errno.EACCES, "Permission denied", str(path.parent / f".{path.name}.x{suffix}"))
            return create(path, suffix)

        monkeypatch.setattr(utils, "_create_temporary", refuse)
    yield folder
    folder.chmod(0o755)
