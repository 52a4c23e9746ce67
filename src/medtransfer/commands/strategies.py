"""``medtransfer strategies``: list transfer strategies and their parameters."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "strategies",
        help="list transfer strategies and their parameters",
        description="list transfer strategies and their parameters. Use a strategy as "
        "--strategy NAME[:ARGS], e.g. first_k:2, last_k:k=1,bn_mode=adapt, discriminative:decay=0.5.",
    )
    parser.add_argument("name", nargs="?", help="show only this strategy")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..transfer import get_strategy_entry, list_strategies

    entries = [get_strategy_entry(args.name)] if args.name else list_strategies()
    if args.json:
        rows = [
            {"name": e.name, "description": e.description, "parameters": e.parameters(), "tasks": list(e.tasks)}
            | ({"details": e.details} if e.details else {})
            for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for entry in entries:
        print(f"{entry.name}: {entry.description}")
        for p in entry.parameters():
            print(f"    {p['name']} ({p['type']}, default {p['default']!r}): {p['help']}")
        if args.name and entry.details:
            print(f"\n{entry.details}")
    return 0
