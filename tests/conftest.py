"""Shared fixtures: tiny synthetic volumes built in memory (STYLE.md: no committed image files)."""

from __future__ import annotations

import os

# pytest-xdist runs one worker per core: one intra-op thread each avoids oversubscription (10x slower on 2 cores).
# Set before torch is imported so that subprocesses started by tests inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

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


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
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
