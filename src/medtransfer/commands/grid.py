"""``medtransfer grid``: run an experiment grid (resumably) or show the status of its cells."""

from __future__ import annotations

import argparse

from ..cli import positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "grid",
        help="run or inspect an experiment grid",
        description="run an experiment grid (a rerun skips finished cells and resumes interrupted ones) or "
        "show which cells are done / running / failed / interrupted / pending.",
    )
    sub = parser.add_subparsers(dest="grid_command", metavar="<grid command>", required=True)
    run = sub.add_parser("run", help="run every cell that is not done yet", description="run a grid's cells.")
    _common(run)
    run.add_argument("--executor", default="local", choices=("local", "ray"), help="where cells run (default local)")
    run.add_argument(
        "--workers", type=positive_int, default=1, help="local worker processes (default 1: one at a time)"
    )
    run.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    run.add_argument("--mlflow", metavar="URI", default=None, help="also log each finished cell to this MLflow URI")
    run.add_argument(
        "--race",
        action="store_true",
        help="race each setting's arms seed by seed and skip the later cells of arms that are significantly worse "
        "(options: the grid file's race section; resumable)",
    )
    run.add_argument(
        "--rerun-changed",
        action="store_true",
        help="rerun the finished cells whose config changed since they ran (the grid file was edited); each new run "
        "replaces the old run folder once it finished. Without it such cells stop the run before any work",
    )
    run.set_defaults(func=run_grid_command)
    status = sub.add_parser("status", help="show each cell's status", description="show each cell's status.")
    _common(status)
    status.set_defaults(func=status_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", help="grid file (YAML)")
    parser.add_argument("--results", default="results", help="results folder (default ./results)")
    parser.add_argument("--only", metavar="PATTERN", default=None, help="only cells whose id matches this glob")


def run_grid_command(args: argparse.Namespace) -> int:
    from medtransfer.experiments import create_executor, load_grid, run_grid
    from medtransfer.utils import check_writable

    check_writable(args.results, folder=True, what="--results")

    spec = load_grid(args.grid)
    executor = create_executor(args.executor, workers=args.workers, address=args.address)
    tracker = None
    if args.mlflow:
        from medtransfer.experiments.tracking import MlflowTracker

        tracker = MlflowTracker(args.mlflow, experiment=spec.name)
    result = run_grid(
        spec,
        executor,
        results_root=args.results,
        only=args.only,
        tracker=tracker,
        race=args.race,
        rerun_changed=args.rerun_changed,
    )
    counts = result.counts
    print(
        f"grid {spec.name}: {counts['ran']} ran, {counts['skipped']} already done, {counts['failed']} failed, "
        f"{counts['running']} running elsewhere  ({args.results}/{spec.name})"
    )
    if args.race:
        _print_race(result, spec, args)
    failed = [o for o in result.outcomes if o.status == "failed"]
    for outcome in failed[:10]:
        print(f"  failed {outcome.cell_id}: {outcome.error}")
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10} more: medtransfer grid status {args.grid} --results {args.results}")
    return 0 if result.ok else 1


def _print_race(result, spec, args: argparse.Namespace) -> None:
    from collections import Counter

    from medtransfer.experiments import expand_grid, select_cells
    from medtransfer.experiments.racing import race_lines

    total = len(select_cells(expand_grid(spec, args.results), args.only))
    done = sum(o.status == "done" for o in result.outcomes)
    kinds = Counter(status for _, (status, _) in result.not_run)
    not_run = ", ".join(f"{n} {status}" for status, n in sorted(kinds.items())) or "none"
    print(f"race: {done} of the {total} cells of the full grid done ({done / max(total, 1):.0%}); not run: {not_run}")
    for line in race_lines(result.races, spec.race.metric if spec.race else "dice"):
        print(f"  {line}")


def status_command(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    from medtransfer.errors import DataError
    from medtransfer.experiments import grid_status, load_grid

    if Path(args.results).exists() and not Path(args.results).is_dir():
        raise DataError(f"{args.results}: is a file; --results is the grid's results folder")
    spec = load_grid(args.grid)
    rows = grid_status(spec, args.results, only=args.only)
    width = max([len("cell"), *(len(r["cell_id"]) for r in rows)])
    print(f"{'cell':<{width}}  {'status':<11}  detail")
    for row in rows:
        print(f"{row['cell_id']:<{width}}  {row['status']:<11}  {row['detail']}".rstrip())
    counts = Counter(r["status"] for r in rows)
    print(f"{len(rows)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0
