"""``medtransfer data check DIR``: validate a dataset folder; every problem named with its file."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    check = subparsers.add_parser("check", help="validate a dataset folder; every problem named with its file")
    check.add_argument("dir", help="dataset folder (nnU-Net raw, MSD datalist, CC359, or images/ + labels/)")
    check.set_defaults(func=pending("'medtransfer data check'", 2))
