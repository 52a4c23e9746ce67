"""``medtransfer demo``: build a small brainshift, run a transfer grid on it, and write the report.

Steps (each resumable: a rerun with the same ``out`` reuses the build, every finished cell and the trained
source model, and only redoes what is missing)::

    OUT/brainshift/          the benchmark (brain extraction on two scanners, anatomy on the source scanner)
    OUT/grid.yaml            the grid that was run (configs/demo.yaml with this run's paths and sizes)
    OUT/results/demo/...     one run folder per cell; the source model in results/demo/_sources/
    OUT/report/report.html   the report (report.md + figures/ alongside)

The grid: brain extraction trained on ``siemens_3t`` (the source model, trained once by the grid) adapted to
``philips_15t`` (a domain shift: every 4th slice of one scan, one scan) and, as a task shift, to brain anatomy
(CSF, grey and white matter, deep grey, cerebellum) on ``siemens_3t`` (one and three scans); strategies scratch /
full / first_k:1 / last_k:1 at those label budgets and four seeds, with ``baseline`` (source model as is) and
``oracle`` (target model trained with every label) as the report's references.  Every held-out scan is scored
(24 per target; evaluation is cheap next to training), so that the paired tests can decide: each setting ends
with a significant winner, an equivalence within ±0.01 Dice, or the number of scans that would decide.  Four
seeds, averaged per scan, because the paired tests count scans, not training runs: with two seeds the anatomy
3-scan verdict flipped between this machine's AVX-512 kernels and its AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2), i.e. it was a property of two training runs; with four, both give the same winner
in every setting.

Lesion targets are not in the main demo: the lesion recipe (configs/recipes/ms_lesion_recipe.yaml, ~10
CPU-minutes per run at its 1.5 mm working spacing) does not fit its 15 minutes, and the 3 mm, 500-step training
that would fit learns noise (Dice < 0.1).  ``medtransfer demo --lesions`` (:func:`run_lesion_demo`) is the lesion
setting on its own: MS lesions on ``siemens_3t`` (16 subjects at 1 mm, the recipe's split: 6 training + 2
validation scans, 8 test scans), a brain-extraction source trained on the same scanner with the recipe's network,
and scratch / full / first_k:1 / last_k:1 with the recipe (plus ``baseline``, the source as is: the brain mask
scored as lesions, the detection rate that precision and F1 expose); about 20 minutes on two cores.  ``quick``
shrinks everything (fewer subjects, 4 mm voxels, shorter training): a smoke run of under a minute on two cores.
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
TASK_DOMAIN = SOURCE_DOMAIN  # the task shift keeps the scanner: only the target changes
TARGETS = {"brain": "Dataset001_BrainExtraction", "anatomy": "Dataset002_Anatomy"}
TASK_TARGET = "anatomy"
LESIONS_NOTE = (
    "lesion targets are not in this demo: the lesion recipe (configs/recipes/ms_lesion_recipe.yaml) needs about 10 "
    "CPU-minutes per run and the training that fits the demo's time learns noise; medtransfer demo --lesions runs "
    "it on MS lesions (about 20 minutes)"
)


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: benchmark size, training length and grid axes."""

    subjects_per_domain: int
    spacing: float
    epochs: int
    steps_per_epoch: int
    source_epochs: int
    seeds: tuple[int, ...]
    max_test_cases: int | None
    test_fraction: float
    task_epochs: int
    task_steps_per_epoch: int
    task_budgets: tuple[int | str, int | str]


FULL = DemoSize(
    subjects_per_domain=32,
    spacing=3.0,
    epochs=4,
    steps_per_epoch=10,
    source_epochs=8,
    seeds=(0, 1, 2, 3),
    max_test_cases=None,  # every held-out scan: 24 per target
    test_fraction=0.75,
    task_epochs=8,
    task_steps_per_epoch=40,
    task_budgets=(1, 3),
)
QUICK = DemoSize(
    subjects_per_domain=3,
    spacing=4.0,
    epochs=2,
    steps_per_epoch=8,
    source_epochs=5,
    seeds=(0,),
    max_test_cases=1,
    test_fraction=0.34,
    task_epochs=2,
    task_steps_per_epoch=8,
    task_budgets=(1, 2),
)
BRAIN_BUDGETS = ({"n_labelled": 1, "every_kth_slice": 4}, 1)


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
    small = size.subjects_per_domain < 5
    split = {"test_fraction": size.test_fraction, "val_fraction": 0.0 if small else 0.04}
    train = {
        "epochs": size.epochs,
        "steps_per_epoch": size.steps_per_epoch,
        "batch_size": 8,
        "lr": 3.0e-3,
        "optimizer": "adam",
        "precision": "fp32",
        "progress": False,
    }
    from .spec import budget_label

    brain_pair, task_pair = f"{SOURCE_DOMAIN}->{TARGET_DOMAIN}", f"{SOURCE_DOMAIN}->{TASK_DOMAIN}"
    brain_labels = [budget_label(_budget(b)) for b in BRAIN_BUDGETS]
    task_labels = [budget_label(_budget(b)) for b in size.task_budgets]
    evaluation = {"tolerance_mm": 2.0, "surface_1mm": False, "save_cases": 1}
    if size.max_test_cases is not None:
        evaluation["max_test_cases"] = size.max_test_cases
    return {
        "name": "demo",
        "description": "medtransfer demo: domain shift (brain extraction), task shift (anatomy), brainshift; "
        + LESIONS_NOTE,
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
            "eval": evaluation,
            "resources": {"num_cpus": 1},
        },
        "axes": {
            "target": list(TARGETS),
            "source": ["source_domain"],
            "strategy": ["baseline", "oracle", "scratch", "full", "first_k:1", "last_k:1"],
            "budget": [*BRAIN_BUDGETS, *(b for b in size.task_budgets if b not in BRAIN_BUDGETS)],
            "seed": list(size.seeds),
            "domain_pairs": [brain_pair, task_pair],
        },
        "overrides": [  # the oracle trains 3x longer; anatomy (more classes) trains twice as long as brain
            {"when": {"strategy": "oracle"}, "set": {"finetune": {"train": {"epochs": 3 * size.epochs}}}},
            {
                "when": {"target": TASK_TARGET},
                "set": {
                    "finetune": {"train": {"epochs": size.task_epochs, "steps_per_epoch": size.task_steps_per_epoch}}
                },
            },
            {
                "when": {"target": TASK_TARGET, "strategy": "oracle"},
                "set": {"finetune": {"train": {"epochs": 3 * size.task_epochs}}},
            },
        ],
        "exclude": [
            {"target": "brain", "domain_pair": task_pair},
            {"target": TASK_TARGET, "domain_pair": brain_pair},
            {"target": "brain", "budget": [b for b in task_labels if b not in brain_labels]},
            {"target": TASK_TARGET, "budget": [b for b in brain_labels if b not in task_labels]},
            # the baseline does not train (and the brain source has no anatomy classes: no baseline there) and the
            # oracle uses every label: one budget each suffices
            {"strategy": "baseline", "target": TASK_TARGET},
            {"strategy": "baseline", "target": "brain", "budget": brain_labels[1]},
            {"strategy": "oracle", "target": "brain", "budget": brain_labels[0]},
            {"strategy": "oracle", "target": TASK_TARGET, "budget": task_labels[0]},
            # the references run on the first seed only (a one-seed demo has nothing more to exclude)
            *(
                [{"strategy": ["baseline", "oracle"], "seed": [str(s) for s in size.seeds[1:]]}]
                if size.seeds[1:]
                else []
            ),
        ],
    }


def _budget(value: int | str | dict) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {"n_labelled": value}


def build_demo_benchmark(out: Path, size: DemoSize, workers: int) -> Path:
    """The demo's brainshift: brain extraction on both scanners, anatomy on the source scanner only.

    Reused when a previous build finished (the marker file ``.demo-built`` exists).
    """
    from ..bench.build import BenchmarkConfig, build_benchmark
    from ..utils import write_text_atomic

    marker = out / ".demo-built"
    if _reuse(marker, size):
        return out
    common = {"subjects_per_domain": size.subjects_per_domain, "spacing": size.spacing, "workers": workers}
    build_benchmark(BenchmarkConfig(out, targets=("anatomy",), domains=(TASK_DOMAIN,), sources=False, **common))
    build_benchmark(
        BenchmarkConfig(
            out, targets=("brain_extraction",), domains=(SOURCE_DOMAIN, TARGET_DOMAIN), sources=False, **common
        )
    )
    write_text_atomic(marker, _built(size))
    return out


def _built(size: Any) -> str:
    """What a demo marker file records: the size and the simulator that generated the build."""
    from ..bench.simulate import SIMULATOR_VERSION

    return f"{size} brainshift simulator {SIMULATOR_VERSION}\n"


def _reuse(marker: Path, size: Any) -> bool:
    """Whether a finished build (its marker file) can be reused: only one of the same size made by the same
    simulator, else a clear error (a quick build reused by the full demo would be reported as the full demo; an
    older simulator's build would be reported as this one's)."""
    if not marker.is_file():
        return False
    built, needed = marker.read_text().strip(), _built(size).strip()
    if built != needed:
        from ..errors import ConfigError

        raise ConfigError(
            f"{marker.parent}: holds a demo build of another size or brainshift simulator ({marker.name}: {built}; "
            f"this run needs {needed}); choose another --out (or remove that folder)"
        )
    log.info("reusing the benchmark in %s", marker.parent)
    return True


def run_demo(out: str | Path = "demo-output", *, quick: bool = False, workers: int = 2) -> DemoResult:
    """Build, run and report the demo into ``out`` (see the module docstring); resumable."""
    start = time.perf_counter()
    out = Path(out).absolute()
    size = QUICK if quick else FULL
    _check_out(out, "demo")
    log.info("[1/3] building brainshift (%s) in %s", "quick" if quick else "full", out / "brainshift")
    benchmark = build_demo_benchmark(out / "brainshift", size, workers)
    return _run_and_report(
        out, benchmark, demo_grid(benchmark, size), title="medtransfer demo", workers=workers, start=start
    )


# --- the lesion setting: `medtransfer demo --lesions` -------------------------------------------------------------

LESION_TARGET, LESION_DATASET = "ms_lesion", "Dataset003_MSLesion"
LESION_SOURCE_TARGET, LESION_SOURCE_DATASET = "brain", "Dataset001_BrainExtraction"
LESION_DOMAIN = "siemens_3t"
LESION_STRATEGIES = ("baseline", "scratch", "full", "first_k:1", "last_k:1")
# configs/recipes/ms_lesion_recipe.yaml as a grid's `finetune` (tests/experiments/test_lesion_recipes.py checks
# that they agree; the configs folder is not part of the installed package)
LESION_RECIPE: dict[str, Any] = {
    "model": "unet",
    "model_config": {"spatial_dims": 2, "features": 16, "depth": 4},
    "context_slices": 1,
    "foreground_fraction": 0.5,
    "foreground_sampling": "batch",
    "augment": "spatial_intensity",
    "tta_mirror": True,
    "min_component_mm3": "auto",
    "split_seed": 0,
    "test_fraction": 0.5,
    "val_fraction": 0.125,
    "max_val_cases": 2,
    "train": {
        "epochs": 24,
        "steps_per_epoch": 50,
        "batch_size": 12,
        "lr": 3.0e-3,
        "optimizer": "adam",
        "schedule": "poly",
        "warmup_steps": 50,
        "loss": "blob_dice_ce",
        "precision": "fp32",
        "val_every": 4,
        "progress": False,
    },
    "preprocess": {"target_spacing": [1.5, 1.5, 1.5]},
}


@dataclass(frozen=True)
class LesionDemoSize:
    """How big the lesion demo is: the build, the recipe's training length and the source's."""

    subjects: int
    spacing: float  # of the build; the recipe works at its own spacing
    working_spacing: float
    epochs: int
    steps_per_epoch: int
    source_epochs: int
    source_steps_per_epoch: int


LESION_FULL = LesionDemoSize(
    subjects=16,
    spacing=1.0,
    working_spacing=1.5,
    epochs=24,
    steps_per_epoch=50,
    source_epochs=8,
    source_steps_per_epoch=25,
)
LESION_QUICK = LesionDemoSize(
    subjects=6, spacing=4.0, working_spacing=4.0, epochs=2, steps_per_epoch=4, source_epochs=2, source_steps_per_epoch=4
)


def lesion_demo_grid(benchmark: Path, size: LesionDemoSize) -> dict[str, Any]:
    """The lesion demo's grid (a grid-file mapping) for a build at ``benchmark`` holding MS lesions and brain
    extraction on ``siemens_3t``: the MS lesion recipe for every trained arm, the source trained with the recipe's
    network (2.5D input) on brain extraction, one label budget (every training scan of the recipe's split)."""
    recipe = copy.deepcopy(LESION_RECIPE)
    recipe["train"].update(epochs=size.epochs, steps_per_epoch=size.steps_per_epoch)
    recipe["preprocess"] = {"target_spacing": [size.working_spacing] * 3}
    source_train = {
        "epochs": size.source_epochs,
        "steps_per_epoch": size.source_steps_per_epoch,
        "loss": "dice_ce",
        "warmup_steps": 0,
    }
    pair = f"{LESION_DOMAIN}->{LESION_DOMAIN}"
    return {
        "name": "demo_lesions",
        "description": "medtransfer demo --lesions: MS lesions on one scanner, the MS lesion recipe, a "
        "brain-extraction source from the same scanner; brainshift",
        "defaults": {
            "kind": "finetune",
            "data": {
                "root": str(benchmark),
                "datasets": {LESION_TARGET: LESION_DATASET, LESION_SOURCE_TARGET: LESION_SOURCE_DATASET},
            },
            "finetune": recipe,
            "sources": {
                "source_domain": {
                    "domain": "{source_domain}",
                    "target": LESION_SOURCE_TARGET,
                    # brain extraction: no lesion post-processing, no mirroring, no brain-slice oversampling
                    "finetune": {
                        "train": source_train,
                        "min_component_mm3": None,
                        "tta_mirror": False,
                        "foreground_fraction": 0.0,
                    },
                }
            },
            "eval": {"tolerance_mm": 2.0, "surface_1mm": False, "save_cases": 1},
            "resources": {"num_cpus": 1},
        },
        "axes": {
            "target": [LESION_TARGET],
            "source": ["source_domain"],
            "strategy": list(LESION_STRATEGIES),
            "budget": ["all"],
            "seed": [0],
            "domain_pairs": [pair],
        },
    }


def build_lesion_benchmark(out: Path, size: LesionDemoSize, workers: int) -> Path:
    """The lesion demo's brainshift: MS lesions and brain extraction on ``siemens_3t`` (reused once built)."""
    from ..bench.build import BenchmarkConfig, build_benchmark
    from ..utils import write_text_atomic

    marker = out / ".demo-lesions-built"
    if _reuse(marker, size):
        return out
    build_benchmark(
        BenchmarkConfig(
            out,
            targets=("ms_lesion", "brain_extraction"),
            domains=(LESION_DOMAIN,),
            subjects_per_domain=size.subjects,
            spacing=size.spacing,
            sources=False,
            workers=workers,
        )
    )
    write_text_atomic(marker, _built(size))
    return out


def run_lesion_demo(out: str | Path = "demo-lesions-output", *, quick: bool = False, workers: int = 2) -> DemoResult:
    """Build, run and report the lesion demo into ``out`` (see the module docstring); resumable."""
    start = time.perf_counter()
    size = LESION_QUICK if quick else LESION_FULL
    out = Path(out).absolute()
    _check_out(out, "demo_lesions")
    log.info("[1/3] building brainshift lesions (%s) in %s", "quick" if quick else "full", out / "brainshift-lesions")
    benchmark = build_lesion_benchmark(out / "brainshift-lesions", size, workers)
    return _run_and_report(
        out,
        benchmark,
        lesion_demo_grid(benchmark, size),
        title="medtransfer demo: MS lesions",
        workers=workers,
        start=start,
    )


DEMO_ENTRIES = ("brainshift", "brainshift-lesions", "results", "report", "grid.yaml")


def _check_out(out: Path, name: str) -> None:
    """Refuse, before any work, an output that is a file, a folder holding files a demo does not write, or one
    holding the other demo (its grid.yaml and report would be overwritten); its report folder is checked as
    ``medtransfer report`` checks one."""
    import yaml

    from ..errors import ConfigError
    from ..report.build import check_report_folder

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; --out is the demo's folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
        if foreign:
            raise ConfigError(
                f"{out}: holds files a demo does not write ({', '.join(foreign[:3])}); give --out a new or empty "
                "folder (an earlier run of the same demo there is continued)"
            )
        check_report_folder(out / "report")
    grid = out / "grid.yaml"
    if not grid.is_file():
        return
    try:
        other = (yaml.safe_load(grid.read_text()) or {}).get("name")
    except (yaml.YAMLError, AttributeError):
        other = None
    if other != name:
        raise ConfigError(
            f"{grid}: this folder holds another run (grid {other!r}), not the {name!r} demo; choose another --out"
        )


def _run_and_report(
    out: Path, benchmark: Path, raw: dict[str, Any], *, title: str, workers: int, start: float
) -> DemoResult:
    import yaml

    from ..report import ReportOptions, build_report
    from ..utils import write_text_atomic
    from .executors import create_executor
    from .runner import run_grid
    from .spec import parse_grid

    write_text_atomic(out / "grid.yaml", yaml.safe_dump(copy.deepcopy(raw), sort_keys=False))
    spec = parse_grid(raw, str(out / "grid.yaml"))
    log.info("[2/3] running the grid (%s) into %s", spec.name, out / "results")
    outcome = run_grid(spec, create_executor("local", workers=workers), results_root=out / "results")
    log.info("[3/3] writing the report into %s", out / "report")
    files = build_report(out / "results" / spec.name, out / "report", ReportOptions(title=title))
    seconds = time.perf_counter() - start
    log.info("demo finished in %.0f s: %s", seconds, outcome.counts)
    return DemoResult(out, benchmark, out / "results", Path(files.html), seconds, outcome.counts)
