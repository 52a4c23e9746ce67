"""Run a grid's cells, resumably: a cell is done exactly when its ``summary.json`` exists and parses.

The cell-function protocol (:class:`CellFunction`) is what plugs a real job into a grid::

    def run_something(config: dict, run_dir: Path, *, resume: bool) -> dict: ...

- ``config`` is the cell's resolved config (also written to ``run_dir/config.yaml`` before the call); its
  axis values are top-level keys (see :mod:`medtransfer.experiments.spec`).
- ``run_dir`` exists; the function writes all its outputs there (checkpoints, per-case metrics, ...), each
  atomically, and must not write ``summary.json``, ``lock.json`` or ``error.json`` (the runner's files).
- ``resume`` is True when an earlier attempt (interrupted or failed) left files in ``run_dir``: the function
  should continue from its last checkpoint (or start over if it cannot).  It is False when the folder holds
  only the runner's files, or when the config changed since that attempt (the function then starts over and
  overwrites what is there); a change to ``eval`` alone still resumes (the test cases are scored on every attempt).
- It returns a JSON-serialisable mapping, stored as ``result`` in ``summary.json``.  By convention
  ``result["metrics"]`` holds the cell's aggregate metrics (name -> float) and ``result["per_case"]`` a list
  of per-case rows (``{"case": id, <metric>: value, ...}``), which :mod:`~medtransfer.experiments.collect`
  turns into the tidy table of the report.
- An exception marks the cell failed (``error.json``) without stopping the grid; the next run retries it.

The function runs in a worker (a process of the local pool or a Ray task), so it must be importable by
reference: a module-level function, not a lambda or closure.

A finished cell whose stored ``config.yaml`` differs from the grid's current config (the grid file was edited) is
refused before any work (:class:`ChangedCells`), naming the cell and the keys that differ: mixing results of two
configs in one folder would be silent.  ``run_grid(..., rerun_changed=True)`` (``grid run --rerun-changed``) reruns
those cells instead, each in a staging folder (a hidden sibling of its run folder, ``.seed0.rerun``) that replaces the
old run folder only once the new run finished: until then the old results stay as they were, and a rerun that
fails or is killed leaves them untouched (the next ``--rerun-changed`` resumes it).

``run_grid(..., race=True)`` (``grid run --race``) runs the cells in rounds instead and skips the later cells of
the arms a race drops (:mod:`~medtransfer.experiments.racing`); each round goes through the same executor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError
from ..utils import write_json_atomic, write_yaml_atomic
from .spec import Cell, GridSpec, expand_grid, select_cells
from .state import (
    CONFIG,
    ERROR,
    GRID_CELLS,
    LOCK,
    SUMMARY,
    CellStatus,
    LockHeld,
    cell_lock,
    cell_status,
    has_partial_outputs,
    lock_is_stale,
    read_summary,
    short_lock,
    summary_problem,
)

log = logging.getLogger(__name__)


class CellFunction(Protocol):
    """Runs one cell: ``(config, run_dir, *, resume) -> result mapping`` (see the module docstring)."""

    def __call__(self, config: dict[str, Any], run_dir: Path, *, resume: bool) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell in this run.

    ``status`` is DONE (ran now, or ``skipped`` because already done), FAILED (``error`` says why) or RUNNING
    (another live worker holds the cell's lock; left alone).
    """

    cell_id: str
    status: CellStatus
    duration_s: float = 0.0
    skipped: bool = False
    resumed: bool = False
    error: str | None = None


@dataclass(frozen=True)
class GridRun:
    """The outcomes of one ``run_grid`` call, in completion order.

    With ``race=True``: ``races`` holds each raced setting (:class:`~medtransfer.experiments.racing.SettingRace`)
    and ``not_run`` the ``(cell id, (status, why))`` of the cells the races decided not to run (``dropped`` or
    ``skipped``), which are neither outcomes nor failures.
    """

    grid: str
    outcomes: tuple[CellOutcome, ...] = field(default_factory=tuple)
    races: tuple[Any, ...] = ()
    not_run: tuple[tuple[str, tuple[str, str]], ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        """Number of cells per outcome: ``ran``, ``skipped``, ``failed``, ``running``."""
        kinds = Counter(_outcome_kind(o) for o in self.outcomes)
        return {k: kinds.get(k, 0) for k in ("ran", "skipped", "failed", "running")}

    @property
    def ok(self) -> bool:
        """True when no cell failed."""
        return all(o.status is not CellStatus.FAILED for o in self.outcomes)


def _outcome_kind(outcome: CellOutcome) -> str:
    if outcome.status is CellStatus.DONE:
        return "skipped" if outcome.skipped else "ran"
    return "failed" if outcome.status is CellStatus.FAILED else "running"


def execute_cell(cell: Cell, cell_fn: CellFunction | None = None, *, tracker: Any = None) -> CellOutcome:
    """Run one cell in the current process: lock, call ``cell_fn``, record the error or write the summary.

    ``cell_fn`` defaults to the function registered for the cell's ``kind`` (config key).  Safe to call for a
    cell that is done (returns at once) or held by another live worker (returns RUNNING).  A rerun of a changed
    cell (``cell.replaces`` set) runs in its staging folder, which then replaces the old run folder.
    """
    outcome = _execute_cell(cell, cell_fn, tracker=tracker)
    if cell.replaces is not None and outcome.status is CellStatus.DONE:
        replace_run_dir(cell.run_dir, cell.replaces)
        if read_summary(cell.run_dir) is None:  # another process's rerun was moved in: drop the folder the lock made
            shutil.rmtree(cell.run_dir, ignore_errors=True)
    return outcome


def replace_run_dir(staging: Path, run_dir: Path) -> None:
    """Move a finished staging folder onto ``run_dir``: the old folder is moved aside, the new one in, the old one
    removed; paths to the staging folder in its ``summary.json`` become paths to ``run_dir``.  A kill between the
    two renames leaves the finished staging folder, which the next ``run_grid`` moves in (:func:`finish_reruns`).
    The move holds a lock beside the staging folder (``.seed0.rerun.move``): of two ``grid run --rerun-changed``
    processes that finish with the same rerun, one moves it in and the other leaves it (nothing to move, or the
    other is moving it)."""
    aside = staging.with_name(f"{staging.name}.old")
    try:
        with short_lock(_move_lock(staging)):  # renames only: the removals below may take long on a shared disk
            if read_summary(staging) is None:  # moved in (or removed) by another process meanwhile
                return
            if aside.exists():  # left by a kill between the renames of an earlier move
                os.rename(aside, aside.with_name(f"{aside.name}.{os.getpid()}.{time.monotonic_ns()}"))
            _repoint_summary(staging, run_dir)
            if run_dir.exists():
                os.rename(run_dir, aside)
            os.rename(staging, run_dir)
    except LockHeld as err:
        log.info("%s is being moved in by another process (%s); leaving it", staging, err)
    _remove_old_runs(staging)


def _remove_old_runs(staging: Path) -> None:
    """Remove the old run folders the moves of ``staging`` set aside (``.seed0.rerun.old``, ``.old.<pid>.<ns>``)."""
    for old in staging.parent.glob(f"{staging.name}.old*"):
        shutil.rmtree(old, ignore_errors=True)


def _move_lock(staging: Path) -> Path:
    return staging.with_name(f"{staging.name}.move")


def _repoint_summary(staging: Path, run_dir: Path) -> None:
    """Rewrite the paths inside ``staging`` that ``staging/summary.json`` records (a checkpoint, say) as paths
    inside ``run_dir``, where they will be after the move."""
    path = staging / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    old, new = str(staging), str(run_dir)

    def repoint(value: Any) -> Any:
        if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
            return new + value[len(old) :]
        if isinstance(value, dict):
            return {k: repoint(v) for k, v in value.items()}
        if isinstance(value, list):
            return [repoint(v) for v in value]
        return value

    write_json_atomic(path, repoint(summary))


def _execute_cell(cell: Cell, cell_fn: CellFunction | None, *, tracker: Any) -> CellOutcome:
    from .kinds import get_cell_function

    run_dir = cell.run_dir
    if read_summary(run_dir) is not None:
        _drop_stale_lock(run_dir)  # killed between writing the summary and releasing the lock
        return CellOutcome(cell.id, CellStatus.DONE, skipped=True)
    cell_fn = cell_fn or get_cell_function(cell.config.get("kind"), where=f"cell {cell.id}")
    try:
        with cell_lock(run_dir) as broke_stale_lock:
            if read_summary(run_dir) is not None:  # finished by another worker while we waited
                return CellOutcome(cell.id, CellStatus.DONE, skipped=True)
            if cell.replaces is not None and _rerun_moved_in(cell):
                return CellOutcome(cell.id, CellStatus.DONE, skipped=True)
            if broke_stale_lock:
                log.info("cell %s: took over the stale lock of an interrupted attempt", cell.id)
            if summary_problem(run_dir):  # e.g. truncated: the cell is not done, and its function sees no summary
                (run_dir / SUMMARY).unlink(missing_ok=True)
            resume = has_partial_outputs(run_dir) and not _config_changed(cell)  # nothing to resume otherwise
            return _run_locked(cell, cell_fn, resume, tracker)
    except LockHeld as err:
        log.info("cell %s is running elsewhere (%s); leaving it", cell.id, err)
        return CellOutcome(cell.id, CellStatus.RUNNING, error=str(err))


def _rerun_moved_in(cell: Cell) -> bool:
    """Whether another process already reran this changed cell and moved its result in: the run folder it replaces
    is finished with the cell's current config (this process found the cell changed before that)."""
    done = dataclasses.replace(cell, run_dir=cell.replaces, replaces=None)
    if read_summary(done.run_dir) is None or not (done.run_dir / CONFIG).is_file() or config_changes(done):
        return False
    log.info("cell %s: rerun and moved in by another process meanwhile; leaving it", cell.id)
    return True


def _drop_stale_lock(run_dir: Path) -> None:
    lock = run_dir / LOCK
    if lock.is_file() and lock_is_stale(lock):
        lock.unlink(missing_ok=True)


def _config_changed(cell: Cell) -> bool:
    """Whether the run folder's ``config.yaml`` differs from the cell's config (the grid file was edited) in what
    the interrupted attempt computed: a change to ``eval`` alone does not restart the training, since every attempt
    scores the test cases anew (a cell function reads ``eval`` after its training)."""
    changes = config_changes(cell, resuming=True)
    trained = [key for key in changes if key != "eval" and not key.startswith("eval.")]
    if trained:
        shown = ", ".join(trained[:3]) + (", ..." if len(trained) > 3 else "")
        log.warning("cell %s: config changed since the interrupted attempt (%s); starting over", cell.id, shown)
    elif changes:
        log.info("cell %s: only eval options changed since the interrupted attempt; resuming it", cell.id)
    return bool(trained)


def _result_key(path: str) -> bool:
    """Whether a changed key path can change a cell's result: not ``resources.*``, nor a key that says where or how
    a run goes (:data:`~medtransfer.train.resume.RUN_ONLY_OPTIONS`, the list ``finetune --resume`` ignores too, so
    that the runner never resumes a training that the training would refuse to resume).  ``num_workers`` is not
    among them: data-loader workers draw other augmentation streams, so they change what is learnt."""
    from ..train.resume import RUN_ONLY_OPTIONS

    parts = path.split(".")
    return parts[0] != "resources" and parts[-1] not in RUN_ONLY_OPTIONS


def config_changes(cell: Cell, *, resuming: bool = False) -> list[str]:
    """The key paths (``finetune.train.lr``) where the run folder's ``config.yaml`` differs from the cell's config
    in what can change its result (not ``resources``, devices, threads, progress, caches: :func:`_result_key`);
    empty when it has none or they agree (``["config.yaml"]`` when it cannot be read).

    ``data.root`` (or ``data`` given as a folder) counts only when its last folder name changed: a dataset moved
    elsewhere is the same data, so a finished cell keeps its results.  With ``resuming`` (may an interrupted attempt
    be continued?) a moved dataset counts too: a training records where its scans are and refuses to resume on
    other paths (``finetune --resume``), so the cell starts over."""
    import yaml

    path = cell.run_dir / CONFIG
    if not path.is_file():
        return []
    try:
        stored = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return [f"{CONFIG} (unreadable)"]
    changes = [key for key in _differences(stored, cell.config) if _result_key(key)]
    if not (isinstance(stored, Mapping) and "source_finetune" in (stored.get("grid") or {})):
        changes = [key for key in changes if not key.startswith(SOURCE_FINETUNE)]  # run before it was recorded
    if not resuming and _same_name(stored.get("data"), cell.config.get("data")):
        changes = [key for key in changes if key not in ("data", "data.root")]
    return changes


# recorded since grid-trained sources are trained with defaults.finetune (a cell run earlier lacks it: its source
# is the one it was, see sources.train_source for the reuse of an earlier version's source)
SOURCE_FINETUNE = "grid.source_finetune"


def _same_name(old: Any, new: Any) -> bool:
    """Whether two ``data`` sections name dataset roots with the same last folder (a moved dataset)."""

    def root(data: Any) -> Any:
        return data.get("root") if isinstance(data, Mapping) else data

    old, new = root(old), root(new)
    return isinstance(old, str) and isinstance(new, str) and Path(old).name == Path(new).name


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = list(dict.fromkeys([*new, *old]))
        return [d for k in keys for d in _differences(old.get(k, _MISSING), new.get(k, _MISSING), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".") or "the whole config"]


_MISSING = object()
RERUN_SUFFIX = ".rerun"


class ChangedCells(ConfigError):
    """Finished cells whose stored config differs from the grid's (the grid file was edited since they ran)."""


def changed_cells(cells: list[Cell]) -> dict[str, list[str]]:
    """``cell id -> differing key paths`` of the finished cells whose config changed since they ran."""
    return {c.id: keys for c in cells if read_summary(c.run_dir) is not None and (keys := config_changes(c))}


def _refuse_changed(spec: GridSpec, changed: dict[str, list[str]]) -> None:
    cell_id, keys = next(iter(changed.items()))
    more = f" (and {len(changed) - 1} more finished cells)" if len(changed) > 1 else ""
    shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
    raise ChangedCells(
        f"{spec.path}: cell {cell_id} finished with another config ({shown} changed since){more}; nothing was run: "
        "rerun with --rerun-changed to replace their results, or write to another --results folder"
    )


def staging_dir(cell: Cell) -> Path:
    """Where a changed finished cell is rerun before it replaces its run folder: a hidden sibling of the run folder
    (``.seed0.rerun``), at the same depth, so that the cell finds its grid's folder (and the grid's trained sources)
    as the run folder would; results readers skip hidden folders."""
    return cell.run_dir.with_name(f".{cell.run_dir.name}{RERUN_SUFFIX}")


def finish_reruns(cells: list[Cell]) -> None:
    """Move in the reruns that finished in their staging folder but were not moved yet (killed in between); a
    finished staging folder whose config is no longer the grid's (the file was edited again) is removed."""
    for cell in cells:
        staging = staging_dir(cell)
        if staging.is_dir() and read_summary(staging) is not None:
            if config_changes(dataclasses.replace(cell, run_dir=staging)):
                log.info("cell %s: removing a finished rerun of an earlier edit of the grid", cell.id)
                shutil.rmtree(staging, ignore_errors=True)  # another process may be removing it too
            else:
                log.info("cell %s: moving in its finished rerun", cell.id)
                replace_run_dir(staging, cell.run_dir)
        _remove_old_runs(staging)


def _run_locked(cell: Cell, cell_fn: CellFunction, resume: bool, tracker: Any) -> CellOutcome:
    run_dir = cell.run_dir
    write_yaml_atomic(run_dir / CONFIG, cell.config)
    log.info("cell %s: %s", cell.id, "resuming" if resume else "starting")
    started = time.time()
    try:
        result = dict(cell_fn(cell.config, run_dir, resume=resume))
        json.dumps(result, default=_json_compatible)  # fail here, not half-way through writing the summary
    except Exception as err:  # noqa: BLE001  (a failing cell must not stop the grid)
        _write_error(run_dir, err)  # the dispatcher logs the failure (worker processes may not log)
        return CellOutcome(cell.id, CellStatus.FAILED, time.time() - started, resumed=resume, error=_brief(err))
    summary = _summary(cell, result, started, resume)
    write_json_atomic(run_dir / SUMMARY, summary)  # LAST: the cell is done from this moment on
    (run_dir / ERROR).unlink(missing_ok=True)
    if tracker is not None:  # a mirror of the run folder: after the summary, never failing the cell
        tracker.log_cell(cell, summary)
    return CellOutcome(cell.id, CellStatus.DONE, summary["duration_s"], resumed=resume)


def _json_compatible(obj: Any) -> Any:
    """What ``write_json_atomic`` accepts besides plain JSON: paths and numpy values."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"a cell function returned a {type(obj).__name__}, which is not JSON-serialisable")


def _summary(cell: Cell, result: dict[str, Any], started: float, resumed: bool) -> dict[str, Any]:
    finished = time.time()
    return {
        "cell_id": cell.id,
        "grid": cell.grid,
        "axes": cell.axes,
        "status": CellStatus.DONE.value,
        "resumed": resumed,
        "started": started,
        "finished": finished,
        "duration_s": round(finished - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "result": result,
    }


def _write_error(run_dir: Path, err: BaseException) -> None:
    write_json_atomic(
        run_dir / ERROR,
        {
            "type": type(err).__name__,
            "message": str(err),
            "traceback": "".join(traceback.format_exception(err)),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
        },
    )


def _brief(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def run_grid(
    spec: GridSpec,
    executor: Any = None,
    cell_fn: CellFunction | None = None,
    *,
    results_root: str | Path = "results",
    only: str | None = None,
    tracker: Any = None,
    progress: bool = True,
    race: bool = False,
    rerun_changed: bool = False,
) -> GridRun:
    """Run every cell of ``spec`` that is not done yet; finished cells are skipped, interrupted ones resumed.

    Args:
        spec: the grid (:func:`~medtransfer.experiments.spec.load_grid`).
        executor: where cells run (:mod:`~medtransfer.experiments.executors`); default: one at a time here.
        cell_fn: the cell function for every cell; default: the one registered for each cell's ``kind``
            (``defaults.kind``, which overrides may change; see
            :func:`~medtransfer.experiments.kinds.get_cell_function`).
        results_root: the results folder; cells go to ``<results_root>/<grid name>/<cell id>``.
        only: run only the cells whose id matches this glob.
        tracker: optional experiment tracker with ``log_cell(cell, summary)`` (e.g. MLflow).
        progress: show a progress bar.
        race: run each setting's arms in rounds (seeds) and skip the later cells of the arms that lose
            (:mod:`~medtransfer.experiments.racing`; options in the grid file's ``race`` section).
        rerun_changed: rerun the finished cells whose config changed since they ran (each replaces its run folder
            once it finished); without it such cells are refused before any work.

    Raises:
        ChangedCells: a finished cell's config changed and ``rerun_changed`` is False (nothing was run).
        ConfigError: ``only`` matches no cell, an unknown kind, a missing dataset, a grid-trained source that would
            train on scans a cell holds out (:func:`~medtransfer.experiments.sources.check_source_leaks`), a saved
            race that does not fit.

    Returns:
        The outcome of every cell run or skipped as done (failed cells are recorded in their ``error.json``) and,
        when racing, each setting's race and the cells it did not run.
    """
    from .executors import LocalExecutor
    from .kinds import get_cell_function
    from .sources import check_source_leaks

    root = Path(results_root).absolute()  # workers may have another cwd
    every_cell = expand_grid(spec, root)
    cells = select_cells(every_cell, only)
    if cell_fn is None:  # check every kind before running anything
        for kind in dict.fromkeys(c.config.get("kind") for c in cells):
            get_cell_function(kind, where=spec.path)
    finish_reruns(cells)
    changed = changed_cells(cells)
    if changed and not rerun_changed:
        _refuse_changed(spec, changed)
    reruns = {c.id: staging_dir(c) for c in cells if c.id in changed}
    to_run = [c for c in cells if c.id in reruns or read_summary(c.run_dir) is None]
    executor = executor or LocalExecutor()
    task = functools.partial(execute_cell, cell_fn=cell_fn, tracker=tracker)

    def run_batch(batch: list[Cell], description: str) -> list[CellOutcome]:
        return _run_cells(batch, executor, task, description, progress, reruns)

    if not race:
        check_datasets(to_run, spec.path)
        check_source_leaks(to_run, every_cell, spec.path)
        _record_cells(spec, every_cell, root)
        return GridRun(spec.name, tuple(run_batch(cells, f"grid {spec.name}")))
    from .racing import plan_race, race_grid

    plan = plan_race(spec, cells, root)
    for setting in plan.races:
        hit = [c.id for arm in setting.cells.values() for c in arm if c.id in reruns]
        if hit and setting.path.is_file():
            raise ConfigError(
                f"{setting.path}: the saved race of {setting.label} used the old result of cell {hit[0]}, whose "
                "config changed; delete this file to race that setting again with the new config (nothing was run)"
            )
    check_datasets(to_run, spec.path)
    check_source_leaks(to_run, every_cell, spec.path)
    _record_cells(spec, every_cell, root)
    outcomes = race_grid(spec, plan, run_batch)
    seen = {o.cell_id for o in outcomes}
    earlier = [c for c in cells if c.id not in seen and read_summary(c.run_dir) is not None]  # earlier runs' rounds
    outcomes += [CellOutcome(c.id, CellStatus.DONE, skipped=True) for c in earlier]
    seen |= {c.id for c in earlier}
    not_run = {cell_id: why for r in plan.races for cell_id, why in r.not_run().items() if cell_id not in seen}
    return GridRun(spec.name, tuple(outcomes), plan.races, tuple(sorted(not_run.items())))


def _record_cells(spec: GridSpec, cells: list[Cell], root: Path) -> None:
    """Write the grid's :data:`~medtransfer.experiments.state.GRID_CELLS` (every cell id, ``--only`` or not): results
    readers leave out the run folders of cells the grid no longer has."""
    write_json_atomic(root / spec.name / GRID_CELLS, {"grid": str(spec.path), "cells": [c.id for c in cells]})


def _run_cells(
    cells: list[Cell], executor: Any, task: CellTask, name: str, progress: bool, reruns: dict[str, Path] | None = None
) -> list[CellOutcome]:
    """Run the cells that are not done (through ``executor``); the done ones are outcomes ``skipped``.

    ``reruns``: ``cell id -> staging folder`` of finished cells to run again there (each is taken out once run).
    """
    reruns = {} if reruns is None else reruns
    finished = {c.id for c in cells if c.id not in reruns and read_summary(c.run_dir) is not None}
    for cell in cells:
        if cell.id in finished:
            _drop_stale_lock(cell.run_dir)  # killed between writing the summary and releasing the lock
        elif problem := summary_problem(cell.run_dir):
            log.warning("cell %s: %s; running it again", cell.id, problem)
    todo = [_staged(c, reruns.pop(c.id)) if c.id in reruns else c for c in cells if c.id not in finished]
    done = [CellOutcome(cell_id, CellStatus.DONE, skipped=True) for cell_id in sorted(finished)]
    log.info("%s: %d cells selected, %d done already, %d to run", name, len(cells), len(done), len(todo))
    return list(done) + list(_progress(executor.run(todo, task), len(todo), name, progress))


def _staged(cell: Cell, staging: Path) -> Cell:
    log.info("cell %s: config changed since it ran; rerunning it in %s", cell.id, staging)
    return dataclasses.replace(cell, run_dir=staging, replaces=cell.run_dir)


def check_datasets(cells: list[Cell], where: str) -> None:
    """Check, before any cell runs, that the dataset folder of every cell (and of its grid-trained sources) exists.

    Raises:
        ConfigError: ``data.root`` or a target's dataset folder does not exist (named, with the grid file).
    """
    from .sources import resolve_dataset

    seen = set()
    for cell in cells:
        if "data" not in cell.config:
            continue  # a kind that reads no dataset (e.g. dummy)
        sources = cell.config.get("sources") or {}
        targets = {cell.config.get("target")} | {e.get("target") for e in sources.values() if isinstance(e, Mapping)}
        for target in sorted(str(t) for t in targets if t):
            key = (json.dumps(cell.config["data"], sort_keys=True, default=str), target)
            if key not in seen:
                seen.add(key)
                try:
                    resolve_dataset(cell.config, target)
                except ConfigError as err:
                    raise ConfigError(f"{where}: {err}") from err


def _progress(outcomes, total: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    failures = 0
    with tqdm(total=total, desc=name, unit="cell", disable=not enabled or total == 0) as bar:
        for outcome in outcomes:
            bar.update(1)
            if outcome.status is CellStatus.FAILED:
                failures += 1
                if failures <= MAX_LOGGED_FAILURES:
                    log.warning("cell %s failed: %s", outcome.cell_id, outcome.error)
            yield outcome
    if failures > MAX_LOGGED_FAILURES:
        log.warning("%d more cells failed; see 'medtransfer grid status'", failures - MAX_LOGGED_FAILURES)


MAX_LOGGED_FAILURES = 10


def grid_status(spec: GridSpec, results_root: str | Path = "results", only: str | None = None) -> list[dict]:
    """One row per cell: ``{cell_id, status, detail}`` (detail: duration, error message or lock owner).

    After ``grid run --race``, a pending cell that the race decided not to run has the status ``dropped`` (its arm
    lost: ``dropped by race at round r``) or ``skipped`` (the race was decided before its round).  A cell whose
    rerun finished in its staging folder but was not moved in yet is ``done`` (the detail says so).  Without
    ``only``, the run folders of cells the grid no longer has follow, with the status ``orphan``.
    """
    from .racing import race_annotations

    rows = []
    cells = expand_grid(spec, results_root)
    raced = race_annotations(spec, cells, results_root)  # cells a race decided not to run: dropped / skipped
    for cell in select_cells(cells, only):
        status = cell_status(cell.run_dir)
        detail = _status_detail(cell.run_dir, status)
        label = status.value
        staged = staging_dir(cell)
        if read_summary(staged) is not None and not config_changes(dataclasses.replace(cell, run_dir=staged)):
            waiting = f"a finished rerun waits in {staged.name}: the next grid run moves it in"
            if status is CellStatus.DONE:
                detail += f" ({waiting})"
            else:  # killed between moving the old folder aside and moving the rerun in
                label, detail = CellStatus.DONE.value, f"{_status_detail(staged, CellStatus.DONE)} ({waiting})"
        elif status is CellStatus.DONE and (keys := config_changes(cell)):
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            detail += f" (config changed since: {shown}; grid run --rerun-changed reruns it)"
        if status is CellStatus.PENDING and cell.id in raced:
            label, detail = raced[cell.id]
        rows.append({"cell_id": cell.id, "status": label, "detail": detail})
    if only is None:
        rows += _orphan_rows(Path(results_root) / spec.name, {c.id for c in cells})
    return rows


def _orphan_rows(grid_dir: Path, cell_ids: set[str]) -> list[dict]:
    """Rows (status ``orphan``) of the run folders under ``grid_dir`` of cells the grid no longer has."""
    import yaml

    if not grid_dir.is_dir():
        return []
    found = {}
    folders = sorted({path.parent for name in (SUMMARY, CONFIG) for path in grid_dir.rglob(name)})  # each once
    for folder in folders:
        parts = folder.relative_to(grid_dir).parts
        if not parts or any(p.startswith((".", "_")) for p in parts):
            continue  # staging folders, trained sources, race states
        summary = read_summary(folder)
        try:
            config = summary if summary is not None else yaml.safe_load((folder / CONFIG).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        grid = config.get("grid") if isinstance(config, dict) else None
        cell_id = summary.get("cell_id") if summary is not None else (grid or {}).get("cell_id")
        if isinstance(cell_id, str) and cell_id == "/".join(parts) and cell_id not in cell_ids:
            found[cell_id] = summary is not None
    return [
        {
            "cell_id": cell_id,
            "status": "orphan",
            "detail": f"{'finished' if done else 'unfinished'} run folder of a cell the grid no longer has (excluded "
            "or off its axes): grid run leaves it alone and, from the next grid run on, the report leaves it out",
        }
        for cell_id, done in sorted(found.items())
    ]


def _status_detail(run_dir: Path, status: CellStatus) -> str:
    from .state import LOCK, read_json

    if status is CellStatus.DONE:
        summary = read_json(run_dir / SUMMARY) or {}
        return f"{summary.get('duration_s', '?')} s"
    if problem := summary_problem(run_dir):
        return f"{problem}; the next run reruns it"
    if status is CellStatus.FAILED:
        error = read_json(run_dir / ERROR) or {}
        return f"{error.get('type', '?')}: {str(error.get('message', ''))[:80]}"
    if status in (CellStatus.RUNNING, CellStatus.INTERRUPTED) and (run_dir / LOCK).is_file():
        lock = read_json(run_dir / LOCK) or {}
        return f"pid {lock.get('pid', '?')} on {lock.get('host', '?')}"
    return ""


CellTask = Callable[[Cell], CellOutcome]
