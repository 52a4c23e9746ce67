"""``medtransfer data build-benchmark``: build the embedded brainshift benchmark."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    build = subparsers.add_parser("build-benchmark", help="build the embedded brainshift benchmark (nnU-Net raw)")
    build.add_argument("--out", required=True, help="output folder")
    build.set_defaults(func=pending("'medtransfer data build-benchmark'", 3))
