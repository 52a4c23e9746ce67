"""``medtransfer data``: dataset tools (``check``, ``build-benchmark``)."""

from __future__ import annotations

from . import build_benchmark, data_check


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="dataset tools: check a dataset folder, build the benchmark")
    sub = parser.add_subparsers(dest="data_command", metavar="<data command>", required=True)
    data_check.add_parser(sub)
    build_benchmark.add_parser(sub)
