"""``medtransfer report RESULTS --out DIR``: write the HTML/Markdown report of a results folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the HTML/Markdown report of a results folder",
        description="Write DIR/report.html (one self-contained page: figures embedded, no external resources) and "
        "DIR/report.md (figures in DIR/figures/) from the finished cells of a results folder. DIR must be new, empty "
        "or hold an earlier report, which is replaced as a whole once the new one is complete.",
    )
    parser.add_argument("results", help="results folder (a results root or one grid's folder)")
    parser.add_argument(
        "--out", required=True, help="output folder of the report (new, empty, or an earlier report to replace)"
    )
    parser.add_argument("--metric", default=None, help="per-case metric that decides the winner (default: dice)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (Holm-corrected; 0.05)")
    parser.add_argument(
        "--margin", type=float, default=0.01, help="equivalence margin in the metric's units (default 0.01 Dice)"
    )
    parser.add_argument(
        "--baseline", default="baseline", help="STRATEGY[@BUDGET] glob of the baseline cells (default: baseline)"
    )
    parser.add_argument(
        "--oracle",
        default="oracle",
        help="STRATEGY[@BUDGET] glob of the oracle cells (default: oracle; e.g. scratch@nall)",
    )
    parser.add_argument("--overlays", type=int, default=4, help="number of qualitative overlays (default 4)")
    parser.add_argument("--title", default=None, help="page title")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import DataError
    from ..report.build import ReportOptions, check_report_folder, create_report, write_report
    from ..report.results import load_results
    from ..utils import check_writable

    results_dir = Path(args.results)
    if results_dir.is_file():
        hint = (
            f"; for the grid file {results_dir.name}, give the folder grid run wrote (RESULTS/<grid name>, e.g. "
            "results/<name>)"
            if results_dir.suffix.lower() in (".yaml", ".yml")
            else ""
        )
        raise DataError(f"{results_dir}: is a file, not a results folder{hint}")
    check_writable(args.out, folder=True, what="--out")
    check_report_folder(args.out)  # before any work: a folder of the user's files is refused, not overwritten

    options = ReportOptions(
        metric=args.metric,
        alpha=args.alpha,
        margin=args.margin,
        baseline=args.baseline,
        oracle=args.oracle,
        max_overlays=args.overlays,
        title=args.title,
    )
    results = load_results(args.results)
    files = write_report(create_report(results, options), args.out)
    print(f"report: {files.html}")
    print(f"markdown: {files.markdown} ({len(files.figures)} figures in {files.markdown.parent / 'figures'})")
    print(f"cells: {len(results.cells)} read, {len(results.skipped)} skipped, {len(results.failed)} failed")
    for what, cells in (("skipped", results.skipped), ("failed", results.failed)):
        for cell, why in cells[:MAX_LISTED]:
            print(f"  {what} {cell}: {why}")
        if len(cells) > MAX_LISTED:
            print(f"  ... and {len(cells) - MAX_LISTED} more {what} (medtransfer grid status GRID.yaml lists them)")
    return 0


MAX_LISTED = 10
