"""``medtransfer data check DIR``: validate a dataset folder; every problem named with its file.

Exit status: 0 when the dataset is clean (warnings, printed as ``warning: file: message``, allowed), 1 when problems
were found (each printed as ``file: message``, one line each), 2 when the path is not a dataset in any known layout.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    check = subparsers.add_parser("check", help="validate a dataset folder; every problem named with its file")
    check.add_argument(
        "dir", help="dataset folder (nnU-Net raw, CC359, images/ + labels/) or an MSD-style datalist JSON file"
    )
    check.add_argument(
        "--affine-tolerance", type=float, default=1e-3, help="largest image/label affine difference (default 1e-3)"
    )
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.check import inspect_dataset

    result = inspect_dataset(args.dir, affine_tolerance=args.affine_tolerance, progress=True)
    for warning in result.warnings:
        print(f"warning: {_line(warning.file, warning.message)}")
    for problem in result.problems:
        print(_line(problem.file, problem.message))
    if result.problems or result.dataset is None:
        print(f"{len(result.problems)} problem(s) found in {args.dir}")
        return 1
    dataset = result.dataset
    print(
        f"OK: {args.dir} ({dataset.layout} layout): {len(dataset.cases)} case(s), "
        f"{len(dataset.test_cases)} test case(s), channels {', '.join(dataset.channel_names)}"
    )
    return 0


def _line(file: str, message: str) -> str:
    """``file: message`` on one line (a message spanning lines is joined)."""
    return f"{file}: {' '.join(part.strip() for part in message.splitlines())}"
