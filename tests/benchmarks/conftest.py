"""Shared fixtures for the benchmark scripts' tests: each script is loaded as a module from ``benchmarks/``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ds():
    """benchmarks/domain_shift.py as a module."""
    yield _load_script("domain_shift")
    del sys.modules["benchmarks_domain_shift"]


@pytest.fixture(scope="module")
def rh():
    """benchmarks/real_heads.py as a module."""
    yield _load_script("real_heads")
    del sys.modules["benchmarks_real_heads"]


@pytest.fixture(scope="module")
def lc():
    """benchmarks/lesions_compare.py as a module."""
    yield _load_script("lesions_compare")
    del sys.modules["benchmarks_lesions_compare"]


@pytest.fixture(scope="module")
def lb():
    """benchmarks/lesions.py as a module."""
    yield _load_script("lesions")
    del sys.modules["benchmarks_lesions"]
