"""Accuracy of bf16 against fp32 training on brainshift: is ``precision: auto`` = bf16 on CPUs safe?

Runs the demo's brain-extraction transfer (source model trained on siemens_3t, adapted to philips_15t with one
labelled scan; same model, split, training length and evaluation as ``configs/demo.yaml``) in bf16 and in fp32,
over several seeds: one grid per (precision, seed), identical but for ``train.precision``, each training its own
source model with that seed.  Every arm (``baseline`` = the source model as is, ``full``, ``first_k:1``,
``scratch``, ``oracle`` by default) is paired by (strategy, seed) across precisions; the JSON gives the per-seed
mean test Dice of each (8 held-out philips_15t scans), the mean bf16 - fp32 difference, a paired t-test and a
Wilcoxon test over the pairs, and the seed-to-seed spread of each precision (the noise the difference is judged
against).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/precision_accuracy.py --out DIR [--data BRAINSHIFT] [--seeds 0 1 ...]
        [--strategies baseline full ...] [--scale 1]

Without ``--data`` (or when it holds no Dataset001) the demo's brain-extraction build (16 subjects per scanner,
3 mm) is written to ``DIR/brainshift`` first.  ``--scale K`` trains every model K times longer.  Reruns reuse the
build and every finished cell.  Prints one JSON object (also written to ``DIR/precision_accuracy.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from medtransfer.bench import BenchmarkConfig, build_benchmark
from medtransfer.bench.build import check_simulator
from medtransfer.cli import nonnegative_int, positive_int
from medtransfer.experiments.collect import collect_cells
from medtransfer.experiments.demo import FULL, SOURCE_DOMAIN, TARGET_DOMAIN, TARGETS
from medtransfer.experiments.runner import run_grid
from medtransfer.experiments.spec import parse_grid
from medtransfer.report.stats import paired_wilcoxon
from medtransfer.train.precision import cpu_has_fast_bf16

log = logging.getLogger("precision_accuracy")
DATASET = TARGETS["brain"]


def brainshift(data: Path | None, out: Path) -> Path:
    """A brainshift build with brain extraction on the demo's two scanners (built into ``out`` when missing)."""
    if data is not None and (data / DATASET).is_dir():
        return data
    root = out / "brainshift"
    if (root / DATASET / "dataset.json").is_file():
        check_simulator(root / DATASET)  # a reused build of another simulator would be reported as this one's
    else:
        log.info("building brainshift into %s", root)
        build_benchmark(
            BenchmarkConfig(
                root,
                targets=("brain_extraction",),
                domains=(SOURCE_DOMAIN, TARGET_DOMAIN),
                sources=False,
                subjects_per_domain=FULL.subjects_per_domain,
                spacing=FULL.spacing,
                workers=1,
            )
        )
    return root


def grid(data: Path, precision: str, seed: int, strategies: list[str], scale: int) -> dict[str, Any]:
    """The demo's brain-extraction cells (one labelled scan) at one precision and seed, source model included."""
    train = {
        "epochs": FULL.epochs * scale,
        "steps_per_epoch": FULL.steps_per_epoch,
        "batch_size": 8,
        "lr": 3.0e-3,
        "optimizer": "adam",
        "precision": precision,
        "progress": False,
    }
    source = {"domain": "{source_domain}", "target": "brain", "seed": seed}
    return {
        "name": f"{precision}_seed{seed}",
        "defaults": {
            "kind": "finetune",
            "data": {"root": str(data), "datasets": {"brain": DATASET}},
            "finetune": {
                "model": "unet",
                "model_config": {"spatial_dims": 2, "features": 8, "depth": 3},
                "split_seed": 0,
                "val_fraction": 0.07,
                "test_fraction": 0.5,
                "max_val_cases": 1,
                "train": train,
            },
            "sources": {"source_domain": {**source, "finetune": {"train": {"epochs": FULL.source_epochs * scale}}}},
            "eval": {"max_test_cases": FULL.max_test_cases, "tolerance_mm": 2.0, "surface_1mm": False},
            "resources": {"num_cpus": 1},
        },
        "axes": {
            "target": ["brain"],
            "source": ["source_domain"],
            "strategy": strategies,
            "budget": [1],
            "seed": [seed],
            "domain_pairs": [f"{SOURCE_DOMAIN}->{TARGET_DOMAIN}"],
        },
        "overrides": [  # as in the demo, the oracle (every target scan, from scratch) trains 3x longer
            {"when": {"strategy": "oracle"}, "set": {"finetune": {"train": {"epochs": 3 * FULL.epochs * scale}}}}
        ],
    }


def run_precision(data: Path, out: Path, precision: str, args: argparse.Namespace) -> dict:
    """Run (or resume) one grid per seed at ``precision``; (strategy, seed) -> mean test Dice, and the wall time."""
    start = time.perf_counter()
    dice = {}
    for seed in args.seeds:
        spec = parse_grid(grid(data, precision, seed, args.strategies, args.scale), f"{precision}, seed {seed}")
        outcome = run_grid(spec, results_root=out, progress=False)
        if outcome.counts.get("failed"):
            raise SystemExit(f"error: {out / spec.name}: {outcome.counts['failed']} cell(s) failed; see error.json")
        dice.update({(row["strategy"], seed): float(row["dice"]) for row in collect_cells(out / spec.name)})
        log.info("%s seed %d: %s", precision, seed, {k[0]: round(v, 4) for k, v in dice.items() if k[1] == seed})
    return {"dice": dice, "seconds": round(time.perf_counter() - start, 1)}


def compare(runs: dict[str, dict], strategies: list[str], seeds: list[int]) -> dict[str, Any]:
    """Pairs (strategy, seed) of bf16 and fp32 test Dice, their difference and whether it is within seed noise."""
    bf16, fp32 = runs["bf16"]["dice"], runs["fp32"]["dice"]
    keys = [(s, k) for s in strategies for k in seeds]
    a, b = np.array([bf16[k] for k in keys]), np.array([fp32[k] for k in keys])
    diff = a - b
    seed_sd = {  # the spread over seeds of one arm at one precision, pooled over arms
        p: float(np.sqrt(np.mean([np.var([d[(s, k)] for k in seeds], ddof=1) for s in strategies])))
        for p, d in (("bf16", bf16), ("fp32", fp32))
    }
    ttest = stats.ttest_rel(a, b)
    wilcoxon = paired_wilcoxon(a, b)
    within = bool(abs(diff.mean()) <= max(seed_sd.values()) and ttest.pvalue >= 0.05)
    per_arm = {
        s: {
            **{p: [round(runs[p]["dice"][(s, k)], 4) for k in seeds] for p in ("bf16", "fp32")},
            "mean_difference": round(float(np.mean([bf16[(s, k)] - fp32[(s, k)] for k in seeds])), 4),
        }
        for s in strategies
    }
    return {
        "per_seed_dice": per_arm,
        "mean_dice": {p: round(float(v.mean()), 4) for p, v in (("bf16", a), ("fp32", b))},
        "mean_difference_bf16_minus_fp32": round(float(diff.mean()), 4),
        "median_difference_bf16_minus_fp32": round(float(np.median(diff)), 4),
        "sd_of_differences": round(float(diff.std(ddof=1)), 4),
        "pairs": len(keys),
        "bf16_better_in": int((diff > 0).sum()),
        "paired_t_test": {"statistic": round(float(ttest.statistic), 3), "p": round(float(ttest.pvalue), 4)},
        "wilcoxon": {"statistic": wilcoxon.statistic, "p": round(wilcoxon.pvalue, 4)},
        "seed_sd_pooled": {p: round(v, 4) for p, v in seed_sd.items()},
        "within_seed_noise": within,
        "rule": "within seed noise when |mean difference| <= the larger pooled seed SD and the paired t-test p >= 0.05",
    }


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's answer elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (build, results, JSON)")
    parser.add_argument("--data", type=Path, default=None, help="an existing brainshift build")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", default=list(range(10)))
    parser.add_argument("--strategies", nargs="+", default=["baseline", "full", "first_k:1", "scratch", "oracle"])
    parser.add_argument("--scale", type=positive_int, default=1, help="train every model this many times longer")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    data = brainshift(args.data, args.out)
    runs = {p: run_precision(data, args.out / "results", p, args) for p in ("bf16", "fp32")}
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cpu_has_native_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "data": str(data),
        "recipe": "configs/demo.yaml's brain extraction siemens_3t -> philips_15t, one labelled scan, "
        f"{FULL.epochs * args.scale}x{FULL.steps_per_epoch} steps of batch 8 "
        f"(source and oracle {FULL.source_epochs * args.scale}x / {3 * FULL.epochs * args.scale}x), "
        f"{FULL.max_test_cases} test scans; one source model per seed and precision",
        "seeds": args.seeds,
        "seconds": {p: runs[p]["seconds"] for p in runs},
        **compare(runs, args.strategies, args.seeds),
    }
    text = json.dumps(report, indent=2)
    (args.out / "precision_accuracy.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
