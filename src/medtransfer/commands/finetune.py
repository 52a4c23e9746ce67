"""``medtransfer finetune``: fine-tune a pretrained model with a transfer strategy."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained model with a transfer strategy",
        description="fine-tune a pretrained model with a transfer strategy.",
    )
    parser.set_defaults(func=pending("'medtransfer finetune'", 4))
