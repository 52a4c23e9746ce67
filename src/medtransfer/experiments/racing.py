"""Race a grid: ``medtransfer grid run GRID.yaml --race`` runs each setting's arms seed by seed and stops paying
for the arms that are clearly losing (the statistics are :mod:`medtransfer.experiments.race`).

A *setting* is a target x label budget [x domain pair]; its *arms* are the (source, strategy) pairs of its cells,
named as the report names them (the strategy, or ``source / strategy`` when the grid has several sources).  The
references ``baseline`` and ``oracle`` are not arms: they run once, outside the race, as do the cells of a setting
with fewer than two arms.  Round ``r`` runs every live arm's cells of the ``r``-th seed of ``axes.seed`` (the
rounds of all settings run together: the executor, local or Ray, gets one batch per round), then
:func:`~medtransfer.experiments.race.update` compares the arms on the paired per-scan results so far (the unit is
the held-out scan, its seeds so far averaged, as in the report; every arm of a setting is scored on the same
scans) and drops the arms
significantly worse than the best.  A setting stops when one arm is left, the arms left are equivalent within the
margin, or its rounds are spent.

The grid file's optional ``race`` section configures it (every key optional; checked when the file loads)::

    race:
      metric: dice        # the per-case metric compared (a key of the cells' per-case rows)
      margin: 0.01        # equivalence margin in the metric's units
      alpha: 0.05         # family-wise error rate of the whole race (split equally over its rounds)
      max_rounds: 3       # the rounds are the first max_rounds seeds of axes.seed (default: every seed)
      round_axis: seed    # what a round adds (only seed for now)

Each setting's race state is saved atomically after every round to
``<results>/<grid>/_race/<target>/[<domain pair>/]<budget>.json``.  A killed run (even ``kill -9``) resumes at the
last saved round, and a cell whose ``summary.json`` parses never runs again, so a rerun takes the same decisions.
A dropped arm's later cells are not run: ``grid status`` lists them as ``dropped`` (and the cells after a decided
race as ``skipped``), never as failures.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError, did_you_mean

if TYPE_CHECKING:
    from .race import RaceState
    from .runner import CellOutcome
    from .spec import Cell, GridSpec

log = logging.getLogger(__name__)

RACE_KEYS = ("metric", "margin", "alpha", "max_rounds", "round_axis")
ROUND_AXES = ("seed",)
RACE_DIR = "_race"
SETTING_AXES = ("target", "domain_pair", "budget")


@dataclass(frozen=True)
class RaceSpec:
    """A grid's ``race`` section (see the module docstring); ``margin`` None is the report's default margin."""

    metric: str = "dice"
    margin: float | None = None
    alpha: float = 0.05
    max_rounds: int | None = None
    round_axis: str = "seed"


def parse_race_section(raw: Any, where: str, seeds: Sequence[int]) -> RaceSpec:
    """Validate a grid file's ``race`` section (``seeds``: the grid's ``axes.seed``).

    Raises:
        ConfigError: an unknown key or a value out of range, named with the file and the key path.
    """
    from .config_keys import check_race_section

    check_race_section(raw, where)
    raw = dict(raw or {})
    metric = raw.get("metric", "dice")
    if not isinstance(metric, str) or not metric.strip():
        raise ConfigError(f"{where}: race.metric must be the name of a per-case metric (e.g. dice), got {metric!r}")
    from ..report.grouping import LOWER_IS_BETTER, SIGNED_ERRORS

    if metric in LOWER_IS_BETTER or metric in SIGNED_ERRORS:  # the race drops the arms with the lower values
        kind = "lower is better" if metric in LOWER_IS_BETTER else "a signed error (0 is best)"
        raise ConfigError(
            f"{where}: race.metric {metric!r} is {kind}; a race keeps the arms with the higher values, so race on a "
            "metric where higher is better (dice, iou, surface_dice, lesion_f1, ...)"
        )
    margin = raw.get("margin")
    if margin is not None and not (_is_number(margin) and math.isfinite(margin) and margin > 0):
        raise ConfigError(
            f"{where}: race.margin must be a number > 0 in the metric's units (0.01 Dice), got {margin!r}"
        )
    alpha = raw.get("alpha", 0.05)
    if not (_is_number(alpha) and 0 < alpha < 0.5):
        raise ConfigError(f"{where}: race.alpha must be a number in (0, 0.5), got {alpha!r}")
    rounds = raw.get("max_rounds")
    if rounds is not None and not (isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 1):
        raise ConfigError(f"{where}: race.max_rounds must be an integer >= 1 (rounds are seeds), got {rounds!r}")
    if rounds is not None and rounds > len(seeds):
        raise ConfigError(
            f"{where}: race.max_rounds is {rounds}, but a round is one seed and axes.seed has {len(seeds)} "
            f"({', '.join(map(str, seeds))}); give at most {len(seeds)} or add seeds"
        )
    axis = raw.get("round_axis", "seed")
    if axis not in ROUND_AXES:
        raise ConfigError(f"{where}: race.round_axis: {did_you_mean(str(axis), ROUND_AXES, what='round axis')}")
    return RaceSpec(metric, None if margin is None else float(margin), float(alpha), rounds, axis)


def kind_metrics(kind: str | None) -> tuple[str, ...] | None:
    """The per-case metrics the cells of a built-in kind write (None for a kind whose metrics are not known here).

    A lesion target adds the ``lesion_*`` columns to the segmentation metrics; whether a target has lesions is known
    only when its cells run, where :func:`advance` checks ``race.metric`` against the rows themselves.
    """
    from dataclasses import fields

    if kind == "dummy":
        return ("dice",)
    if kind in ("finetune", "teacher_student"):
        from ..metrics.lesions import DERIVED, LesionStats, is_lesion_tally

        lesions = [f"lesion_{name}" for name in (*(f.name for f in fields(LesionStats)), *DERIVED)]
        segmentation = ("dice", "iou", "surface_dice", "hd95", "assd", *(m for m in lesions if not is_lesion_tally(m)))
        return (*segmentation, "teacher_dice") if kind == "teacher_student" else segmentation
    if kind == "classification":
        from ..finetune.classify import METRICS

        return tuple(METRICS)
    return None


def check_race_metric(metric: str, kinds: Sequence[str | None], where: str) -> None:
    """Refuse, when the grid loads, a ``race.metric`` that no cell of the grid writes (a typo: ``dcie``).

    Raises:
        ConfigError: one line naming the file, the metric, close names and the metrics the cells write.
    """
    known = [kind_metrics(kind) for kind in dict.fromkeys(kinds)]
    if not known or any(metrics is None for metrics in known):
        return  # a registered kind: its rows are checked when the race reads them
    allowed = list(dict.fromkeys(m for metrics in known for m in metrics))
    if metric not in allowed:
        what = f"per-case metric of {'/'.join(str(k) for k in dict.fromkeys(kinds))} cells"
        raise ConfigError(f"{where}: race.metric: {did_you_mean(metric, allowed, what=what)}")


# --- the plan: settings, arms, rounds --------------------------------------------------------------------------


@dataclass
class SettingRace:
    """One raced setting: its arms' cells per round, its state file and (once opened) its state.

    Attributes:
        key: the state file's path below ``_race/`` without ``.json`` (e.g. ``brain/n3``).
        label: the setting as the report writes it (e.g. ``brain, n3``).
        setting: axis name -> label (target, domain_pair, budget).
        cells: arm -> one cell per round (the round's seed).
        path: the state file.
        state: the race (None until :func:`open_race`).
        blocked: why the race could not go on in this run (a cell of its round did not finish).
        outside: ``cell id -> reason`` of the setting's cells whose seed is past ``race.max_rounds``.
    """

    key: str
    label: str
    setting: dict[str, Any]
    cells: dict[str, list[Cell]]
    path: Path
    state: RaceState | None = None
    blocked: str | None = None
    outside: dict[str, str] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.state is not None and self.state.status == "running" and self.blocked is None

    def round_cells(self) -> list[Cell]:
        """The cells of the next round: every live arm's cell of that round's seed."""
        index = self.state.rounds_done
        return [self.cells[arm][index] for arm in self.state.alive]

    def not_run(self) -> dict[str, tuple[str, str]]:
        """``cell id -> (status, detail)`` of the cells the race decided not to run (after a drop or a decision)."""
        if self.state is None:
            return {}
        out = {cell_id: ("skipped", why) for cell_id, why in self.outside.items()}
        drops = {d.arm: d for r in self.state.rounds for d in r.dropped}
        over = self.state.status != "running"
        for arm, cells in self.cells.items():
            for index, cell in enumerate(cells, start=1):
                if arm in drops and index > drops[arm].round:
                    drop = drops[arm]
                    out[cell.id] = ("dropped", f"dropped by race at round {drop.round} (p = {drop.pvalue_race:.2g})")
                elif over and index > self.state.rounds_done:
                    out[cell.id] = ("skipped", f"race over at round {self.state.rounds_done}: {_outcome(self.state)}")
        return out


@dataclass(frozen=True)
class RacePlan:
    """A grid's cells sorted for racing: the raced settings and the cells run without a race."""

    races: tuple[SettingRace, ...]
    free: tuple[Cell, ...]


def plan_race(spec: GridSpec, cells: Sequence[Cell], results_root: str | Path) -> RacePlan:
    """Sort ``cells`` (a grid's selected cells) into raced settings, free cells and cells outside the rounds.

    Raises:
        ConfigError: an arm of a raced setting has no cell for one of the rounds' seeds (e.g. excluded).
    """
    from ..report.grouping import add_arms, is_reference

    race = spec.race or RaceSpec()
    seeds = list(spec.axes["seed"])[: race.max_rounds or len(spec.axes["seed"])]
    arms = [row["arm"] for row in add_arms([c.axes for c in cells])]
    groups: dict[tuple, dict[str, dict[int, Cell]]] = {}
    free: list[Cell] = []
    for cell, arm in zip(cells, arms, strict=True):
        if is_reference(arm):
            free.append(cell)
        else:
            key = tuple(cell.axes.get(name) for name in SETTING_AXES)
            groups.setdefault(key, {}).setdefault(arm, {})[cell.axes["seed"]] = cell
    races = []
    for by_arm in groups.values():
        if len(by_arm) < 2:  # nothing to race
            free += [cell for by_seed in by_arm.values() for cell in by_seed.values()]
        else:
            races.append(_setting_race(spec, by_arm, seeds, results_root))
    return RacePlan(tuple(races), tuple(free))


def _setting_race(spec: GridSpec, by_arm: dict[str, dict[int, Cell]], seeds: list[int], root) -> SettingRace:
    first = next(iter(next(iter(by_arm.values())).values()))
    setting = {name: first.axes[name] for name in SETTING_AXES if name in first.axes}
    label = ", ".join(str(v) for v in setting.values())
    for arm, by_seed in by_arm.items():
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise ConfigError(
                f"{spec.path}: race: arm {arm!r} of setting {label} has no cell for seed {missing[0]} (excluded, or "
                "not selected by --only); every arm of a raced setting needs a cell for each round's seed"
            )
    parts = first.id.split("/")[:-3] + [first.id.split("/")[-2]]  # drop source__strategy and seed: keep the setting
    key = "/".join(parts)
    cells = {arm: [by_seed[s] for s in seeds] for arm, by_seed in by_arm.items()}
    why = f"past race.max_rounds: the race's rounds are seeds {', '.join(map(str, seeds))}"
    outside = {cell.id: why for by_seed in by_arm.values() for seed, cell in by_seed.items() if seed not in seeds}
    path = Path(root) / spec.name / RACE_DIR / f"{key}.json"
    return SettingRace(key, label, setting, cells, path, outside=outside)


# --- running ---------------------------------------------------------------------------------------------------

RunBatch = Callable[[Sequence["Cell"], str], list["CellOutcome"]]


def race_grid(spec: GridSpec, plan: RacePlan, run_batch: RunBatch) -> list[CellOutcome]:
    """Run the races of ``plan`` round by round (with the free cells in the first batch); returns every outcome.

    ``run_batch(cells, description)`` runs cells (skipping finished ones) and returns their outcomes.  Each race's
    state is saved after each of its rounds; a race whose round has a cell that did not finish stops for this run
    (``blocked``) and continues on the next.

    Raises:
        ConfigError: a saved race was started with other arms or options, or ``race.metric`` is not a per-case
            metric of the cells.
        DataError: a saved race state cannot be read.
    """
    for race in plan.races:
        open_race(spec, race)
    outcomes: list[CellOutcome] = []
    batch, number = list(plan.free), 0
    while True:
        live = [race for race in plan.races if race.running]
        batch += [cell for race in live for cell in race.round_cells()]
        if not batch:
            return outcomes
        number += 1
        outcomes += run_batch(batch, f"race batch {number}")
        for race in live:
            advance(spec, race)
        batch = []


def open_race(spec: GridSpec, race: SettingRace) -> None:
    """Load the setting's saved race (checked against the grid) or start a new one.

    Raises:
        ConfigError: the saved race was started with other arms, options, metric or round seeds, or its arms were
            other cells (a renamed source keeps the arms' names): its decisions do not apply to the grid now.
    """
    from .race import load_state, new_race

    config, meta = _race_setup(spec, race)
    if not race.path.is_file():
        race.state = new_race(list(race.cells), config)
        race.state.meta = meta
        return
    state = load_state(race.path)
    problem = _saved_race_problem(race, state, config, meta)
    if problem:
        raise ConfigError(
            f"{race.path}: the race of {race.label} {problem}; delete this file to start that race again from round 1 "
            "(its finished cells are kept and not run again)"
        )
    race.state = state


def _race_setup(spec: GridSpec, race: SettingRace) -> tuple[Any, dict[str, Any]]:
    """The race's options (:class:`~medtransfer.experiments.race.RaceConfig`) and the ``meta`` its state records."""
    from .race import RaceConfig

    options = spec.race or RaceSpec()
    margin = {} if options.margin is None else {"margin": options.margin}
    config = RaceConfig(max_rounds=len(next(iter(race.cells.values()))), alpha=options.alpha, **margin)
    meta = {
        "grid": spec.name,
        "setting": race.setting,
        "metric": options.metric,
        "round_seeds": [cell.axes["seed"] for cell in next(iter(race.cells.values()))],
        "arm_cells": {arm: cells[0].id.split("/")[-3] for arm, cells in race.cells.items()},
    }
    return config, meta


def _saved_race_problem(race: SettingRace, state: RaceState, config: Any, meta: dict[str, Any]) -> str | None:
    """Why a saved race does not fit the grid now (None when it does): its arms, options, metric, round seeds, or
    the cells its arms were (``<source>__<strategy>`` folders; a state saved before they were recorded has none)."""
    saved = {"arms": state.arms, "options": state.config, **{k: state.meta.get(k) for k in ("metric", "round_seeds")}}
    now = {"arms": list(race.cells), "options": config, "metric": meta["metric"], "round_seeds": meta["round_seeds"]}
    changed = [k for k in now if saved[k] != now[k]]
    if changed:
        key = changed[0]
        return f"was started with {key} {_plain(saved[key])}, the grid now gives {_plain(now[key])}"
    cells = state.meta.get("arm_cells")
    if isinstance(cells, dict):
        for arm, folder in meta["arm_cells"].items():
            if cells.get(arm) != folder:
                return (
                    f"raced arm {arm!r} on the cells {cells.get(arm)}, the grid now gives {folder} (a renamed source "
                    "keeps the arm's name): its decisions are not about these cells"
                )
    return None


def advance(spec: GridSpec, race: SettingRace) -> None:
    """Feed the setting's finished round to the race and save it; block the race if a cell did not finish."""
    from .race import RaceStatus, save_state, smallest_drop_pvalue, update
    from .state import read_summary

    cells = race.round_cells()
    summaries = {cell.id: read_summary(cell.run_dir) for cell in cells}
    unfinished = [cell_id for cell_id, summary in summaries.items() if summary is None]
    if unfinished:
        race.blocked = f"cell {unfinished[0]} did not finish; the next run retries it and goes on with the race"
        log.warning("race %s: %s", race.label, race.blocked)
        return
    metric = race.state.meta.get("metric", "dice")
    arms = zip(race.state.alive, cells, strict=True)
    results = {arm: _case_values(cell, summaries[cell.id], metric, spec.path) for arm, cell in arms}
    decision = update(race.state, _common_cases(results, race.label))
    save_state(race.state, race.path)
    dropped = ", ".join(f"{d.arm} (p = {d.pvalue_race:.2g})" for d in decision.dropped) or "none"
    log.info("race %s, round %d: dropped %s; %s", race.label, decision.round, dropped, decision.status)
    floor = smallest_drop_pvalue(decision.n_cases, len(decision.alive))
    if race.state.status is RaceStatus.RUNNING and len(decision.alive) > 1 and floor >= decision.alpha_round:
        log.warning(
            "race %s: with %d paired scans and %d arms no arm can be dropped (the smallest Holm-corrected Wilcoxon "
            "p is %.3g, the round level %.3g); rounds that add seeds of the same scans cannot change that: give "
            "the setting more test scans, or run its arms without racing",
            race.label,
            decision.n_cases,
            len(decision.alive),
            floor,
            decision.alpha_round,
        )


def _case_values(cell: Cell, summary: Mapping[str, Any], metric: str, where: str) -> dict[str, float]:
    """``case/seed<k> -> value`` of a finished cell (mean over a case's labels, as the report pairs cases)."""
    from ..metrics.lesions import is_lesion_tally

    rows = [row for row in (summary.get("result") or {}).get("per_case") or [] if isinstance(row, Mapping)]
    if not rows or not any(metric in row for row in rows) or is_lesion_tally(metric):
        numbers = {k for row in rows for k, v in row.items() if k != "case" and _is_number(v)}
        found = sorted(k for k in numbers if not is_lesion_tally(k))
        raise ConfigError(
            f"{where}: race.metric: {metric!r} is not a per-case metric of cell {cell.id} (its per-case rows have: "
            f"{', '.join(found) or 'none'}); set race.metric to one of them"
        )
    values: dict[str, list[float]] = {}  # a case has one row per label in multi-class targets: their mean
    for row in rows:
        values.setdefault(f"{row.get('case')}/seed{cell.axes['seed']}", []).append(_float(row.get(metric)))
    return {case: _nanmean(v) for case, v in values.items()}


def _common_cases(results: dict[str, dict[str, float]], label: str) -> dict[str, dict[str, float]]:
    """The arms' values on the cases every arm was scored on (the grid tests every arm on the same cases)."""
    common = set.intersection(*(set(values) for values in results.values()))
    if not common:
        raise DataError(f"race {label}: the arms share no scored case; cannot pair them")
    extra = {arm: len(values) - len(common) for arm, values in results.items() if len(values) > len(common)}
    if extra:
        log.warning("race %s: cases not scored for every arm are left out: %s", label, extra)
    return {arm: {case: values[case] for case in common} for arm, values in results.items()}


def find_race_states(results_dir: str | Path) -> list[Path]:
    """The saved race states under a results root or one grid's folder (``<grid>/_race/**/*.json``)."""
    root = Path(results_dir)
    folders = [root / RACE_DIR, *sorted(root.glob(f"*/{RACE_DIR}"))]
    return [p for d in folders if d.is_dir() for p in sorted(d.rglob("*.json")) if not p.name.startswith(".")]


# --- status ----------------------------------------------------------------------------------------------------


def race_annotations(spec: GridSpec, cells: Sequence[Cell], results_root: str | Path) -> dict[str, tuple[str, str]]:
    """``cell id -> (status, detail)`` of the cells a saved race decided not to run (empty when none was raced)."""
    if not (Path(results_root) / spec.name / RACE_DIR).is_dir():
        return {}
    from .race import load_state

    plan = plan_race(spec, cells, results_root)
    out: dict[str, tuple[str, str]] = {}
    for race in plan.races:
        if race.path.is_file():
            state = load_state(race.path)
            if _saved_race_problem(race, state, *_race_setup(spec, race)) is None:  # else grid run refuses it
                race.state = state
                out.update(race.not_run())
    return out


def race_lines(races: Sequence[SettingRace], metric: str = "dice") -> list[str]:
    """One plain line per raced setting (with a saved round): its outcome and compute (see ``race_sentence``)."""
    from ..report.grouping import metric_name
    from .race import race_sentence, summarize_race

    metric = metric_name(metric)
    lines = []
    for race in races:
        if race.state is not None and race.state.rounds:
            sentence = race_sentence(summarize_race(race.state), metric).replace("**", "")
            lines.append(f"race {race.label}: {sentence}")
        if race.blocked:
            lines.append(f"race {race.label}: stopped in this run: {race.blocked}")
    return lines


def _outcome(state: RaceState) -> str:
    if state.status == "winner":
        return f"{state.alive[0]} won"
    if state.status == "equivalent":
        return f"{', '.join(state.alive)} equivalent"
    return "undecided, rounds spent"


def _plain(value: Any) -> str:
    from dataclasses import asdict, is_dataclass

    return str(asdict(value)) if is_dataclass(value) else str(value)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
