"""``medtransfer strategies``: list transfer strategies and their parameters."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "strategies",
        help="list transfer strategies and their parameters",
        description="list transfer strategies and their parameters.",
    )
    parser.set_defaults(func=pending("'medtransfer strategies'", 4))
