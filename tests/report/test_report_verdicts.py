"""The verdict sentence of a setting: a significant winner, an equivalence, or undecided with what would decide."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medtransfer.report.comparisons import compare_all, compare_setting, equivalence_table, overall_sentence
from medtransfer.report.equivalence import sample_size_equivalence, wilcoxon_sample_size

power_module = pytest.importorskip("statsmodels.stats.power")
SETTING = {"target": "brain", "budget": "n3"}


def arm_rows(values: dict[str, np.ndarray], **setting) -> list[dict]:
    return [
        {**setting, "arm": arm, "case": f"c{i:02d}", "dice": float(v)}
        for arm, xs in values.items()
        for i, v in enumerate(xs)
    ]


def test_significant_win_states_its_margin_with_ci():
    base = np.linspace(0.6, 0.8, 10)
    diffs = np.array([0.05, 0.06, 0.04, 0.05, 0.07, 0.03, 0.05, 0.06, 0.04, 0.05])
    v = compare_setting(arm_rows({"full": base + diffs, "scratch": base}), "dice", SETTING)
    half = stats.t.ppf(0.975, 9) * diffs.std(ddof=1) / math.sqrt(10)
    sentence = v.sentence()
    assert "**the win is significant**" in sentence
    assert f"its margin over scratch is +{diffs.mean():.3f} Dice (95% CI +{diffs.mean() - half:.3f} to " in sentence
    assert f"d_z = {diffs.mean() / diffs.std(ddof=1):.2f})" in sentence


def test_equivalent_arms_are_said_to_be_equivalent():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.7, 0.9, 40)
    values = {"full": base + rng.normal(0, 0.004, 40), "first_k:1": base}
    v = compare_setting(arm_rows(values), "dice", SETTING, margin=0.01)
    assert not v.significant
    assert v.equivalent
    sentence = v.sentence()
    assert "**the difference is not significant** against first_k:1" in sentence
    assert "**they are equivalent** within ±0.01 Dice: vs first_k:1 difference" in sentence
    assert "do not single out" not in sentence
    # at a margin of 0.001 the same data are undecided
    tight = compare_setting(arm_rows(values), "dice", SETTING, margin=0.001)
    assert not tight.equivalent
    assert "**Undecided**" in tight.sentence()


def test_undecided_says_how_many_more_cases_would_decide():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.7, 0.9, 10)
    values = {"full": base + 0.01 + rng.normal(0, 0.04, 10), "first_k:1": base, "last_k:1": base - 0.002}
    v = compare_setting(arm_rows(values), "dice", SETTING)
    assert not v.significant
    assert not v.equivalent
    assert v.family_size == 3
    d = values["full"] - values["first_k:1"]
    # the Wilcoxon test decides, so its sample size is the resampled Wilcoxon one; on these near-normal differences
    # it lies near the paired t-test's (statsmodels) over the Wilcoxon's asymptotic relative efficiency 3/pi
    expected = wilcoxon_sample_size(d, alpha=0.05 / 3, power=0.8)
    t_test = power_module.TTestPower().solve_power(d.mean() / d.std(ddof=1), alpha=0.05 / 3, power=0.8)
    assert 0.85 * t_test / (3 / math.pi) <= expected <= 1.25 * t_test / (3 / math.pi)
    sentence = v.sentence()
    assert ": the data do not single out a winner yet. **Undecided**: about " in sentence
    assert f"about {expected - 10} more paired cases (n ≈ {expected} in all) would detect the observed difference" in (
        sentence
    )
    assert f"of +{d.mean():.3f} Dice against first_k:1 (Hodges-Lehmann shift +" in sentence
    assert "what the Wilcoxon test detects) at 80% power (two-sided Wilcoxon signed-rank test" in sentence
    assert sentence.endswith(".")


def test_undecided_equivalence_clause_counts_cases():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.7, 0.9, 12)
    noise = rng.normal(0, 0.03, 12)
    noise -= noise.mean() - 0.001  # mean difference 0.001: inside the margin, not yet shown equivalent
    v = compare_setting(arm_rows({"a": base + noise, "b": base}), "dice", SETTING)
    c = v.contrasts["b"]
    assert not v.equivalent
    expected = sample_size_equivalence(0.001, noise.std(ddof=1), 0.01)
    assert c.n_equivalent == expected
    assert (
        f"showing equivalence within ±0.01 (against b) would take about {expected - 12} more (n ≈ {expected};"
        in v.sentence()
    )


def test_no_difference_at_all_is_still_a_full_sentence():
    base = np.linspace(0.6, 0.8, 6)
    flip = np.array([0.01, -0.01, 0.02, -0.02, 0.03, -0.03])
    v = compare_setting(arm_rows({"a": base + flip, "b": base, "c": base - flip / 2 - 0.005}), "dice", SETTING)
    sentence = v.sentence()
    assert "**a** has the highest mean Dice (0.700 vs 0.700 for b" in sentence
    assert "against b the mean difference is +0.000 Dice, so no number of cases would show a difference" in sentence
    assert "showing equivalence within ±0.01 (against c) would take about" in sentence


def test_equivalence_table_and_overall_sentence():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.7, 0.9, 40)
    near = {"full": base + rng.normal(0, 0.004, 40), "first_k:1": base}
    far = {"full": base + 0.1, "first_k:1": base}
    rows = arm_rows(near, target="brain", budget="n1") + arm_rows(far, target="brain", budget="n3")
    verdicts = compare_all(rows, "dice")
    assert [v.equivalent for v in verdicts] == [True, False]
    assert overall_sentence(verdicts) == (
        "Over 2 settings (target x label budget): **full** won 2 (1 significantly); "
        "1 with the best arms equivalent (within the margin)."
    )
    table = equivalence_table(verdicts[0])
    assert table.header[:4] == ("best", "other", "n pairs", "Dice difference [95% CI]")
    ((best, other, n, *_, equivalent, n_power, n_equivalence),) = table.rows
    assert (best, other, n, equivalent) == ("full", "first_k:1", "40", "yes")
    assert n_equivalence == str(verdicts[0].contrasts["first_k:1"].n_equivalent)


def test_undecided_beyond_the_largest_size_and_against_the_rank_shift():
    """More than WILCOXON_MAX_N cases is said as such (not as "no number of cases"); a mean lead whose
    Hodges-Lehmann shift points the other way gets no Wilcoxon sample size, and the sentence says why."""
    from medtransfer.report.comparisons import _n_detect_cell
    from medtransfer.report.equivalence import WILCOXON_MAX_N, paired_equivalence

    d = [-0.0043, -0.0095, 0.006, -0.0047, -0.0176, 0.0004, 0.0192, 0.0121]  # mean +0.0002, HL +0.0005
    tiny = paired_equivalence(np.array(d), np.zeros(8))
    assert tiny.n_detect is None
    assert tiny.mean_diff > 0
    assert tiny.hodges_lehmann > 0
    assert _n_detect_cell(tiny) == f"> {WILCOXON_MAX_N}"
    skewed = paired_equivalence(np.array([-0.01] * 25 + [0.3] * 5), np.zeros(30))
    assert skewed.mean_diff > 0
    assert skewed.hodges_lehmann < 0
    assert skewed.n_detect is None
    assert _n_detect_cell(skewed) == "—"


def test_a_mean_lead_against_the_rank_shift_is_not_a_significant_win():
    """25 scans lost by 0.01 and 5 won by 0.3: full has the higher mean, and the Wilcoxon rejects -- in
    first_k:1's favour (Hodges-Lehmann -0.01).  That is no win for full; the sentence says whom the ranks favour."""
    rng = np.random.default_rng(2)
    base = rng.uniform(0.6, 0.8, 30)
    values = {"full": base + np.array([-0.01] * 25 + [0.3] * 5), "first_k:1": base}
    v = compare_setting(arm_rows(values), "dice", SETTING)
    assert v.winner == "full"
    assert v.versus("first_k:1")[1] < 0.05
    assert not v.significant
    sentence = v.sentence()
    assert "**the win is significant**" not in sentence
    assert (
        "(the rank shift, Hodges-Lehmann -0.010, favours first_k:1: the mean lead comes from a few scans)" in sentence
    )


def test_lower_is_better_metric_names_the_lowest_mean_the_winner():
    base = np.linspace(10.0, 20.0, 10)
    diffs = np.array([2.0, 3.0, 2.5, 2.0, 3.5, 1.5, 2.0, 3.0, 2.5, 2.0])
    rows = [
        {**SETTING, "arm": arm, "case": f"c{i:02d}", "hd95": float(v)}
        for arm, xs in {"close": base, "far": base + diffs}.items()
        for i, v in enumerate(xs)
    ]
    v = compare_setting(rows, "hd95", SETTING)
    assert v.winner == "close"
    assert v.significant
    sentence = v.sentence()
    assert "**close** has the lowest mean HD95" in sentence
    assert "highest" not in sentence
    assert f"its margin over far is -{diffs.mean():.3f} HD95" in sentence


def test_lower_is_better_is_one_definition():
    from medtransfer.report.grouping import axis_label, direction, lower_is_better

    assert lower_is_better("hd95")
    assert lower_is_better("assd")
    assert lower_is_better("lesion_fp")
    assert not lower_is_better("dice")
    assert not lower_is_better("lesion_f1")
    assert direction("hd95") == -1.0
    assert direction("dice") == 1.0
    assert axis_label("hd95") == "HD95 (mm)"
    assert axis_label("dice") == "Dice"


def test_an_arm_without_any_finite_value_is_left_out_and_named():
    base = np.linspace(0.6, 0.8, 10)
    rows = arm_rows({"first": base + 0.05, "last": base, "full": np.full(10, np.nan)}, **SETTING)
    v = compare_setting(rows, "dice", SETTING)
    assert v.unscored == ("full",)
    assert set(v.means) == {"first", "last"}
    assert v.n == 10
    sentence = v.sentence()
    assert "no case has results for every strategy" not in sentence
    assert "no run is common" not in sentence
    assert "**first** has the highest mean Dice" in sentence
    assert "Left out of the comparison: full: no finite Dice on any scan." in sentence


def test_every_arm_without_a_finite_value_says_so():
    rows = arm_rows({"a": np.full(3, np.nan), "b": np.full(3, np.nan)}, **SETTING)
    sentence = compare_setting(rows, "dice", SETTING).sentence()
    assert "no strategy has a finite Dice on any scan" in sentence
    assert "a: no finite Dice on any scan; b: no finite Dice on any scan" in sentence


def test_a_strategy_name_with_markup_is_literal_in_the_sentence():
    from medtransfer.report.html import text

    base = np.linspace(0.6, 0.8, 10)
    rows = arm_rows({"a**b**c": base + 0.05, "<i>x</i>": base}, **SETTING)
    v = compare_setting(rows, "dice", SETTING)
    sentence = v.sentence()
    assert "**a\\*\\*b\\*\\*c** has the highest mean Dice" in sentence
    assert "\\<i>x\\</i>" in sentence
    assert text(sentence).startswith("<strong>brain, n3</strong>: <strong>a**b**c</strong> has the highest")
    assert "&lt;i&gt;x&lt;/i&gt;" in text(sentence)
    assert "**a\\*\\*b\\*\\*c** won" in overall_sentence([v, v])
