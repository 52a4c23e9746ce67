"""Racing: run a setting's arms in rounds and stop paying for the ones that are clearly losing (pure logic).

A *race* is one setting (target x budget [x domain pair]); its *arms* are the (source, strategy) pairs.  Each
*round* runs one more batch of cells for every arm still in the race (e.g. one more seed) and reports paired
per-case results: a *case key* is a (test case, seed) key ``scan/seed<k>`` that every arm was scored on.  After
each round :func:`update` compares the arms on all results so far and drops the ones significantly worse than the
current best.  The paired unit of every test is the held-out *scan*, as in the report: the keys of one scan (its
seeds) are averaged first (:func:`scan_of`), because an arm's score on a scan is partly fixed across seeds (how
well that arm suits that scan), so (scan, seed) keys are not independent; treated as units, they made an A/A race
drop an arm in 19 % of simulated races instead of at most ``alpha``.  A key without a ``/seed<k>`` suffix is a
scan of its own (rounds that add new scans).  The state is plain data (:class:`RaceState`), saved atomically
after each round (:func:`save_state`), so a race killed at any moment (``kill -9``) resumes where its last saved
round left it and takes the same decisions.

The procedure is F-race (Birattari et al. 2002) with paired Wilcoxon post-hoc tests and Bonferroni spending
over rounds.  At round ``r`` of at most ``R`` (the budget), with level ``alpha_r = alpha / R``:

1. *Gate*: with three or more arms alive, the Friedman test of "all alive arms are equal" on the cases (blocks)
   so far; nothing is dropped unless it rejects at ``alpha_r``.  With two arms the pairwise test is the gate.
2. *Post-hoc*: the current best (highest mean) against every other alive arm with the two-sided paired
   Wilcoxon signed-rank test, Holm-corrected over those comparisons; an arm is dropped when its corrected
   p-value is below ``alpha_r``.  Two-sided p-values, although only "worse" drops an arm, because the best
   arm is picked by the same data: for two equal arms, the better-looking one's one-sided p would be half
   the two-sided one and the error rate would double.

Why this procedure.  Each round is a new look at accumulating data, so the levels of the looks must add up to
at most ``alpha``; equal Bonferroni shares are valid whatever the dependence between looks (a rejection at
any round is a union of per-round events, each of probability at most ``alpha_r``) and need no model of the
test statistics' joint distribution, which rank tests do not have in closed form.  The price is
conservatism: a few looks (3-6 rounds) cost little, many would cost much.  *Weak* family-wise control is
exact: if all arms are equal (an A/A race), no arm is dropped before a Friedman test rejects, which happens
at round ``r`` with probability at most ``alpha_r``, so P(any drop) <= ``alpha`` (checked by simulation in
``tests/experiments/test_race.py``).  Under partial nulls (two equally best arms beside worse ones), the
post-hoc family compares a data-chosen best; this is F-race's known approximation, and the tests check by
simulation that a best arm is lost at most at about the nominal rate.  An anytime-valid alternative
(betting e-processes) needs bounded differences and, on Dice differences of 0.01 against a range of 1,
thousands of cases; a group-sequential boundary (Pocock, O'Brien-Fleming) needs the t statistics'
correlation, which rank tests on growing data do not give; F-race's rank tests are robust to the skewed,
bounded per-case Dice values the grids produce.

A race stops when (a) one arm is left (``winner``), (b) every pair of alive arms is equivalent within
``margin`` (paired t and Wilcoxon TOSTs both below ``alpha_r``: an intersection-union test, so no further
correction; ``equivalent``), or (c) the ``max_rounds`` budget is spent (``budget_spent``).  Equivalence
looks spend their own ``alpha / R`` per round.  :func:`summarize_race` reports the winner (or the leader),
its margin over the runner-up with a 95 % CI and the race-adjusted p-value, which arm was dropped at which
round with which p-value, and the cells spent against the full grid.

Example:
    >>> state = new_race(["full", "first_k:1"], RaceConfig(max_rounds=3))
    >>> decision = update(state, {"full": {"c0/s0": 0.9, "c1/s0": 0.8}, "first_k:1": {"c0/s0": 0.7, "c1/s0": 0.6}})
    >>> decision.status, state.rounds_done  # two cases cannot decide anything yet
    (<RaceStatus.RUNNING: 'running'>, 1)
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..errors import ConfigError, DataError
from ..report.equivalence import DEFAULT_MARGIN, hodges_lehmann, paired_equivalence, paired_ttost, paired_wilcoxon_tost
from ..report.stats import holm, paired_wilcoxon
from ..utils import write_json_atomic

STATE_VERSION = 1
_SEED_SUFFIX = re.compile(r"^(.+)/seed-?\d+$")


class RaceStatus(enum.StrEnum):
    """Where a race stands."""

    RUNNING = "running"
    WINNER = "winner"
    EQUIVALENT = "equivalent"
    BUDGET_SPENT = "budget_spent"


@dataclass(frozen=True)
class RaceConfig:
    """How a race decides.

    Attributes:
        max_rounds: the budget: at most this many rounds (each spends ``alpha / max_rounds``).
        alpha: family-wise error rate over the whole race (drops; and, separately, the equivalence stop).
        margin: equivalence margin in the metric's units (0.01 = one Dice point).
        cells_per_round: cells each alive arm runs per round (e.g. 1: one more seed), for the compute count.
    """

    max_rounds: int
    alpha: float = 0.05
    margin: float = DEFAULT_MARGIN
    cells_per_round: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.max_rounds, int) and self.max_rounds >= 1):
            raise ConfigError(f"race max_rounds must be an integer >= 1, got {self.max_rounds!r}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"race alpha must lie in (0, 0.5), got {self.alpha!r}")
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ConfigError(f"race margin must be > 0 (in the metric's units, e.g. 0.01 Dice), got {self.margin!r}")
        if not (isinstance(self.cells_per_round, int) and self.cells_per_round >= 1):
            raise ConfigError(f"race cells_per_round must be an integer >= 1, got {self.cells_per_round!r}")

    @property
    def alpha_round(self) -> float:
        """The level of each round's look: ``alpha / max_rounds``."""
        return self.alpha / self.max_rounds


@dataclass(frozen=True)
class Drop:
    """An arm dropped at ``round``: worse than ``best`` by ``mean_diff`` on ``n`` held-out scans (seeds averaged).

    ``pvalue`` is the raw two-sided paired Wilcoxon p-value, ``pvalue_holm`` the Holm-corrected one within the
    round, ``gate_pvalue`` the round's Friedman p-value (None with two arms), and ``pvalue_race`` the
    race-adjusted ``max(gate, Holm) * max_rounds`` (capped at 1): it is below ``alpha`` exactly when the arm is
    dropped, so it compares with ``alpha`` directly.
    """

    arm: str
    round: int
    best: str
    n: int
    mean_diff: float
    pvalue: float
    pvalue_holm: float
    gate_pvalue: float | None
    pvalue_race: float


@dataclass(frozen=True)
class RoundDecision:
    """What one round decided: the arms it dropped, the arms left and the race's status after it.

    ``n_cases`` is the number of paired units the round's tests used: held-out scans, seeds averaged.

    ``equivalence_pvalue`` is the largest TOST p-value over the pairs of arms left (None with one arm; the
    t TOSTs' largest when one of them already fails, see :func:`_equivalence_pvalue`).
    """

    round: int
    n_cases: int
    alpha_round: float
    best: str
    gate_pvalue: float | None
    dropped: tuple[Drop, ...]
    alive: tuple[str, ...]
    equivalence_pvalue: float | None
    status: RaceStatus


@dataclass
class RaceState:
    """A race as plain data: arms, every case's scores so far, the rounds' decisions (JSON via :meth:`to_dict`).

    ``scores[arm][i]`` is the arm's value on ``cases[i]``; a dropped arm's list stops at its last round.
    ``meta`` is the caller's JSON-ready description of the race (e.g. the grid setting and its rounds' seeds),
    saved with it.
    """

    arms: list[str]
    config: RaceConfig
    alive: list[str]
    cases: list[str] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    rounds: list[RoundDecision] = field(default_factory=list)
    status: RaceStatus = RaceStatus.RUNNING
    cells_spent: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def rounds_done(self) -> int:
        return len(self.rounds)

    @property
    def cells_full(self) -> int:
        """Cells the full grid (every arm, every round) would run."""
        return len(self.arms) * self.config.max_rounds * self.config.cells_per_round

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (NaN scores as None)."""
        return {
            "version": STATE_VERSION,
            "arms": self.arms,
            "config": asdict(self.config),
            "alive": self.alive,
            "cases": self.cases,
            "scores": {arm: [v if math.isfinite(v) else None for v in vs] for arm, vs in self.scores.items()},
            "rounds": [_decision_dict(d) for d in self.rounds],
            "status": str(self.status),
            "cells_spent": self.cells_spent,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RaceState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"race state version {data.get('version')!r}, expected {STATE_VERSION}")
        scores = {arm: [math.nan if v is None else float(v) for v in vs] for arm, vs in data["scores"].items()}
        return cls(
            arms=list(data["arms"]),
            config=RaceConfig(**data["config"]),
            alive=list(data["alive"]),
            cases=list(data["cases"]),
            scores=scores,
            rounds=[_decision_from_dict(d) for d in data["rounds"]],
            status=RaceStatus(data["status"]),
            cells_spent=int(data["cells_spent"]),
            meta=dict(data.get("meta") or {}),
        )


def new_race(arms: Sequence[str], config: RaceConfig) -> RaceState:
    """A race of ``arms`` (at least two, distinct) that has not run a round yet."""
    arms = [str(a) for a in arms]
    if len(arms) < 2 or len(set(arms)) != len(arms):
        raise ConfigError(f"a race needs at least two distinct arms, got {arms}")
    return RaceState(arms=arms, config=config, alive=list(arms), scores={arm: [] for arm in arms})


def update(state: RaceState, round_results: Mapping[str, Mapping[str, float]]) -> RoundDecision:
    """Add one round of paired results to ``state`` (in place), drop the arms that lost, and return the decision.

    Args:
        state: the race; must still be running.
        round_results: arm -> {case key: metric value} for every alive arm, on the same new case keys (a key
            names a (test case, seed) pair, e.g. ``"case03/seed1"``; the keys of one scan are averaged into one
            paired unit before the tests, see :func:`scan_of`).  Results of arms already dropped (cells
            that were running when the arm was dropped) are ignored.  NaN values are kept but a case with NaN
            for an alive arm is left out of the tests.

    Raises:
        ValueError: the race is over, an arm is unknown or missing, the arms' case keys differ, or a case
            key was already used in an earlier round.
    """
    _add_round(state, round_results)
    config, index = state.config, state.rounds_done + 1
    before = list(state.alive)
    table = _complete_cases(state, before)
    best, gate, drops = _drops(state, table, index)
    state.alive = [arm for arm in before if arm not in {d.arm for d in drops}]
    state.cells_spent += len(before) * config.cells_per_round
    equivalence = _equivalence_pvalue({arm: table[arm] for arm in state.alive}, config)
    if len(state.alive) == 1:
        state.status = RaceStatus.WINNER
    elif equivalence is not None and equivalence < config.alpha_round:
        state.status = RaceStatus.EQUIVALENT
    elif index >= config.max_rounds:
        state.status = RaceStatus.BUDGET_SPENT
    n = len(next(iter(table.values()))) if table else 0
    decision = RoundDecision(
        index, n, config.alpha_round, best, gate, tuple(drops), tuple(state.alive), equivalence, state.status
    )
    state.rounds.append(decision)
    return decision


def _add_round(state: RaceState, round_results: Mapping[str, Mapping[str, float]]) -> None:
    if state.status is not RaceStatus.RUNNING:
        raise ValueError(f"the race is over ({state.status}) after {state.rounds_done} rounds; start a new one")
    unknown = sorted(set(round_results) - set(state.arms))
    missing = sorted(set(state.alive) - set(round_results))
    if unknown or missing:
        raise ValueError(f"round results: unknown arms {unknown}, missing alive arms {missing}")
    first = state.alive[0]
    cases = sorted(map(str, round_results[first]))
    for arm in state.alive:
        if not cases or set(map(str, round_results[arm])) != set(cases):
            got = sorted(map(str, round_results[arm]))
            raise ValueError(
                f"round results: every alive arm needs the same non-empty case keys; {arm!r} has {got[:5]} "
                f"({len(got)}), {first!r} has {cases[:5]} ({len(cases)})"
            )
    seen = set(cases) & set(state.cases)
    if seen:
        raise ValueError(f"round results: case keys already used in an earlier round: {sorted(seen)[:5]}")
    state.cases.extend(cases)
    for arm in state.alive:
        values = {str(k): v for k, v in round_results[arm].items()}
        state.scores[arm].extend(_as_float(values[c]) for c in cases)


def scan_of(case_key: str) -> str:
    """The held-out scan of a case key: ``"case03/seed1"`` -> ``"case03"``; a key without ``/seed<k>`` is a scan.

    Example:
        >>> scan_of("sub-07/seed2"), scan_of("r1/case4")
        ('sub-07', 'r1/case4')
    """
    match = _SEED_SUFFIX.match(str(case_key))
    return match.group(1) if match else str(case_key)


def _complete_cases(state: RaceState, arms: Sequence[str], upto: int | None = None) -> dict[str, np.ndarray]:
    """The arms' per-scan scores: over the case keys (of the first ``upto``) every arm has finite, seeds averaged.

    The paired unit is the held-out scan, as in the report: the keys ``scan/seed<k>`` of one scan are averaged
    (over the seeds every arm has for it) before any test, so a scan counts once however many rounds scored it.
    """
    cases = state.cases[:upto]
    table = {arm: np.asarray(state.scores[arm][: len(cases)], dtype=float) for arm in arms}
    if not table:
        return {}
    ok = np.all([np.isfinite(v) for v in table.values()], axis=0)
    scans: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        if ok[i]:
            scans.setdefault(scan_of(case), []).append(i)
    return {arm: np.array([v[idx].mean() for idx in scans.values()], dtype=float) for arm, v in table.items()}


def _drops(state: RaceState, table: dict[str, np.ndarray], index: int) -> tuple[str, float | None, list[Drop]]:
    """The round's best arm, its gate p-value, and the arms it drops (F-race: Friedman gate, Holm post-hoc)."""
    config, arms = state.config, list(table)
    means = {arm: float(v.mean()) if v.size else -math.inf for arm, v in table.items()}
    best = max(arms, key=lambda arm: (means[arm], -arms.index(arm)))
    n = int(table[best].size)
    gate = _friedman(table) if len(arms) >= 3 else None
    if n < 2 or (gate is not None and not gate < config.alpha_round):
        return best, gate, []
    others = [arm for arm in arms if arm != best]
    raw = [paired_wilcoxon(table[best], table[arm]).pvalue for arm in others]
    adjusted = holm(raw)
    drops = []
    for arm, p, p_holm in zip(others, raw, adjusted, strict=True):
        # the rank shift must favour the best arm too: a Wilcoxon rejection with a negative Hodges-Lehmann shift
        # favours the other arm on most scans, whatever a few large wins do to the means
        if p_holm < config.alpha_round and means[best] > means[arm] and hodges_lehmann(table[best], table[arm]) > 0:
            p_race = min(1.0, max(gate or 0.0, float(p_holm)) * config.max_rounds)
            diff = means[best] - means[arm]
            drops.append(Drop(arm, index, best, n, diff, float(p), float(p_holm), gate, p_race))
    return best, gate, drops


def smallest_drop_pvalue(n_scans: int, arms_alive: int) -> float:
    """The smallest Holm-corrected p-value a drop can have with ``n_scans`` paired scans and ``arms_alive`` arms:
    the exact two-sided Wilcoxon p of ``n`` pairs is at least ``2 / 2**n`` (every difference of one sign), and Holm
    multiplies the smallest of the ``arms_alive - 1`` comparisons with the best by their number.  At or above the
    round level nothing can be dropped, however large the differences: rounds that add seeds of the same scans
    (averaged per scan) cannot change that, only more scans can.

    Example:
        >>> round(smallest_drop_pvalue(7, 3), 4)  # 2 * 2 / 2**7, above 0.05 / 3
        0.0312
    """
    if n_scans < 1 or arms_alive < 2:
        return 1.0
    return min(1.0, (arms_alive - 1) * 2.0 ** (1 - n_scans))


def _friedman(table: dict[str, np.ndarray]) -> float:
    """Friedman p-value of "every arm equal" over the cases (blocks); 1 (no evidence) below 2 cases or no variation."""
    matrix = np.column_stack(list(table.values()))
    if matrix.shape[0] < 2 or np.all(matrix == matrix[:, :1]):
        return 1.0
    return float(stats.friedmanchisquare(*matrix.T).pvalue)


def _equivalence_pvalue(table: dict[str, np.ndarray], config: RaceConfig) -> float | None:
    """Largest TOST p-value (paired t and Wilcoxon) over every pair of arms left; None with one arm.

    The Wilcoxon TOSTs (the slow part) run only when every t TOST rejects; otherwise the largest t TOST
    p-value is returned: the equivalence fails either way.
    """
    pairs = list(itertools.combinations(table, 2))
    if not pairs:
        return None
    level, margin = config.alpha_round, config.margin
    worst = max(_nan_to_one(paired_ttost(table[a], table[b], margin, alpha=level).pvalue) for a, b in pairs)
    if worst >= level:
        return worst
    wilcoxon = (paired_wilcoxon_tost(table[a], table[b], margin, alpha=level).pvalue for a, b in pairs)
    return max(worst, *map(_nan_to_one, wilcoxon))


# --- summary ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaceSummary:
    """The outcome of a race.

    Attributes:
        status: how it ended (or ``running``).
        leader: the alive arm with the highest mean; ``winner`` is it only when the race has a winner.
        runner_up: the arm the margin is measured against: the second alive arm, or (one arm left) the arm
            dropped last, the best of its round.
        n: held-out scans the margin is measured on (both arms present; seeds averaged per scan).
        margin, ci: mean difference leader - runner-up and its 95 % paired t CI.
        pvalue: race-adjusted p-value of the decision: the runner-up's drop (winner), the equivalence TOST
            (equivalent), else the last round's post-hoc p-value against the runner-up, adjusted alike.
        drops: every drop in order.
        cells_spent, cells_full: compute spent vs the full grid.
    """

    status: RaceStatus
    leader: str
    runner_up: str | None
    n: int
    margin: float
    ci: tuple[float, float]
    pvalue: float
    drops: tuple[Drop, ...]
    rounds: int
    cells_spent: int
    cells_full: int

    @property
    def winner(self) -> str | None:
        return self.leader if self.status is RaceStatus.WINNER else None


def summarize_race(state: RaceState) -> RaceSummary:
    """The :class:`RaceSummary` of a race (after at least one round).

    Raises:
        ValueError: the race has not run a round.
    """
    if not state.rounds:
        raise ValueError("the race has not run a round yet")
    config, last = state.config, state.rounds[-1]
    drops = tuple(d for r in state.rounds for d in r.dropped)
    alive = _complete_cases(state, state.alive)
    means = {arm: float(v.mean()) if v.size else -math.inf for arm, v in alive.items()}
    ranked = sorted(state.alive, key=lambda arm: (-means[arm], state.arms.index(arm)))
    leader = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else _last_dropped(drops)
    contrast = None
    if runner_up is not None:  # a dropped runner-up has scores up to its last round: pair on those scans
        pair = _complete_cases(state, [leader, runner_up], upto=len(state.scores[runner_up]))
        contrast = paired_equivalence(pair[leader], pair[runner_up], config.margin)
    if state.status is RaceStatus.WINNER:
        pvalue = drops[-1].pvalue_race
    elif state.status is RaceStatus.EQUIVALENT:
        pvalue = min(1.0, (last.equivalence_pvalue or 0.0) * config.max_rounds)
    else:
        pvalue = _post_hoc_race_pvalue(alive, leader, runner_up, last.gate_pvalue, config)
    return RaceSummary(
        state.status,
        leader,
        runner_up,
        contrast.n if contrast else 0,
        contrast.mean_diff if contrast else math.nan,
        contrast.ci if contrast else (math.nan, math.nan),
        pvalue,
        drops,
        state.rounds_done,
        state.cells_spent,
        state.cells_full,
    )


def race_sentence(summary: RaceSummary, metric: str = "Dice") -> str:
    """One plain-language sentence of a race's outcome, with its compute against the full grid."""
    share = summary.cells_spent / summary.cells_full if summary.cells_full else math.nan
    compute = f"{summary.cells_spent} of {summary.cells_full} cells ({share:.0%} of the full grid)"
    dropped = "; ".join(f"{d.arm} in round {d.round} (p = {d.pvalue_race:.2g})" for d in summary.drops)
    dropped = f" Dropped: {dropped}." if dropped else ""
    if not summary.runner_up:
        margin = "no other arm"
    elif summary.n < 2 or not all(math.isfinite(x) for x in summary.ci):  # no spread to put a CI on
        too_few = f"95% CI — (too few paired scans, n = {summary.n})"
        margin = f"{summary.margin:+.3f} {metric} over {summary.runner_up} ({too_few})"
    else:
        margin = (
            f"{summary.margin:+.3f} {metric} over {summary.runner_up} (95% CI {summary.ci[0]:+.3f} to "
            f"{summary.ci[1]:+.3f}; n = {summary.n})"
        )
    rounds = f"{summary.rounds} round{'' if summary.rounds == 1 else 's'}"
    head = {
        RaceStatus.WINNER: f"**{summary.leader}** won the race after {rounds}: {margin}, "
        f"race-adjusted p = {summary.pvalue:.2g}",
        RaceStatus.EQUIVALENT: f"the arms left are equivalent after {rounds} (TOST, race-adjusted "
        f"p = {summary.pvalue:.2g}); **{summary.leader}** leads by {margin}",
        RaceStatus.BUDGET_SPENT: f"undecided after {rounds} (no rounds left): **{summary.leader}** leads by "
        f"{margin}, race-adjusted p = {summary.pvalue:.2g}",
        RaceStatus.RUNNING: f"running after {rounds}: **{summary.leader}** leads by {margin}",
    }[summary.status]
    return f"{head}; {compute}.{dropped}"


# --- persistence -------------------------------------------------------------------------------------------------


def save_state(state: RaceState, path: str | Path) -> None:
    """Write the race state as JSON, atomically (a reader sees the previous round's state or this one)."""
    write_json_atomic(path, state.to_dict())


def load_state(path: str | Path) -> RaceState:
    """Read a race state written by :func:`save_state`.

    Raises:
        DataError: the file cannot be read or is not a race state of this version.
    """
    path = Path(path)
    try:
        return RaceState.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
        raise DataError(
            f"{path}: not a readable race state ({err}); delete it to start the race again from round 1"
        ) from err


# --- helpers -----------------------------------------------------------------------------------------------------


def _post_hoc_race_pvalue(alive, leader, runner_up, gate, config: RaceConfig) -> float:
    if runner_up is None or runner_up not in alive or alive[leader].size < 2:
        return math.nan
    others = [arm for arm in alive if arm != leader]
    adjusted = holm([paired_wilcoxon(alive[leader], alive[arm]).pvalue for arm in others])
    p = float(adjusted[others.index(runner_up)])
    return min(1.0, max(gate or 0.0, p) * config.max_rounds)


def _last_dropped(drops: Sequence[Drop]) -> str | None:
    if not drops:
        return None
    last_round = [d for d in drops if d.round == drops[-1].round]
    return min(last_round, key=lambda d: d.mean_diff).arm


def _decision_dict(d: RoundDecision) -> dict[str, Any]:
    out = asdict(d)
    out["status"] = str(d.status)
    return out


def _decision_from_dict(data: Mapping[str, Any]) -> RoundDecision:
    fields = dict(data)
    fields["dropped"] = tuple(Drop(**drop) for drop in fields["dropped"])
    fields["alive"] = tuple(fields["alive"])
    fields["status"] = RaceStatus(fields["status"])
    return RoundDecision(**fields)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _nan_to_one(p: float) -> float:
    return 1.0 if not math.isfinite(p) else p
