"""Small helpers shared by every stage: atomic file writes and JSON/YAML dumps."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` in one step.

    Readers never see a half-written file: either the old file (or none) or the complete new one.  On error the
    temporary file is removed.  ``suffix`` defaults to the target's full suffix (``.nii.gz`` stays ``.nii.gz``)
    so that libraries choosing the format by extension still work.

    Example:
        >>> with atomic_path("/tmp/out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON atomically: NaN and +-infinity become ``null`` (see :func:`to_json`)."""
    write_text_atomic(path, to_json(obj, indent=indent) + "\n")


def to_json(obj: Any, *, indent: int | None = None) -> str:
    """``obj`` as strict JSON (RFC 8259), which every parser reads: non-finite floats are written as ``null``.

    Paths become strings and numpy values plain numbers or lists.  Where a ``null`` needs a reason (an HD95 of
    an empty mask, ...), the writer of that value adds it in a sibling field.

    Example:
        >>> to_json({"dice": 0.5, "hd95": float("inf")})
        '{"dice": 0.5, "hd95": null}'
    """
    return json.dumps(_finite_or_none(obj), indent=indent, allow_nan=False, default=_json_default)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(value) for value in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # numpy scalars and arrays
        return _finite_or_none(obj.tolist())
    return obj


def write_yaml_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as YAML atomically (read it back with ``yaml.safe_load``)."""
    import yaml

    write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False))


def read_yaml_mapping(path: str | os.PathLike, *, what: str = "options") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (``yaml.safe_load``; an empty file is ``{}``).

    Raises:
        ConfigError: the file cannot be read or parsed, or holds something other than a mapping.
    """
    import yaml

    from .errors import ConfigError

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read YAML ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}, found {type(data).__name__}")
    return data


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
