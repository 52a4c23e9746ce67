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


def _script_fixture(name: str, script: str):
    """A module-scoped fixture ``name``: ``benchmarks/<script>.py`` as a module, unloaded after the module's tests."""

    def fixture():
        yield _load_script(script)
        del sys.modules[f"benchmarks_{script}"]

    fixture.__doc__ = f"benchmarks/{script}.py as a module."
    return pytest.fixture(scope="module", name=name)(fixture)


ds = _script_fixture("ds", "domain_shift")
rh = _script_fixture("rh", "real_heads")
lc = _script_fixture("lc", "lesions_compare")
lb = _script_fixture("lb", "lesions")
vs = _script_fixture("vs", "vs_nnunet")
le = _script_fixture("le", "lesions_ensemble")
launcher = _script_fixture("launcher", "_nnunet_launcher")
mcr = _script_fixture("mcr", "min_component_rules")
lmr = _script_fixture("lmr", "lesion_match_rules")
sv = _script_fixture("sv", "stroke_visibility")
