"""``medtransfer grid``: run or inspect an experiment grid."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "grid", help="run or inspect an experiment grid", description="run or inspect an experiment grid."
    )
    parser.set_defaults(func=pending("'medtransfer grid'", 8))
