"""Exceptions for problems with the user's input.

Everything raised for bad input (files, folders, configs, options) derives from :class:`MedTransferError`; the
command line prints its message without a traceback and exits with status 2.  Internal invariants use
``assert``; user input never does.
"""

from __future__ import annotations

import difflib
import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path


class MedTransferError(Exception):
    """Base class of user-facing errors: the message says what was wrong, what was given, what is allowed."""


class DataError(MedTransferError):
    """A dataset, file or array that cannot be used as given."""


class ConfigError(MedTransferError):
    """An option, grid file or name that is not valid."""


class OutputError(MedTransferError):
    """An output file that cannot be written (disk full, read-only folder, ...); nothing of the user's changed."""

    @classmethod
    def from_os_error(
        cls, path: str | os.PathLike, err: OSError, what: str, *, needed: int | None = None
    ) -> OutputError:
        """The error for a failed atomic write of ``what`` to ``path``; a full disk is named, with its free space.

        Example:
            >>> err = OSError(errno.EROFS, "Read-only file system")
            >>> print(OutputError.from_os_error("/no/a.pt", err, "the checkpoint"))
            /no/a.pt: cannot write the checkpoint (Read-only file system); nothing was written; choose a writable folder
        """
        path = Path(path)
        kept = f"the existing {path.name} is unchanged" if path.exists() else "nothing was written"
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            return cls(f"{path}: cannot write {what} ({err.strerror or err}); {kept}; choose a writable folder")
        folder = next((p for p in path.parents if p.exists()), Path.cwd())
        free = shutil.disk_usage(folder).free / 2**20
        size = f"{needed / 2**20:.1f} MiB needed, " if needed is not None else ""
        return cls(
            f"{path}: cannot write {what}: the disk is full ({size}{free:.1f} MiB free on the file system of "
            f"{folder}); {kept}; free some space or write to another disk"
        )


class MissingSourceError(MedTransferError):
    """An offline data source (a Debian or PyPI package) is not installed."""


def check_seed(seed: object, name: str = "seed") -> None:
    """Refuse a seed that is not a whole number >= 0 (``True`` included: a YAML ``yes`` is no seed).

    Raises:
        ConfigError: ``<name> must be a whole number >= 0, got <value>``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {seed!r}")


def did_you_mean(name: str, choices: Iterable[str], *, what: str = "name") -> str:
    """Format an "unknown name" message with close matches, as MONAI's ``look_up_option`` does.

    Example:
        >>> did_you_mean("unet2", ["unet2d", "unet3d"], what="model")
        "unknown model 'unet2'; did you mean 'unet2d' or 'unet3d'? Allowed: unet2d, unet3d"
        >>> did_you_mean("vgg", ["unet2d", "unet3d"], what="model")
        "unknown model 'vgg'. Allowed: unet2d, unet3d"
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    return f"unknown {what} {name!r}{hint} Allowed: {', '.join(choices)}"
