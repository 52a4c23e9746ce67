"""``medtransfer <command>``: each command parses, validates and calls one library function.

Commands live in :mod:`medtransfer.commands`, one module each, exposing ``add_parser(subparsers)`` which
registers the sub-parser and sets ``func``.  Command modules import only ``argparse`` at import time; heavy
libraries (torch, nibabel, ...) are imported inside ``run`` so that ``--help`` is instant.

User errors (:class:`medtransfer.errors.MedTransferError`) print ``error: <message>`` and exit with status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError, MedTransferError

# Order is the order of the pipeline, which is the order ``--help`` lists them in.
COMMAND_MODULES = (
    "demo",
    "data",
    "pretrain",
    "finetune",
    "strategies",
    "evaluate",
    "predict",
    "grid",
    "report",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="medtransfer",
        description="Transfer learning for medical image segmentation: which source and strategy, "
        "at which label budget, and is the gain real.",
    )
    parser.add_argument("--version", action="version", version=f"medtransfer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(f"medtransfer.commands.{name}").add_parser(subparsers)
    return parser


def _set_threads(threads: int | None) -> None:
    """Apply a command's ``--threads`` (see :func:`medtransfer.commands.add_threads_option`)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medtransfer`` console script; returns the process exit status."""
    # OpenMP threads that spin while they wait make a training step 3-100x slower as soon as the cores are
    # shared (grid workers, a second job); passive waiting costs little on a dedicated machine.  Set before
    # torch loads (commands import it lazily); an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        _set_threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except MedTransferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
