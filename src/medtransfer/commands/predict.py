"""``medtransfer predict``: apply a trained model to NIfTI scans."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="apply a trained model to NIfTI scans", description="apply a trained model to NIfTI scans."
    )
    parser.set_defaults(func=pending("'medtransfer predict'", 5))
