"""``medtransfer evaluate``: evaluate predictions against references (Dice, surface Dice, HD95, lesions)."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate predictions against references (Dice, surface Dice, HD95, lesions)",
        description="evaluate predictions against references (Dice, surface Dice, HD95, lesions).",
    )
    parser.set_defaults(func=pending("'medtransfer evaluate'", 6))
