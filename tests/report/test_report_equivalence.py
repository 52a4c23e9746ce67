"""Equivalence (TOST), power and effect sizes: against statsmodels, scipy and hand-worked values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from medtransfer.report.equivalence import (
    cohens_dz,
    hodges_lehmann,
    mean_ci,
    paired_equivalence,
    paired_t_power,
    paired_ttost,
    paired_wilcoxon_tost,
    rank_biserial,
    sample_size_difference,
    sample_size_equivalence,
    tost_power,
)

weightstats = pytest.importorskip("statsmodels.stats.weightstats")
power_module = pytest.importorskip("statsmodels.stats.power")

# --- paired t TOST -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "shift", "margin"), [(0, 0.0, 0.01), (1, 0.004, 0.01), (2, -0.02, 0.01), (3, 0, 0.2)])
def test_ttost_matches_statsmodels(seed, shift, margin):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.7, 0.9, size=15)
    b = a - shift + rng.normal(0, 0.01, size=15)
    ours = paired_ttost(a, b, margin)
    p, lower, upper = weightstats.ttost_paired(a, b, -margin, margin)
    assert ours.pvalue == pytest.approx(p, rel=1e-9)
    assert ours.p_lower == pytest.approx(lower[1], rel=1e-9)
    assert ours.p_upper == pytest.approx(upper[1], rel=1e-9)
    assert ours.n == 15


def test_ttost_hand_values():
    # d = 0, .01, -.01, 0: mean 0, SD sqrt(2e-4 / 3), SE = SD / 2; t = 0.02 / SE on 3 df
    r = paired_ttost([0.80, 0.81, 0.79, 0.80], [0.80] * 4, 0.02)
    se = math.sqrt(2e-4 / 3) / 2
    assert r.p_lower == pytest.approx(stats.t.sf(0.02 / se, 3))
    assert r.p_upper == pytest.approx(r.p_lower)  # symmetric around 0
    assert r.ci == pytest.approx((-stats.t.ppf(0.95, 3) * se, stats.t.ppf(0.95, 3) * se))
    assert r.pvalue < 0.05  # the 90 % CI (+-0.0096) lies inside +-0.02: equivalent
    assert paired_ttost([0.80, 0.81, 0.79, 0.80], [0.80] * 4, 0.005).pvalue > 0.05  # ... but not inside +-0.005


def test_ttost_degenerate():
    same = paired_ttost([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], 0.01)  # SD 0, mean 0: both sides clear
    assert (same.pvalue, same.ci) == (0.0, (0.0, 0.0))
    shifted = paired_ttost([0.6, 0.7], [0.5, 0.6], 0.01)  # SD 0, mean 0.1 beyond the margin
    assert (shifted.p_lower, shifted.p_upper) == (0.0, 1.0)
    assert math.isnan(paired_ttost([0.5], [0.4], 0.01).pvalue)
    with pytest.raises(ValueError, match="margin"):
        paired_ttost([0.5, 0.6], [0.5, 0.6], 0.0)
    with pytest.raises(ValueError, match="alpha"):
        paired_ttost([0.5, 0.6], [0.5, 0.6], 0.01, alpha=0.5)


# --- Wilcoxon TOST, Hodges-Lehmann ---------------------------------------------------------------------------------


def test_wilcoxon_tost_hand_values():
    # every |d| < margin: d + m all positive and d - m all negative; exact p = 1 / 2**5 on each side
    d = np.array([0.001, 0.002, -0.001, 0.003, 0.0])
    r = paired_wilcoxon_tost(d, np.zeros(5), 0.01)
    assert (r.p_lower, r.p_upper, r.pvalue) == pytest.approx((1 / 32, 1 / 32, 1 / 32))
    assert r.estimate == pytest.approx(0.001)  # Walsh averages' median
    ties = paired_wilcoxon_tost([0.5] * 6, [0.5] * 6, 0.01)
    assert ties.pvalue == pytest.approx(1 / 64)


def test_wilcoxon_tost_matches_scipy_on_shifted_differences():
    rng = np.random.default_rng(4)
    d = rng.normal(0.003, 0.01, size=25)
    r = paired_wilcoxon_tost(d, np.zeros(25), 0.01)
    assert r.p_lower == pytest.approx(stats.wilcoxon(d + 0.01, alternative="greater").pvalue)
    assert r.p_upper == pytest.approx(stats.wilcoxon(d - 0.01, alternative="less").pvalue)


def test_hodges_lehmann_interval_hand_worked():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.9, 0.4])
    walsh = sorted((x + y) / 2 for x, y in itertools.combinations_with_replacement(d, 2))
    assert len(walsh) == 21
    # n = 6, one-sided 0.05: P(T+ <= 2) = 4 / 64 <= 0.05 < P(T+ <= 3) = 6 / 64, so c = 2
    r = paired_wilcoxon_tost(d, np.zeros(6), 0.5)
    assert r.ci == pytest.approx((walsh[2], walsh[18]))
    assert r.estimate == pytest.approx(np.median(walsh))
    # too few pairs for any bound: P(T+ = 0) = 1 / 16 > 0.05 at n = 4
    assert paired_wilcoxon_tost(d[:4], np.zeros(4), 0.5).ci == (-math.inf, math.inf)


@pytest.mark.parametrize(("n", "expected"), [(10, 10), (20, 60), (30, 151)])
def test_signed_rank_critical_values_match_the_table(n, expected):
    from medtransfer.report.equivalence import _signed_rank_critical

    assert _signed_rank_critical(n, 0.05) == expected  # Hollander & Wolfe, one-sided 0.05


def test_wilcoxon_tost_interval_coverage():
    rng = np.random.default_rng(7)
    covered = sum(
        lo <= 0.2 <= hi
        for lo, hi in (paired_wilcoxon_tost(rng.laplace(0.2, 1.0, 12), np.zeros(12), 1.0).ci for _ in range(300))
    )
    assert 255 <= covered <= 290  # nominal 90 % (at least, discrete); binomial spread over 300


# --- effect sizes ------------------------------------------------------------------------------------------------


def test_effect_sizes_hand_values():
    assert cohens_dz([3.0, 4.0, 8.0], [1.0, 1.0, 1.0]) == pytest.approx(4 / math.sqrt(7))
    assert math.isnan(cohens_dz([1.0, 2.0], [0.0, 1.0]))  # SD 0
    assert hodges_lehmann([1.0, 2.0, 10.0], [0.0, 0.0, 0.0]) == pytest.approx(3.75)
    assert rank_biserial([2.0, 3.0, 0.0], [1.0, 1.0, 3.0]) == pytest.approx(0.0)
    assert rank_biserial([2.0, 3.0, 1.0], [1.0, 1.0, 1.0]) == pytest.approx(1.0)  # the zero is dropped
    assert math.isnan(rank_biserial([1.0], [1.0]))


def test_rank_biserial_from_scipys_signed_rank_statistic():
    rng = np.random.default_rng(2)
    d = rng.normal(0.1, 1.0, size=30)
    r_plus = stats.wilcoxon(d, alternative="greater").statistic  # the sum of positive ranks
    total = 30 * 31 / 2
    assert rank_biserial(d, np.zeros(30)) == pytest.approx(2 * r_plus / total - 1)


def test_mean_ci_hand_value():
    low, high = mean_ci([1.0, 2.0, 3.0, math.nan])  # mean 2, SD 1, n 3: 2 +- t(0.975, 2) / sqrt(3)
    assert (low, high) == pytest.approx((2 - 2.4841377, 2 + 2.4841377), abs=1e-6)
    assert all(math.isnan(x) for x in mean_ci([1.0]))


# --- power -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("effect", "n", "alpha"), [(0.5, 34, 0.05), (0.2, 50, 0.05), (1.2, 8, 0.01), (0.05, 3, 0.1)])
def test_power_matches_statsmodels(effect, n, alpha):
    ref = power_module.TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided")
    assert paired_t_power(effect, n, alpha=alpha) == pytest.approx(ref, rel=1e-7)


@pytest.mark.parametrize(("diff", "sd", "alpha"), [(0.5, 1.0, 0.05), (0.01, 0.05, 0.05), (0.03, 0.02, 0.0167)])
def test_sample_size_matches_statsmodels(diff, sd, alpha):
    ref = power_module.TTestPower().solve_power(effect_size=diff / sd, alpha=alpha, power=0.8)
    n = sample_size_difference(diff, sd, alpha=alpha)
    assert n == max(math.ceil(ref), 2)
    assert sample_size_difference(-diff, sd, alpha=alpha) == n  # the sign does not matter


def test_sample_size_hand_values_and_none():
    assert sample_size_difference(0.5, 1.0) == 34  # the textbook d = 0.5, 80 %: 34 pairs
    assert sample_size_difference(0.0, 1.0) is None  # nothing to detect
    assert sample_size_difference(0.1, math.nan) is None
    assert sample_size_difference(0.1, 0.0) == 2
    assert sample_size_equivalence(0.02, 0.01, 0.01) is None  # beyond the margin
    assert sample_size_equivalence(0.01, 0.01, 0.01) is None  # at the margin


def test_sample_size_equivalence_near_the_normal_approximation():
    # delta 0: n ~ ((z_0.95 + z_0.90) * sd / m)**2 = 34.3 by the normal approximation; the t version needs a bit more
    n = sample_size_equivalence(0.0, 1.0, 0.5)
    z = stats.norm.ppf(0.95) + stats.norm.ppf(0.90)
    assert math.ceil((z / 0.5) ** 2) <= n <= math.ceil((z / 0.5) ** 2) + 3
    assert tost_power(0.0, 1.0, n, 0.5) >= 0.8 > tost_power(0.0, 1.0, n - 1, 0.5)


@pytest.mark.parametrize(("diff", "sd", "margin"), [(0.0, 0.02, 0.01), (0.004, 0.015, 0.01)])
def test_equivalence_sample_size_by_simulation(diff, sd, margin):
    """At the returned n a simulated paired t TOST shows equivalence about 80 % of the time (not much more)."""
    n = sample_size_equivalence(diff, sd, margin)
    rng = np.random.default_rng(11)

    def simulated_power(size: int, reps: int = 4000) -> float:
        d = rng.normal(diff, sd, size=(reps, size))
        mean, se = d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(size)
        crit = stats.t.ppf(0.95, size - 1)
        return float(np.mean((mean - crit * se > -margin) & (mean + crit * se < margin)))

    assert 0.78 <= simulated_power(n) <= 0.86  # the bound P(L) + P(U) - 1 is at most slightly conservative
    assert simulated_power(int(n * 0.8)) < 0.8


def test_contrast_needs_both_tosts():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.7, 0.9, 40)
    close = paired_equivalence(base + rng.normal(0, 0.004, 40), base, 0.01)
    assert close.equivalent
    assert close.tost_pvalue == max(close.tost_t.pvalue, close.tost_wilcoxon.pvalue) < 0.05
    assert close.n_equivalent <= 40
    # one outlier case: the t TOST fails (the SD blows up) while the Wilcoxon TOST still holds
    outlier = base + rng.normal(0, 0.002, 40)
    outlier[0] += 0.5
    c = paired_equivalence(outlier, base, 0.01)
    assert c.tost_wilcoxon.pvalue < 0.05 <= c.tost_t.pvalue
    assert not c.equivalent
    assert c.alpha_detect == 0.05
    assert paired_equivalence(outlier, base, 0.01, alpha_detect=0.01).alpha_detect == 0.01


def test_wilcoxon_power_with_zero_differences_is_a_binomial_tail():
    """Five differences of +0.02 and three ties: a resample of n pairs rejects at 0.05 exactly when it holds >= 6
    non-zero ones (all positive: exact p = 2 / 2**k, 0.031 for k = 6, 0.0625 for k = 5), so the power at n is
    P(Bin(n, 5/8) >= 6): 0.37 at the 8 pairs observed, 0.81 from 11 pairs on."""
    from medtransfer.report.equivalence import wilcoxon_power, wilcoxon_sample_size

    d = [0.02] * 5 + [0.0] * 3
    for n in (8, 10, 12):
        assert wilcoxon_power(d, n) == pytest.approx(stats.binom.sf(5, n, 5 / 8), abs=0.03)
    assert wilcoxon_sample_size(d) in (11, 12)  # 0.806 at 11: Monte Carlo error may push it to 12


def test_no_number_of_five_pairs_can_reject():
    """Every difference equal: the exact two-sided p on k pairs is 2 / 2**k, so 5 pairs never reach 0.05 and 6 do."""
    from medtransfer.report.equivalence import wilcoxon_power, wilcoxon_sample_size

    assert wilcoxon_power([0.1] * 5, 5) == 0.0
    assert wilcoxon_power([0.1] * 5, 6) == 1.0
    assert wilcoxon_sample_size([0.1] * 5) == 6
    assert wilcoxon_sample_size([0.1] * 5, alpha=0.05 / 3) == 7  # 2 / 2**6 = 0.031, 2 / 2**7 = 0.0156 < 0.0167
    assert wilcoxon_sample_size([0.0, 0.0, 0.0]) is None
    assert wilcoxon_sample_size([0.1, -0.1]) is None  # mean 0: nothing to detect


def test_signed_rank_pvalues_are_scipys_normal_approximation_floored_at_the_exact_minimum():
    """Row by row against scipy's ``wilcoxon(..., method="approx", correction=True)`` (ties, zeros, both signs),
    and never below 2 / 2**k, the smallest p an exact test on k non-zero pairs can give."""
    from medtransfer.report.equivalence import signed_rank_pvalues

    rng = np.random.default_rng(4)
    values = np.array([0.05, 0.1, -0.02, 0.2, 0.0, 0.0, 0.15, 0.08, -0.1])
    samples = values[rng.integers(0, values.size, size=(60, 12))]
    samples[0] = [0.1] * 12
    ours = signed_rank_pvalues(samples)
    for row, p in zip(samples, ours, strict=True):
        nonzero = row[row != 0]
        expected = stats.wilcoxon(nonzero, method="approx", correction=True).pvalue
        assert p == pytest.approx(max(expected, 2.0 ** (1 - nonzero.size)), rel=1e-9)
    # five equal positive differences: the approximation says 0.037, but no exact test on 5 pairs goes below 1/16
    assert stats.wilcoxon([0.1] * 5, method="approx", correction=True).pvalue < 0.04
    assert signed_rank_pvalues(np.full((1, 5), 0.1))[0] == pytest.approx(0.0625)
    assert signed_rank_pvalues(np.zeros((1, 4)))[0] == 1.0
