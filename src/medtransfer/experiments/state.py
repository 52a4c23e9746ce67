"""State of a cell's run folder: the files that say done / running / failed, the lock and its heartbeat.

Files the runner keeps in a run folder (the cell function owns everything else in it):

- ``summary.json``: written LAST and atomically; a cell is done exactly when it exists and parses (a runner
  summary: a JSON object with ``cell_id`` and ``result``).  One that does not (truncated by a full disk, a copy
  cut short, an edit) does not count: the cell runs again and the new summary replaces it.
- ``lock.json``: ``{pid, host, started}``, written to a private temporary file and published with ``link``
  (which fails when the lock exists, like ``O_CREAT | O_EXCL``, but never shows an empty lock) so that only
  one worker runs a cell; a background thread touches it every ``HEARTBEAT_S`` seconds.  A lock is *stale*
  when its process is gone (same host, pid not alive) or its heartbeat is older than ``STALE_AFTER_S`` (any
  host, e.g. a dead Ray node); a stale lock is broken by the next worker, which resumes the cell.  The runner
  also drops the stale lock of a finished cell (killed between writing the summary and releasing the lock).
- ``error.json``: ``{type, message, traceback, host, pid, time}`` of the last failed attempt.

And one file per grid, ``<results>/<grid>/_cells.json`` (:data:`GRID_CELLS`): ``{grid, cells}``, the grid file and
every cell id it had at its last ``grid run``, so that results readers leave out the run folders of cells the grid
no longer has (an exclude added, an axis value removed).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"
LOCK = "lock.json"
ERROR = "error.json"
CONFIG = "config.yaml"
RUNNER_FILES = (SUMMARY, LOCK, ERROR, CONFIG)
GRID_CELLS = "_cells.json"  # in <results>/<grid>/: the grid file and the ids of its cells at its last `grid run`
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0


class CellStatus(enum.StrEnum):
    """Where a cell stands; ``interrupted`` cells (stale lock or partial outputs) resume on the next run."""

    DONE = "done"
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PENDING = "pending"


def cell_status(run_dir: Path, *, stale_after_s: float = STALE_AFTER_S) -> CellStatus:
    """The status of one run folder, read from its files (see the module docstring)."""
    if read_summary(run_dir) is not None:
        return CellStatus.DONE
    lock = run_dir / LOCK
    if lock.is_file():
        return CellStatus.INTERRUPTED if lock_is_stale(lock, stale_after_s=stale_after_s) else CellStatus.RUNNING
    if (run_dir / ERROR).is_file():
        return CellStatus.FAILED
    return CellStatus.INTERRUPTED if has_partial_outputs(run_dir) else CellStatus.PENDING


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The cell's runner summary, or None when there is none or it does not parse (see :func:`summary_problem`)."""
    summary = read_json(run_dir / SUMMARY)
    return summary if is_runner_summary(summary) else None


def is_runner_summary(summary: Any) -> bool:
    """Whether parsed JSON is a runner's ``summary.json`` (cell functions may nest summaries of their own)."""
    return isinstance(summary, dict) and "cell_id" in summary and "result" in summary


def summary_problem(run_dir: Path) -> str | None:
    """Why a run folder's ``summary.json`` does not count, or None when it is missing or valid."""
    path = run_dir / SUMMARY
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"{path} cannot be read ({err.strerror or err})"
    try:
        summary = json.loads(text)
    except ValueError as err:
        return f"{path} is not valid JSON (truncated?): {err}"
    if not is_runner_summary(summary):
        return f"{path} is not a runner summary (no cell_id / result)"
    return None


def has_partial_outputs(run_dir: Path) -> bool:
    """Whether the cell function left files behind in an unfinished run (so the next run should resume)."""
    if not run_dir.is_dir():
        return False
    return any(p.name not in RUNNER_FILES and not p.name.startswith(".") for p in run_dir.iterdir())


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable (e.g. a lock being replaced)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lock_is_stale(lock: Path, *, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether a lock's owner is gone: dead pid on this host, or no heartbeat for ``stale_after_s``."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return True
    info = read_json(lock) or {}
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        if not _pid_alive(info["pid"]):
            return True
    return age > stale_after_s


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _pid_not_zombie(pid)


def _pid_not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust os.kill
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class LockHeld(Exception):
    """Another live worker holds the cell's lock."""


@contextlib.contextmanager
def cell_lock(
    run_dir: Path, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S
) -> Iterator[bool]:
    """Hold the cell's lock (with a heartbeat) for the duration of the block.

    Yields True when a stale lock was broken to get here (the previous attempt was interrupted).

    Raises:
        LockHeld: a live worker holds the lock.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    broke = _acquire(lock, stale_after_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lock, stop, heartbeat_s), daemon=True)
    beat.start()
    try:
        yield broke
    finally:
        stop.set()
        beat.join()
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def short_lock(lock: Path, *, stale_after_s: float = STALE_AFTER_S) -> Iterator[None]:
    """Hold ``lock`` (taken as a cell's lock is, without a heartbeat) for a block of at most a few seconds, e.g. the
    renames that move a finished rerun in; a lock left by a killed process is broken as a cell's stale lock is.

    Raises:
        LockHeld: a live process holds the lock.
    """
    _acquire(lock, stale_after_s)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _acquire(lock: Path, stale_after_s: float) -> bool:
    broke = False
    content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(content)
    try:
        for _ in range(3):
            try:
                os.link(tmp, lock)  # atomic and exclusive: a worker killed here leaves no half-written lock
            except FileExistsError:
                if not lock_is_stale(lock, stale_after_s=stale_after_s):
                    raise LockHeld(f"{lock} is held by {read_json(lock)}") from None
                broke = _break(lock, stale_after_s) or broke
                continue
            return broke
    finally:
        tmp.unlink(missing_ok=True)
    raise LockHeld(f"could not acquire {lock}: other workers keep taking it")


def _break(lock: Path, stale_after_s: float) -> bool:
    """Move a stale lock aside; of two workers racing to break it, only one rename succeeds."""
    aside = lock.with_name(f".{lock.name}.stale.{os.getpid()}.{time.monotonic_ns()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    if not lock_is_stale(aside, stale_after_s=stale_after_s):  # another worker re-took it in between: give back
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def _heartbeat(lock: Path, stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        with contextlib.suppress(FileNotFoundError):
            os.utime(lock)
