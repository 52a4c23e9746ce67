"""``medtransfer demo``: build a small brainshift, run a transfer grid on it, and write the report.

Steps (each resumable: a rerun with the same ``out`` reuses the build, every finished cell and the trained
source model, and only redoes what is missing)::

    OUT/brainshift/          the benchmark (brain extraction on two scanners, stroke lesions on the target scanner)
    OUT/grid.yaml            the grid that was run (configs/demo.yaml with this run's paths and sizes)
    OUT/results/demo/...     one run folder per cell; the source model in results/demo/_sources/
    OUT/report/report.html   the report (report.md + figures/ alongside)

The grid: brain extraction trained on ``siemens_3t`` (the source model, trained once by the grid) adapted to
``philips_15t`` and, as a task shift, to stroke lesions on ``philips_15t``; strategies scratch / full / first_k:1 /
last_k:1 at two label budgets and two seeds, with ``baseline`` (source model as is) and ``oracle`` (target model
trained with every label) as the report's references.  ``quick`` shrinks everything (fewer subjects, 4 mm
voxels, shorter training) to finish in about three minutes on two cores.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE_DOMAIN, TARGET_DOMAIN = "siemens_3t", "philips_15t"
TARGETS = {"brain": "Dataset001_BrainExtraction", "stroke_lesion": "Dataset004_StrokeLesion"}


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: benchmark size, training length and grid axes."""

    subjects_per_domain: int
    spacing: float
    epochs: int
    steps_per_epoch: int
    source_epochs: int
    seeds: tuple[int, ...]
    max_test_cases: int


FULL = DemoSize(
    subjects_per_domain=8, spacing=3.0, epochs=4, steps_per_epoch=10, source_epochs=8, seeds=(0, 1), max_test_cases=3
)
QUICK = DemoSize(
    subjects_per_domain=3, spacing=4.0, epochs=2, steps_per_epoch=8, source_epochs=5, seeds=(0,), max_test_cases=1
)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs and how long it took."""

    out: Path
    benchmark: Path
    results: Path
    report: Path
    seconds: float
    cells: dict[str, int]


def demo_grid(benchmark: Path, size: DemoSize) -> dict[str, Any]:
    """The demo's grid (as a grid-file mapping) for a brainshift build at ``benchmark``."""
    split = {"test_fraction": 0.34, "val_fraction": 0.0} if size.subjects_per_domain < 5 else {"test_fraction": 0.4}
    train = {
        "epochs": size.epochs,
        "steps_per_epoch": size.steps_per_epoch,
        "batch_size": 8,
        "lr": 3.0e-3,
        "optimizer": "adam",
        "precision": "fp32",
        "progress": False,
    }
    return {
        "name": "demo",
        "description": "medtransfer demo: domain shift (brain extraction), task shift (stroke lesions), brainshift",
        "defaults": {
            "kind": "finetune",
            "data": {"root": str(benchmark), "datasets": dict(TARGETS)},
            "finetune": {
                "model": "unet",
                "model_config": {"spatial_dims": 2, "features": 8, "depth": 3},
                "split_seed": 0,
                "val_fraction": 0.15,
                "test_fraction": 0.25,
                "max_val_cases": 1,
                "train": train,
                **split,
            },
            "sources": {
                "source_domain": {
                    "domain": "{source_domain}",
                    "target": "brain",
                    "finetune": {"train": {**train, "epochs": size.source_epochs}},
                }
            },
            "eval": {"max_test_cases": size.max_test_cases, "tolerance_mm": 2.0, "surface_1mm": False, "save_cases": 1},
            "resources": {"num_cpus": 1},
        },
        "axes": {
            "target": list(TARGETS),
            "source": ["source_domain"],
            "strategy": ["baseline", "oracle", "scratch", "full", "first_k:1", "last_k:1"],
            "budget": [{"n_labelled": 1, "every_kth_slice": 4}, 1],
            "seed": list(size.seeds),
            "domain_pairs": [f"{SOURCE_DOMAIN}->{TARGET_DOMAIN}"],
        },
        "overrides": [  # lesions are small and rare: longer, with a Dice term; the oracle trains 3x longer
            {
                "when": {"target": "stroke_lesion"},
                "set": {"finetune": {"train": {"epochs": 2 * size.epochs, "loss": "dice_ce"}}},
            },
            {"when": {"strategy": "oracle"}, "set": {"finetune": {"train": {"epochs": 3 * size.epochs}}}},
        ],
        "exclude": [
            {"strategy": "baseline", "budget": "n1"},
            {"strategy": ["baseline", "oracle"], "seed": [str(s) for s in size.seeds[1:]] or "none"},
        ],
    }


def build_demo_benchmark(out: Path, size: DemoSize, workers: int) -> Path:
    """The demo's brainshift: brain extraction on both scanners, stroke lesions on the target scanner only.

    Reused when a previous build finished (the marker file ``.demo-built`` exists).
    """
    from ..bench.build import BenchmarkConfig, build_benchmark
    from ..utils import write_text_atomic

    marker = out / ".demo-built"
    if marker.is_file():
        log.info("reusing the benchmark in %s", out)
        return out
    common = {"subjects_per_domain": size.subjects_per_domain, "spacing": size.spacing, "workers": workers}
    build_benchmark(BenchmarkConfig(out, targets=("stroke_lesion",), domains=(TARGET_DOMAIN,), sources=False, **common))
    build_benchmark(
        BenchmarkConfig(
            out, targets=("brain_extraction",), domains=(SOURCE_DOMAIN, TARGET_DOMAIN), sources=False, **common
        )
    )
    write_text_atomic(marker, f"{size}\n")
    return out


def run_demo(out: str | Path = "demo-output", *, quick: bool = False, workers: int = 2) -> DemoResult:
    """Build, run and report the demo into ``out`` (see the module docstring); resumable."""
    import yaml

    from ..report import ReportOptions, build_report
    from ..utils import write_text_atomic
    from .executors import create_executor
    from .runner import run_grid
    from .spec import parse_grid

    start = time.perf_counter()
    out = Path(out).absolute()
    size = QUICK if quick else FULL
    log.info("[1/3] building brainshift (%s) in %s", "quick" if quick else "full", out / "brainshift")
    benchmark = build_demo_benchmark(out / "brainshift", size, workers)
    raw = demo_grid(benchmark, size)
    write_text_atomic(out / "grid.yaml", yaml.safe_dump(copy.deepcopy(raw), sort_keys=False))
    spec = parse_grid(raw, str(out / "grid.yaml"))
    log.info("[2/3] running the grid (%s) into %s", spec.name, out / "results")
    outcome = run_grid(spec, create_executor("local", workers=workers), results_root=out / "results")
    log.info("[3/3] writing the report into %s", out / "report")
    files = build_report(out / "results" / spec.name, out / "report", ReportOptions(title="medtransfer demo"))
    seconds = time.perf_counter() - start
    log.info("demo finished in %.0f s: %s", seconds, outcome.counts)
    return DemoResult(out, benchmark, out / "results", Path(files.html), seconds, outcome.counts)
