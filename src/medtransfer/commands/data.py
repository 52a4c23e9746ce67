"""``medtransfer data``: dataset tools (``check``, ``build-benchmark``)."""

from __future__ import annotations

from ._pending import pending


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="dataset tools: check a dataset folder, build the benchmark")
    sub = parser.add_subparsers(dest="data_command", metavar="<data command>", required=True)
    check = sub.add_parser("check", help="validate a dataset folder; every problem named with its file")
    check.add_argument("dir", help="dataset folder (nnU-Net raw, MSD datalist, CC359, or images/ + labels/)")
    check.set_defaults(func=pending("'medtransfer data check'", 2))
    build = sub.add_parser("build-benchmark", help="build the embedded brainshift benchmark (nnU-Net raw layout)")
    build.add_argument("--out", required=True, help="output folder")
    build.set_defaults(func=pending("'medtransfer data build-benchmark'", 3))
