"""Small helpers shared by every stage: atomic file writes, JSON/YAML dumps and the YAML reader of config files."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` in one step.

    Readers never see a half-written file: either the old file (or none) or the complete new one.  On error the
    temporary file is removed.  ``suffix`` defaults to the target's full suffix (``.nii.gz`` stays ``.nii.gz``)
    so that libraries choosing the format by extension still work.  The file gets the permissions a plain
    ``open()`` gives (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.  An ``OSError`` about the
    temporary file (permission denied, disk full) is re-raised naming ``path``, the file the user asked for.

    Example:
        >>> with atomic_path("/tmp/out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if suffix is None else suffix
    try:
        tmp_path = _create_temporary(path, f".tmp{suffix}")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if str(err.filename) != str(tmp_path):
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path, suffix: str) -> Path:
    """Create a new empty file ``.<name>.<random><suffix>`` next to ``path`` (``O_EXCL``, mode 0o666 & ~umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(candidate, flags, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def check_writable(path: str | os.PathLike, *, folder: bool = False, what: str = "the output") -> Path:
    """Refuse, before any work, an output ``path`` (file or folder, existing or not) that cannot be written.

    With ``folder=True`` the output is a folder: an existing file at ``path`` is refused too (``what`` names the
    option in that message, e.g. ``"--results"``).

    The nearest existing folder on the way to ``path`` must accept a new file: this is tested by creating and
    removing an empty file there, the one test that cannot disagree with the real write (permissions, ACLs,
    read-only file systems; ``os.access`` asks for the real, not the effective, user).  Nothing is left behind and
    no folder is created.  Disk space is not checked: a full disk is reported when it happens.

    Returns:
        The existing folder that was tested.

    Raises:
        DataError: a file stands where a folder is needed, or the folder does not accept new files.
    """
    from .errors import DataError

    path = Path(path).absolute()
    if folder and path.exists() and not path.is_dir():
        raise DataError(f"{path}: is a file; {what} is a folder (give a new or existing folder)")
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder == path and not folder.is_dir():
        folder = path.parent  # an existing file that will be replaced
    if not folder.is_dir():
        raise DataError(f"{folder}: is a file, so {path} cannot be written; give an output inside a folder")
    try:
        probe = _create_temporary(folder / "medtransfer-write-test", "")
        probe.unlink()
    except OSError as err:
        target = "" if folder == path else f", so {path} cannot be written"
        raise DataError(
            f"{folder}: cannot write here ({err.strerror}){target}; give an output location in a folder you can "
            "write to"
        ) from err
    return folder


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


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, except that a mapping giving the same key twice is an error.

    PyYAML keeps the last of two equal keys without a word, so a grid file listing ``strategy:`` twice in one
    mapping would quietly lose the first list.  Everything else is ``yaml.safe_load``'s: the same tags, types and
    merge keys (``<<: *base``, whose keys a mapping may override: only keys written in the mapping itself count).

    Raises:
        yaml.YAMLError: invalid YAML, or a duplicate key (a ``ConstructorError`` whose ``problem`` names the key and
            the line of its first occurrence, and whose ``problem_mark`` is the second).
    """
    import yaml

    return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader subclass)


@functools.cache
def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` refusing a key given twice in one mapping (see :func:`load_yaml`)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode) and node.tag != "tag:yaml.org,2002:set":
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # merged keys may be overridden by the mapping's own
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # an unhashable key: the constructor below reports it
                    if first is not key_node:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"duplicate key {key!r} (first given on line {first.start_mark.line + 1}); a key may "
                            "appear once in a mapping (the second would silently replace the first)",
                            key_node.start_mark,
                        )
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_yaml_mapping(path: str | os.PathLike, *, what: str = "options", allow_empty: bool = False) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (:func:`load_yaml`: ``yaml.safe_load`` refusing duplicate keys).

    An empty file (or one holding only comments) is an error unless ``allow_empty`` (then it is ``{}``): a config
    file given on purpose and read as "no options" is almost always a mistake (the wrong file, a failed copy).

    Raises:
        ConfigError: one line naming the file and what is wrong: missing, a folder, unreadable, not UTF-8 text, not
            valid YAML or a key given twice in one mapping (with the line and column), empty, or something other
            than a mapping.
    """
    import yaml

    from .errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file of {what}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: does not exist (expected a YAML file of {what})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{raw[err.start]:02x} at offset {err.start}); a YAML file of "
            f"{what} must be UTF-8 text"
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        context = getattr(err, "context", None)
        problem = f"{' '.join(str(context).split())}: {problem}" if context else problem
        raise ConfigError(f"{path}: cannot read YAML{where}: {problem}") from None
    if data is None:
        if allow_empty:
            return {}
        raise ConfigError(f"{path}: the file is empty (or only comments); expected a mapping of {what}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what}, found {type(data).__name__}")
    return data


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock (``fcntl.flock`` on ``path``, created if absent) held while the block runs;
    released when the block ends or the process dies."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
