"""The report's race section: per setting raced by ``medtransfer grid run --race``, the saved race's outcome.

A raced grid keeps each setting's race state in ``<results>/<grid>/_race/`` (see
:mod:`medtransfer.experiments.racing`).  The report reads them (a results root or one grid's folder) and shows,
per setting, the winner (or the equivalent arms, or the leader of an undecided race), its margin over the
runner-up with a 95 % CI and the race-adjusted p-value, which arm was dropped at which round with which p-value,
and the cells spent against the full grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import DataError
from ..experiments.race import RaceState, RaceStatus, RaceSummary, load_state, race_sentence, summarize_race
from ..experiments.racing import RACE_DIR, find_race_states
from .document import Table, literal
from .grouping import metric_name

log = logging.getLogger(__name__)

OUTCOME = {
    RaceStatus.WINNER: "winner",
    RaceStatus.EQUIVALENT: "equivalent",
    RaceStatus.BUDGET_SPENT: "undecided (rounds spent)",
    RaceStatus.RUNNING: "running (not finished)",
}


@dataclass(frozen=True)
class RaceRecord:
    """One saved race: its setting's label, the metric raced on, the state and its summary."""

    label: str
    metric: str
    state: RaceState
    summary: RaceSummary


def read_races(results_dir: str | Path) -> tuple[list[RaceRecord], list[str]]:
    """The saved races under ``results_dir`` (with at least one round) and, for unreadable ones, why."""
    records, problems = [], []
    paths = find_race_states(results_dir)
    several_grids = len({_grid_of(p) for p in paths}) > 1
    for path in paths:
        try:
            state = load_state(path)
        except DataError as err:
            log.warning("%s", err)
            problems.append(str(err))
            continue
        if not state.rounds:
            continue
        setting = state.meta.get("setting") or {"setting": path.stem}
        label = ", ".join(str(v) for v in setting.values())
        if several_grids:
            label = f"{state.meta.get('grid', _grid_of(path))}: {label}"
        records.append(RaceRecord(label, str(state.meta.get("metric", "dice")), state, summarize_race(state)))
    return records, problems


def race_headlines(records: Sequence[RaceRecord]) -> list[str]:
    """One plain-language sentence per raced setting (winner / equivalent / undecided, compute)."""
    return [
        f"Race of **{literal(r.label)}**: {race_sentence(_literal_names(r.summary), metric_name(r.metric))}"
        for r in records
    ]


def _literal_names(s: RaceSummary) -> RaceSummary:
    """The summary with its arm names escaped (:func:`~.document.literal`) for a sentence of the report."""
    return replace(
        s,
        leader=literal(s.leader),
        runner_up=None if s.runner_up is None else literal(s.runner_up),
        drops=tuple(replace(d, arm=literal(d.arm), best=literal(d.best)) for d in s.drops),
    )


def race_table(records: Sequence[RaceRecord]) -> Table:
    """Per raced setting: outcome, winner or leader, margin with CI, p-value, drops, rounds and compute."""
    header = (
        "setting",
        "outcome",
        "winner / leader",
        "margin over runner-up [95% CI] (n)",
        "race-adjusted p",
        "dropped (round, p)",
        "rounds",
        "cells run / full grid",
    )
    rows = tuple(_row(r) for r in records)
    note = (
        "Margin: mean difference leader - runner-up on the paired held-out scans (n; each scan's seeds averaged). "
        "p: of the "
        "decision (the runner-up's drop, the equivalence TOST, or the last look), multiplied by the number of "
        "rounds; compare it with alpha directly. A dropped arm's later cells were not run (not failures)."
    )
    return Table("Races (grid run --race)", header, rows, note)


def not_run_sentence(records: Sequence[RaceRecord]) -> str:
    """How many cells the races saved, by why: dropped arms' later rounds and rounds after a decision."""
    dropped = sum(r.state.config.max_rounds - d.round for r in records for d in r.summary.drops)
    saved = sum(r.summary.cells_full - r.summary.cells_spent for r in records)
    full = sum(r.summary.cells_full for r in records)
    after = saved - dropped
    parts = [f"{dropped} cells of dropped arms (`dropped by race at round r` in `grid status`)"]
    if after:
        parts.append(f"{after} cells of rounds after a race was decided")
    return f"The races did not run {saved} of {full} cells: " + " and ".join(parts) + "; none of them failed."


def _row(record: RaceRecord) -> tuple[str, ...]:
    s = record.summary
    margin = "-"
    if s.runner_up is not None and (s.n < 2 or not all(math.isfinite(x) for x in s.ci)):
        margin = f"{s.margin:+.3f} [— (too few paired scans, n = {s.n})] vs {s.runner_up}"
    elif s.runner_up is not None:
        margin = f"{s.margin:+.3f} [{s.ci[0]:+.3f}, {s.ci[1]:+.3f}] vs {s.runner_up} (n = {s.n})"
    drops = "; ".join(f"{d.arm}: {d.round} (p = {d.pvalue_race:.2g})" for d in s.drops) or "-"
    leader = " = ".join(record.state.alive) if s.status is RaceStatus.EQUIVALENT else s.leader
    share = s.cells_spent / s.cells_full if s.cells_full else float("nan")
    return (
        record.label,
        OUTCOME[s.status],
        leader,
        margin,
        f"{s.pvalue:.2g}" if math.isfinite(s.pvalue) else "—",
        drops,
        f"{s.rounds} of {record.state.config.max_rounds}",
        f"{s.cells_spent} / {s.cells_full} ({share:.0%})",
    )


def _grid_of(path: Path) -> str:
    parts = path.parts
    return parts[parts.index(RACE_DIR) - 1] if RACE_DIR in parts else ""
