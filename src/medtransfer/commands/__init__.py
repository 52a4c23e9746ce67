"""One module per ``medtransfer`` sub-command (see :mod:`medtransfer.cli`)."""

from __future__ import annotations

import argparse


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: PyTorch's intra-op CPU threads for this command (applied by :func:`medtransfer.cli.main`)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for PyTorch (default: PyTorch's choice, one per core); use 1 per job when jobs share cores",
    )
