"""RNG capture/restore round-trips through a weights-only checkpoint."""

from __future__ import annotations

import random

import numpy as np
import torch

from medtransfer.train import get_rng_state, seed_everything, set_rng_state


def _draw():
    return random.random(), np.random.rand(), torch.rand(1).item()  # noqa: NPY002


def test_rng_state_roundtrip_weights_only(tmp_path):
    seed_everything(5)
    _draw()
    torch.save(get_rng_state(), tmp_path / "rng.pt")
    expected = [_draw() for _ in range(3)]
    seed_everything(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert [_draw() for _ in range(3)] == expected


def test_numpy_gaussian_cache_is_restored():
    np.random.seed(1)  # noqa: NPY002
    np.random.standard_normal()  # noqa: NPY002  (leaves a cached gaussian behind)
    state = get_rng_state()
    expected = np.random.standard_normal(3)  # noqa: NPY002
    set_rng_state(state)
    assert np.array_equal(np.random.standard_normal(3), expected)  # noqa: NPY002
