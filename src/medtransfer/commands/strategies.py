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
    parser.add_argument("name", nargs="?", help="show only this strategy (a name or a spec such as first_k:2)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)


# Strategy values of a grid's finetune cells that are references for the report, not transfer strategies
# (medtransfer.experiments.cells).
REFERENCES = {
    "baseline": "grid reference (kind finetune): the source model applied to the target's test cases as it is, "
    "no training",
    "oracle": "grid reference (kind finetune): trained from scratch on the target domain with every training "
    "subject labelled",
}


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import ConfigError
    from ..transfer import list_strategies
    from ..transfer.registry import check_strategy, parse_strategy_spec

    given: dict = {}
    if args.name in REFERENCES:
        rows = [_reference(args.name)]
    else:
        if args.name:
            try:
                _, given = parse_strategy_spec(args.name)  # "first_k:2": the entry and its parsed parameters
                entry, _ = check_strategy(args.name)  # with the parameters' ranges (first_k:0), as in a run
            except ConfigError as err:
                raise ConfigError(
                    f"strategy {args.name!r}: {err}" if repr(args.name) not in str(err) else str(err)
                ) from None
            entries = [entry]
        else:
            entries = list_strategies()
        rows = [
            {"name": e.name, "kind": "strategy", "description": e.description, "parameters": e.parameters()}
            | {"tasks": list(e.tasks)}
            | ({"details": e.details} if e.details else {})
            for e in entries
        ]
        if not args.name:
            rows += [_reference(n) for n in REFERENCES]
    if args.json:
        if given:
            rows[0]["given"] = given
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        print(f"{row['name']}: {row['description']}")
        for p in row["parameters"]:
            value = f" = {given[p['name']]!r} (given)" if p["name"] in given else ""
            print(f"    {p['name']} ({p['type']}, default {p['default']!r}){value}: {p['help']}")
        if args.name and row.get("details"):
            print(f"\n{row['details']}")
    return 0


def _reference(name: str) -> dict:
    """A grid reference's row: ``kind: reference`` tells it from a transfer strategy (``kind: strategy``)."""
    return {
        "name": name,
        "kind": "reference",
        "description": REFERENCES[name],
        "parameters": [],
        "tasks": ["segmentation"],
    }
