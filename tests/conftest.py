"""Shared fixtures: tiny synthetic volumes built in memory (STYLE.md: no committed image files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)  # noqa: NPY002  (legacy global seed for code that still uses it)
    torch.manual_seed(0)


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
