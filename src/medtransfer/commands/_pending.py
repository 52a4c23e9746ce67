"""Sub-commands whose capability arrives with a later issue say so plainly."""

from __future__ import annotations

import argparse

from ..errors import MedTransferError


def pending(what: str, issue: int):
    """Return a ``run`` function that reports that ``what`` is not implemented yet."""

    def run(args: argparse.Namespace) -> int:
        raise MedTransferError(f"{what} is not available in this version yet (planned in issue #{issue})")

    return run
