"""``medtransfer <command>``: each command parses, validates and calls one library function.

Commands live in :mod:`medtransfer.commands`, one module each, exposing ``add_parser(subparsers)`` which
registers the sub-parser and sets ``func``.  Command modules import only ``argparse`` at import time; heavy
libraries (torch, nibabel, ...) are imported inside ``run`` so that ``--help`` is instant.

User errors (:class:`medtransfer.errors.MedTransferError`) print ``error: <message>`` and exit with status 2,
never a traceback.  So does an ``OSError`` that the machine, not the code, caused (permission denied, read-only
file system, disk full, quota): one line naming the file.  Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
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
    "ensemble",
    "predict",
    "grid",
    "report",
)

# OSErrors caused by where the user writes, not by the code: reported as one line, never a traceback.
ENVIRONMENT_ERRNOS = {
    errno.EACCES: "check the folder's permissions or choose another output location",
    errno.EPERM: "check the folder's permissions or choose another output location",
    errno.EROFS: "the file system is read-only: choose another output location",
    errno.ENOSPC: "the disk is full: free some space or choose another output location",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another output location",
}


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


def _log_above_progress_bars():
    """Route the console log handler through tqdm while a command runs, so that a warning during a progress bar
    gets its own line instead of being written into the bar's; a no-op when logging does not go to the console
    (an embedding application or a test harness configured it)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    console = [
        h
        for h in logging.getLogger().handlers
        if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.stdout)
    ]
    return logging_redirect_tqdm() if console else contextlib.nullcontext()


@contextlib.contextmanager
def _terminate_as_interrupt(received: list[int]):
    """SIGTERM (what ``timeout``, SLURM, ``docker stop`` and ``kill`` send) ends a command as Ctrl-C does: the same
    clean-up runs (a run folder with nothing trained yet is removed, checkpoints are kept) instead of the process
    dying with a half-written run folder. Only in the main thread of the process that installed it, and only where
    nothing else handles SIGTERM (an embedding application keeps its own); worker processes forked while it is
    installed die on SIGTERM as before."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return
    pid = os.getpid()

    def on_term(signum, frame):
        if os.getpid() != pid:  # a forked worker: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
    terminated: list[int] = []
    try:
        _set_threads(getattr(args, "threads", None))
        with _log_above_progress_bars(), _terminate_as_interrupt(terminated):
            return int(args.func(args) or 0)
    except MedTransferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {_environment_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        what = "terminated" if terminated else "interrupted"
        hint = getattr(err, "hint", None) or _RESUME_HINTS.get(getattr(args, "command", None), "")
        print(f"{what}{hint}", file=sys.stderr)
        return 143 if terminated else 130


# how to continue an interrupted long command (its last checkpoint / finished cells are kept)
_RESUME_HINTS = {
    "finetune": ": rerun the same command with --resume to continue from the last checkpoint",
    "pretrain": ": rerun the same command with --resume to continue from the last checkpoint",
    "grid": ": rerun the same command to continue (finished cells are kept, interrupted ones resume)",
    "demo": ": rerun the same command to continue (finished cells are kept)",
}


def _environment_error(err: OSError) -> str:
    """``<file>: <what the system said>; <what to do>`` for an :data:`ENVIRONMENT_ERRNOS` error."""
    where = f"{err.filename}: " if err.filename is not None else ""
    return f"{where}{err.strerror or err}; {ENVIRONMENT_ERRNOS[err.errno]}"


def _whole_number(text: str, least: int) -> int:
    """``text`` as a whole number >= ``least``, or the :class:`argparse.ArgumentTypeError` that argparse prints."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (``--repeats 0`` is one usage line, not a traceback or a NaN timing)."""
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (seeds)."""
    return _whole_number(text, 0)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (tolerances)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def run_script(main_fn, *args) -> None:
    """Run a benchmark script's ``main`` as the CLI runs a command: a user error (bad option value, missing file)
    is one ``error:`` line and exit status 2, Ctrl-C exit status 130; other exceptions keep their traceback.  An
    ``int`` that ``main`` returns is the exit status; anything else it returns (a report, ``None``) is success."""
    try:
        code = main_fn(*args)
    except MedTransferError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as err:
        print(f"error: {err.filename or err}: not found", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
