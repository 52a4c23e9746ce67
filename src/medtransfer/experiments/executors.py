"""Where a grid's cells run: here (one at a time or a pool of worker processes) or on a Ray cluster.

An executor has one method, ``run(cells, task) -> iterator of CellOutcome`` (in completion order), where
``task`` is the picklable :func:`~medtransfer.experiments.runner.execute_cell` partial.  Workers write their
results into the run folders themselves, each file atomically, so executors only schedule; no result
travels through the scheduler except the small outcome record.  No home-made scheduler: a process pool or
Ray.

Local worker processes die with the process that started them (``grid run``): on Linux the kernel kills them
when it dies (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread in each worker exits when its parent is
gone.  A worker killed that way leaves its cell's lock behind with a dead pid: the next run breaks that stale
lock and resumes the cell, while a lock whose process still lives is always respected (see
:mod:`~medtransfer.experiments.state`).
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import ConfigError, did_you_mean
from .spec import Cell
from .state import CellStatus

log = logging.getLogger(__name__)


class ExecutorKind(enum.StrEnum):
    """Executors of ``medtransfer grid run --executor``."""

    LOCAL = "local"
    RAY = "ray"


class LocalExecutor:
    """Run cells on this machine: in this process (``workers=1``) or in ``workers`` spawned processes.

    Example:
        >>> LocalExecutor(workers=2)
        LocalExecutor(workers=2)
    """

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self.workers = workers

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    def run(self, cells: Sequence[Cell], task: Callable[[Cell], Any]) -> Iterator[Any]:
        """Yield each cell's outcome as it completes.

        When a worker process dies (a crash, the out-of-memory killer), the pool breaks: the cells it had not
        finished go to a fresh pool, up to ``POOL_RESTARTS`` times; after that they are reported failed.
        """
        if self.workers == 1 or len(cells) <= 1:
            yield from (task(cell) for cell in cells)
            return
        remaining = list(cells)
        for _ in range(POOL_RESTARTS + 1):
            remaining = yield from self._run_pool(remaining, task)
            if not remaining:
                return
            log.warning("a worker process died; %d unfinished cells go to a fresh pool", len(remaining))
        yield from (_failed(cell, BROKEN_POOL_HINT) for cell in remaining)

    def _run_pool(self, cells: Sequence[Cell], task: Callable[[Cell], Any]) -> Iterator[Any]:
        """Yield outcomes; return the cells lost to a broken pool."""
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork: safe with torch threads and CUDA
        broken = []
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(cells)),
            mp_context=context,
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {pool.submit(task, cell): cell for cell in cells}
            for future in as_completed(futures):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    broken.append(futures[future])
                except Exception as err:  # noqa: BLE001  (e.g. an outcome that cannot be unpickled)
                    yield _failed(futures[future], f"{type(err).__name__}: {err}")
        return broken


POOL_RESTARTS = 2
PARENT_GONE_EXIT = 75
WATCHDOG_S = 1.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, *, every_s: float = WATCHDOG_S) -> None:
    """Make this (worker) process end as soon as ``parent_pid``, the process that started it, ends.

    Linux: the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``).  Everywhere: a daemon
    thread checks every ``every_s`` seconds that the parent is still the same (an orphan is re-parented) and
    ends the process otherwise.  Worker processes of a pool call it first (the pool's initializer).
    """
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(PARENT_GONE_EXIT)
    watchdog = threading.Thread(target=_watch_parent, args=(parent_pid, every_s), name="parent-watchdog", daemon=True)
    watchdog.start()


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d; the watchdog remains", ctypes.get_errno())
    except (OSError, AttributeError) as err:  # no libc symbol (e.g. musl without prctl): the watchdog remains
        log.debug("prctl(PR_SET_PDEATHSIG) is not available: %s", err)


def _watch_parent(parent_pid: int, every_s: float) -> None:
    import time

    while True:
        time.sleep(every_s)
        if os.getppid() != parent_pid:
            os._exit(PARENT_GONE_EXIT)  # no cleanup: the cell's lock turns stale and the next run resumes it


BROKEN_POOL_HINT = (
    "worker process died (a crash, the out-of-memory killer, or a script that starts workers without an "
    "`if __name__ == '__main__':` guard); its lock turns stale and the next run resumes the cell"
)


def _failed(cell: Cell, error: str):
    from .runner import CellOutcome

    return CellOutcome(cell.id, CellStatus.FAILED, error=error)


class RayExecutor:
    """Run each cell as a Ray task with the resources of its config's ``resources`` section.

    ``resources: {num_cpus: 1, num_gpus: 0}`` (the defaults) reserve one CPU per cell; set ``num_gpus: 1`` to
    give each cell a GPU on a cluster.  The run folders must be on storage every node sees.

    Args:
        address: Ray cluster address (``auto``, ``ray://host:10001``, ...); None starts a local instance
            unless Ray is already initialised.
        init_kwargs: more arguments to ``ray.init`` (e.g. ``num_cpus``, ``runtime_env``).
    """

    def __init__(self, address: str | None = None, **init_kwargs: Any) -> None:
        self.address = address
        self.init_kwargs = init_kwargs

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"

    def run(self, cells: Sequence[Cell], task: Callable[[Cell], Any]) -> Iterator[Any]:
        """Submit every cell, then yield each outcome as its task finishes."""
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **{"include_dashboard": False, **self.init_kwargs})
        remote = ray.remote(_call)  # ray.remote needs a function, not the task's functools.partial
        pending = {
            remote.options(**cell_resources(cell.config), name=cell.id).remote(task, cell): cell for cell in cells
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield _ray_result(ray, ref, pending.pop(ref))


def _call(task: Callable[[Cell], Any], cell: Cell) -> Any:
    return task(cell)


def _ray_result(ray, ref, cell: Cell):
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:  # the worker or node died; the cell's lock turns stale
        return _failed(cell, f"ray task failed: {type(err).__name__}: {err}")


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            "--executor ray needs Ray, which is not installed; install it with: pip install 'medtransfer[ray]'"
        ) from err
    return ray


RESOURCE_KEYS = ("num_cpus", "num_gpus")


def cell_resources(config: Mapping[str, Any]) -> dict[str, float]:
    """``{num_cpus, num_gpus}`` of a cell from its config's ``resources`` section (defaults 1 CPU, 0 GPU)."""
    resources = config.get("resources") or {}
    if not isinstance(resources, Mapping):
        raise ConfigError(f"resources must be a mapping with num_cpus/num_gpus, got {resources!r}")
    for key in resources:
        if key not in RESOURCE_KEYS:
            raise ConfigError(did_you_mean(str(key), RESOURCE_KEYS, what="key of resources"))
    out = {"num_cpus": resources.get("num_cpus", 1), "num_gpus": resources.get("num_gpus", 0)}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"resources.{key} must be a number >= 0, got {value!r}")
    return out


def create_executor(kind: str = "local", *, workers: int = 1, address: str | None = None) -> Any:
    """An executor by name (``local`` or ``ray``)."""
    if kind not in set(ExecutorKind):
        raise ConfigError(did_you_mean(kind, [k.value for k in ExecutorKind], what="executor"))
    if kind == ExecutorKind.RAY:
        return RayExecutor(address)
    if address is not None:
        raise ConfigError("--address is only used with --executor ray")
    return LocalExecutor(workers)
