"""``medtransfer pretrain``: pretrain source models (classification, segmentation, self-supervised)."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain source models (classification, segmentation, self-supervised)",
        description="pretrain source models (classification, segmentation, self-supervised).",
    )
    parser.set_defaults(func=pending("'medtransfer pretrain'", 7))
