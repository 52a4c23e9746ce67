"""``medtransfer demo``: the main job: build brainshift, run a small transfer grid, write the report."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job: build brainshift, run a small grid, write a report",
        description="Build a small brainshift, train a source-domain model, run scratch / full / first_k / last_k "
        "at two label budgets and four seeds on a domain-shift pair (brain extraction) and a task shift (brain "
        "anatomy), and "
        "write OUT/report/report.html. Resumable: a rerun reuses the build and every finished cell. With --lesions: "
        "the lesion setting instead (MS lesions with the MS lesion recipe, about 20 minutes on 2 cores).",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: demo-output; with --lesions demo-lesions-output)"
    )
    parser.add_argument(
        "--lesions",
        action="store_true",
        help="the lesion setting: MS lesions, the MS lesion recipe, scratch / full / first_k:1 / last_k:1 from a "
        "brain-extraction source (about 20 minutes on 2 cores)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller everything: a smoke run of under a minute on 2 cores (plain 25 s, --lesions 21 s, 2026-12-05)",
    )
    parser.add_argument("--workers", type=int, default=2, help="cells run in parallel (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..experiments.demo import run_demo, run_lesion_demo
    from ..utils import check_writable

    out = args.out or ("demo-lesions-output" if args.lesions else "demo-output")
    check_writable(out)

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.workers < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    result = (run_lesion_demo if args.lesions else run_demo)(out, quick=args.quick, workers=args.workers)
    print(f"demo finished in {result.seconds:.0f} s: {result.cells}")
    print(f"report: {result.report}")
    return 0
