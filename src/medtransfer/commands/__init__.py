"""One module per ``medtransfer`` sub-command (see :mod:`medtransfer.cli`)."""

from __future__ import annotations

import argparse
import os


def threads_count(text: str) -> int:
    """argparse type of ``--threads``: a whole number from 1 to 4 x the machine's cores (far more threads than cores
    only slows a run down, and tens of thousands make OpenBLAS crash while it starts them)."""
    most = 4 * (os.cpu_count() or 1)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {most}, got {text!r}") from None
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {most} (at most 4 x this machine's {most // 4} cores), got {value}"
        )
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: PyTorch's intra-op CPU threads for this command (applied by :func:`medtransfer.cli.main`)."""
    parser.add_argument(
        "--threads",
        type=threads_count,
        default=None,
        metavar="N",
        help="CPU threads for PyTorch (default: PyTorch's choice, one per core); use 1 per job when jobs share cores",
    )
