"""Exceptions for problems with the user's input.

Everything raised for bad input (files, folders, configs, options) derives from :class:`MedTransferError`; the
command line prints its message without a traceback and exits with status 2.  Internal invariants use
``assert``; user input never does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedTransferError(Exception):
    """Base class of user-facing errors: the message says what was wrong, what was given, what is allowed."""


class DataError(MedTransferError):
    """A dataset, file or array that cannot be used as given."""


class ConfigError(MedTransferError):
    """An option, grid file or name that is not valid."""


class MissingSourceError(MedTransferError):
    """An offline data source (a Debian or PyPI package) is not installed."""


def did_you_mean(name: str, choices: Iterable[str], *, what: str = "name") -> str:
    """Format an "unknown name" message with close matches, as MONAI's ``look_up_option`` does.

    Example:
        >>> did_you_mean("unet2", ["unet2d", "unet3d"], what="model")
        "unknown model 'unet2'; did you mean 'unet2d'? Allowed: unet2d, unet3d"
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} Allowed: {', '.join(choices)}"
