"""Racing on synthetic per-case results: error rates by simulation, a planted best arm, resuming after kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from medtransfer.errors import ConfigError, DataError
from medtransfer.experiments.race import (
    RaceConfig,
    RaceState,
    RaceStatus,
    load_state,
    new_race,
    race_sentence,
    save_state,
    summarize_race,
    update,
)
from medtransfer.report.stats import holm

ALPHA = 0.05
SRC = Path(__file__).resolve().parents[2] / "src"


def round_results(levels: dict[str, float], alive, rng, index: int, cases: int = 8, sd: float = 0.02) -> dict:
    """One round: per case a shared difficulty (cancels in pairs) plus each arm's level and its own noise."""
    difficulty = rng.uniform(0.6, 0.9, cases)
    return {
        arm: {f"r{index}/case{i}": float(difficulty[i] + levels[arm] + rng.normal(0, sd)) for i in range(cases)}
        for arm in alive
    }


def run_race(levels: dict[str, float], rng, *, rounds: int = 4, cases: int = 8, sd: float = 0.02) -> RaceState:
    state = new_race(list(levels), RaceConfig(max_rounds=rounds, alpha=ALPHA))
    for index in range(rounds):
        update(state, round_results(levels, state.alive, rng, index, cases, sd))
        if state.status is not RaceStatus.RUNNING:
            break
    return state


def dropped(state: RaceState) -> list[str]:
    return [d.arm for r in state.rounds for d in r.dropped]


def upper_rate(alpha: float, races: int) -> float:
    """alpha plus a one-sided 99 % binomial margin: a correct procedure fails this about once in 100 runs."""
    return alpha + 2.33 * math.sqrt(alpha * (1 - alpha) / races)


# --- error rates by simulation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_arms", [2, 4])
def test_aa_races_declare_a_difference_at_most_at_the_nominal_rate(n_arms):
    """Identical arms, different noise: any drop is a false declaration; over 400 races at most alpha of them."""
    rng = np.random.default_rng(n_arms)
    levels = {f"arm{i}": 0.0 for i in range(n_arms)}
    races = [run_race(levels, rng) for _ in range(400)]
    rate = np.mean([bool(dropped(s)) for s in races])
    assert rate <= upper_rate(ALPHA, 400)
    assert np.mean([s.status is RaceStatus.WINNER for s in races]) <= rate  # a winner needs drops


def test_two_equally_best_arms_are_kept_beside_worse_ones():
    """Partial null: the worse arms go, and a best arm is lost at most at about the nominal rate."""
    rng = np.random.default_rng(5)
    levels = {"a": 0.0, "b": 0.0, "c": -0.03, "d": -0.03}
    races = [run_race(levels, rng) for _ in range(300)]
    assert np.mean([bool({"a", "b"} & set(dropped(s))) for s in races]) <= upper_rate(ALPHA, 300)
    assert np.mean([{"c", "d"} <= set(dropped(s)) for s in races]) >= 0.9  # the worse arms are found


def test_a_planted_best_arm_wins_and_saves_compute():
    rng = np.random.default_rng(6)
    levels = {"scratch": 0.0, "full": 0.0, "first_k:1": 0.03, "last_k:1": 0.0}
    races = [run_race(levels, rng) for _ in range(100)]
    winners = [summarize_race(s).winner for s in races]
    assert winners.count("first_k:1") >= 95
    assert all("first_k:1" not in dropped(s) for s in races)
    spent = np.mean([s.cells_spent / s.cells_full for s in races])
    assert spent < 0.75  # losers stop early: well under the full grid


def test_equivalent_arms_stop_the_race_without_drops():
    rng = np.random.default_rng(7)
    state = run_race({"a": 0.0, "b": 0.0, "c": 0.0}, rng, rounds=4, cases=12, sd=0.002)
    assert state.status is RaceStatus.EQUIVALENT
    assert state.rounds_done < 4
    assert dropped(state) == []
    summary = summarize_race(state)
    assert summary.pvalue == pytest.approx(state.rounds[-1].equivalence_pvalue * 4)
    assert summary.pvalue < ALPHA
    assert "equivalent after" in race_sentence(summary)


# --- decisions, hand-checked -------------------------------------------------------------------------------------


def test_a_round_decision_is_friedman_then_holm_corrected_wilcoxon():
    rng = np.random.default_rng(8)
    base = rng.uniform(0.6, 0.9, 10)
    good = base + 0.05 + rng.normal(0, 0.01, 10)
    values = {"good": good, "ok": good + np.tile([0.01, -0.012], 5), "bad": base + rng.normal(0, 0.01, 10)}
    state = new_race(list(values), RaceConfig(max_rounds=2))
    decision = update(state, {arm: {f"c{i}": v[i] for i in range(10)} for arm, v in values.items()})
    assert decision.gate_pvalue == pytest.approx(stats.friedmanchisquare(*values.values()).pvalue)
    raw = [stats.wilcoxon(values["good"] - values[arm]).pvalue for arm in ("ok", "bad")]
    adjusted = holm(raw)
    assert adjusted[1] < 0.025 <= adjusted[0]  # alpha / max_rounds = 0.025: only "bad" goes
    (drop,) = decision.dropped
    assert (drop.arm, drop.best, drop.round, drop.n) == ("bad", "good", 1, 10)
    assert drop.pvalue == pytest.approx(raw[1])
    assert drop.pvalue_holm == pytest.approx(adjusted[1])
    assert drop.pvalue_race == pytest.approx(max(decision.gate_pvalue, adjusted[1]) * 2)
    assert drop.mean_diff == pytest.approx(np.mean(values["good"]) - np.mean(values["bad"]))
    assert state.alive == ["good", "ok"]
    assert state.cells_spent == 3


def test_summary_of_a_two_arm_race():
    d = np.array([0.03, 0.05, 0.04, 0.02, 0.06, 0.04, 0.05, 0.03])
    state = new_race(["full", "scratch"], RaceConfig(max_rounds=3))
    update(state, {"full": {f"c{i}": 0.8 + x for i, x in enumerate(d)}, "scratch": {f"c{i}": 0.8 for i in range(8)}})
    summary = summarize_race(state)
    assert (summary.status, summary.winner, summary.runner_up, summary.n) == (RaceStatus.WINNER, "full", "scratch", 8)
    half = stats.t.ppf(0.975, 7) * d.std(ddof=1) / math.sqrt(8)
    assert summary.margin == pytest.approx(d.mean())
    assert summary.ci == pytest.approx((d.mean() - half, d.mean() + half))
    assert summary.pvalue == pytest.approx(min(1.0, stats.wilcoxon(d).pvalue * 3))  # exact 2 / 2**8, times 3 rounds
    assert (summary.cells_spent, summary.cells_full) == (2, 6)
    assert race_sentence(summary) == (
        f"**full** won the race after 1 round: +0.040 Dice over scratch (95% CI {d.mean() - half:+.3f} to "
        f"{d.mean() + half:+.3f}; n = 8), race-adjusted p = 0.023; 2 of 6 cells (33% of the full grid). "
        "Dropped: scratch in round 1 (p = 0.023)."
    )


def test_budget_spent_is_undecided_and_nan_cases_are_left_out():
    state = new_race(["a", "b"], RaceConfig(max_rounds=1))
    update(state, {"a": {"c0": 0.5, "c1": math.nan, "c2": 0.7}, "b": {"c0": 0.4, "c1": 0.9, "c2": 0.6}})
    assert state.status is RaceStatus.BUDGET_SPENT
    assert state.rounds[-1].n_cases == 2  # c1 has no value for a
    summary = summarize_race(state)
    assert (summary.leader, summary.winner, summary.n) == ("a", None, 2)
    assert "undecided after 1 round (no rounds left)" in race_sentence(summary)
    assert json.loads(json.dumps(state.to_dict(), allow_nan=False))["scores"]["a"][1] is None  # strict JSON


# --- resuming ------------------------------------------------------------------------------------------------------


def test_a_race_resumed_from_json_takes_the_same_decisions():
    levels = {"a": 0.02, "b": 0.0, "c": 0.0, "d": -0.02}
    straight = run_race(levels, np.random.default_rng(9), rounds=5, cases=6)
    rng = np.random.default_rng(9)
    state = new_race(list(levels), RaceConfig(max_rounds=5, alpha=ALPHA))
    for index in range(5):
        results = round_results(levels, state.alive, rng, index, 6, 0.02)
        state = RaceState.from_dict(json.loads(json.dumps(state.to_dict(), allow_nan=False)))
        update(state, results)
        if state.status is not RaceStatus.RUNNING:
            break
    assert state.rounds == straight.rounds
    assert state.to_dict() == straight.to_dict()
    assert dropped(straight)  # the race did decide something


KILLED_RACE = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from medtransfer.experiments.race import RaceConfig, load_state, new_race, save_state, update

    path, kill_after = sys.argv[1], int(sys.argv[2])
    levels = {"a": 0.03, "b": 0.0, "c": 0.0}
    state = load_state(path) if os.path.exists(path) else new_race(list(levels), RaceConfig(max_rounds=4))
    while state.status == "running":
        index = state.rounds_done
        rng = np.random.default_rng(100 + index)  # round index -> the same cells' results on every run
        difficulty = rng.uniform(0.6, 0.9, 8)
        results = {
            arm: {f"r{index}/c{i}": float(difficulty[i] + levels[arm] + rng.normal(0, 0.02)) for i in range(8)}
            for arm in state.alive
        }
        update(state, results)
        save_state(state, path)
        if state.rounds_done == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_race_killed_with_sigkill_resumes_with_the_same_decisions(tmp_path, monkeypatch):
    def run_here(path: Path) -> None:  # the same script, in this process, to the end
        monkeypatch.setattr(sys, "argv", ["race", str(path), "0"])
        exec(KILLED_RACE, {"__name__": "race"})

    run_here(tmp_path / "straight.json")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILLED_RACE, str(tmp_path / "killed.json"), "1"]
    assert subprocess.run(command, env=env, timeout=120, check=False).returncode == -signal.SIGKILL
    assert load_state(tmp_path / "killed.json").rounds_done == 1
    run_here(tmp_path / "killed.json")
    straight, resumed = load_state(tmp_path / "straight.json"), load_state(tmp_path / "killed.json")
    assert resumed.rounds == straight.rounds
    assert resumed.status is RaceStatus.WINNER
    assert len(resumed.rounds) > 1  # the kill came before the end
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary file left behind


# --- bad input -------------------------------------------------------------------------------------------------------


def test_round_results_are_validated_and_dropped_arms_ignored():
    state = new_race(["a", "b", "c"], RaceConfig(max_rounds=2))
    good = {arm: {"c0": 0.5, "c1": 0.6} for arm in "abc"}
    with pytest.raises(ValueError, match=r"missing alive arms \['c'\]"):
        update(state, {"a": good["a"], "b": good["b"]})
    with pytest.raises(ValueError, match=r"unknown arms \['z'\]"):
        update(state, {**good, "z": good["a"]})
    with pytest.raises(ValueError, match="same non-empty case keys"):
        update(state, {**good, "c": {"c0": 0.5}})
    assert state.cases == []  # nothing half-added
    update(state, good)
    with pytest.raises(ValueError, match="already used"):
        update(state, good)
    state.alive = ["a", "b"]  # as if c had been dropped: its late results are ignored
    update(state, {arm: {"c2": 0.5, "c3": 0.4} for arm in "abc"})
    assert len(state.scores["c"]) == 2
    with pytest.raises(ValueError, match="the race is over"):
        update(state, {arm: {"c4": 0.5} for arm in "ab"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_rounds": 0}, "max_rounds must be an integer >= 1, got 0"),
        ({"max_rounds": 2, "alpha": 0.5}, r"alpha must lie in \(0, 0.5\), got 0.5"),
        ({"max_rounds": 2, "margin": -0.01}, "margin must be > 0"),
        ({"max_rounds": 2, "cells_per_round": 0}, "cells_per_round must be an integer >= 1"),
    ],
)
def test_race_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        RaceConfig(**options)


def test_new_race_needs_two_distinct_arms():
    with pytest.raises(ConfigError, match="at least two distinct arms"):
        new_race(["a", "a"], RaceConfig(max_rounds=1))


def test_a_corrupt_state_file_is_a_clear_error(tmp_path):
    path = tmp_path / "race.json"
    path.write_text('{"version": 1, "arms": ')
    with pytest.raises(DataError, match=r"race.json: not a readable race state .*start the race again"):
        load_state(path)
    save_state(new_race(["a", "b"], RaceConfig(max_rounds=1)), path)
    assert load_state(path).alive == ["a", "b"]


def test_a_lesion_tally_is_not_a_race_metric():
    from types import SimpleNamespace

    from medtransfer.errors import ConfigError
    from medtransfer.experiments.racing import _case_values

    rows = [{"case": "a", "dice": 0.5, "lesion_f1": 0.4, "lesion_tp": 2, "lesion_n_ref_lt0.03ml": 3}]
    cell = SimpleNamespace(id="t/cell", axes={"seed": 0})
    summary = {"result": {"per_case": rows}}
    assert _case_values(cell, summary, "lesion_f1", "g.yaml") == {"a/seed0": 0.4}
    with pytest.raises(ConfigError) as err:
        _case_values(cell, summary, "lesion_n_ref_lt0.03ml", "g.yaml")
    assert "(its per-case rows have: dice, lesion_f1)" in str(err.value)


def test_a_mean_lead_against_the_rank_shift_drops_nothing():
    """28 scans: full loses 0.01 on 25 and wins 0.3 on 3, so its mean is higher, and the Wilcoxon rejects in
    scratch's favour (the 25 smallest ranks).  The race does not drop scratch: the ranks do not favour the best mean."""
    d = np.array([-0.01] * 25 + [0.3] * 3)
    assert d.mean() > 0
    assert stats.wilcoxon(d).pvalue < 0.05 / 3
    state = new_race(["full", "scratch"], RaceConfig(max_rounds=3))
    decision = update(
        state, {"full": {f"c{i}": 0.7 + x for i, x in enumerate(d)}, "scratch": {f"c{i}": 0.7 for i in range(28)}}
    )
    assert decision.best == "full"
    assert decision.dropped == ()
    assert state.alive == ["full", "scratch"]
