"""``medtransfer data check DIR``: validate a dataset folder; every problem named with its file.

Exit status: 0 when the dataset is clean, 1 when problems were found (each printed as ``file: message``), 2 when
the path is not a dataset in any known layout.
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
    from ..data.check import check_dataset
    from ..data.layouts import load_dataset

    problems = check_dataset(args.dir, affine_tolerance=args.affine_tolerance, progress=True)
    for problem in problems:
        print(f"{problem.file}: {problem.message}")
    if problems:
        print(f"{len(problems)} problem(s) found in {args.dir}")
        return 1
    dataset = load_dataset(args.dir)
    print(
        f"OK: {args.dir} ({dataset.layout} layout): {len(dataset.cases)} case(s), "
        f"{len(dataset.test_cases)} test case(s), channels {', '.join(dataset.channel_names)}"
    )
    return 0
