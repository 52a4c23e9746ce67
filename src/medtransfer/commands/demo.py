"""``medtransfer demo``: the main job: build brainshift, run a small grid, write a report."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job: build brainshift, run a small grid, write a report",
        description="the main job: build brainshift, run a small grid, write a report.",
    )
    parser.set_defaults(func=pending("'medtransfer demo'", 8))
