"""``medtransfer report``: write the HTML/Markdown report of a results folder."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the HTML/Markdown report of a results folder",
        description="write the HTML/Markdown report of a results folder.",
    )
    parser.set_defaults(func=pending("'medtransfer report'", 8))
