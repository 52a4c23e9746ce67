from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medtransfer.report.stats import (
    adjust_pvalues,
    aggregate,
    align,
    benjamini_hochberg,
    best_counts,
    bootstrap_ci,
    count_wins,
    gap_closed,
    holm,
    paired_sign_test,
    paired_wilcoxon,
    pairwise_comparisons,
    pivot,
    sign_test,
    summarize,
    win_matrix,
)

# --- summaries --------------------------------------------------------------------------------------------


def test_summarize_hand_values_and_nan():
    s = summarize([1.0, 2.0, 6.0, np.nan])
    assert (s.n, s.n_missing) == (3, 1)
    assert s.mean == pytest.approx(3.0)
    assert s.median == pytest.approx(2.0)
    assert s.std == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))


@pytest.mark.parametrize(("values", "n"), [([], 0), ([np.nan], 0), ([0.5], 1)])
def test_summarize_small(values, n):
    s = summarize(values)
    assert s.n == n
    assert math.isnan(s.std)
    assert (math.isnan(s.mean) and n == 0) or s.mean == pytest.approx(0.5)


def test_aggregate_groups_rows():
    rows = [
        {"strategy": "full", "dice": 0.8},
        {"strategy": "full", "dice": 0.6},
        {"strategy": "first_k:2", "dice": 0.9},
        {"strategy": "first_k:2", "dice": None},
    ]
    out = aggregate(rows, "dice", by=("strategy",))
    assert out[("full",)].mean == pytest.approx(0.7)
    assert out[("first_k:2",)].n == 1
    assert out[("first_k:2",)].n_missing == 1


def test_pivot_and_align_pair_cases():
    rows = [
        {"strategy": "a", "case": 1, "dice": 0.1},
        {"strategy": "a", "case": 2, "dice": 0.2},
        {"strategy": "b", "case": 2, "dice": 0.5},
        {"strategy": "b", "case": 3, "dice": 0.6},
    ]
    keys, values = align(pivot(rows, "dice", "strategy", ("case",)))
    assert keys == [(2,)]
    assert values["a"].tolist() == [0.2]
    assert values["b"].tolist() == [0.5]
    with pytest.raises(ValueError, match="two rows"):
        pivot([*rows, rows[0]], "dice", "strategy", ("case",))


# --- paired tests ----------------------------------------------------------------------------------------


def test_wilcoxon_matches_scipy_on_random_pairs():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=20)
    b = a - 0.1 + 0.2 * rng.uniform(size=20)
    ours = paired_wilcoxon(a, b)
    ref = stats.wilcoxon(a - b)
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.pvalue == pytest.approx(ref.pvalue)
    assert ours.n == 20


def test_wilcoxon_hand_value_exact():
    # all 5 differences positive: W- = 0; exact two-sided p = 2 / 2**5
    res = paired_wilcoxon([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])
    assert res.statistic == 0.0
    assert res.pvalue == pytest.approx(2 / 32)


def test_wilcoxon_zero_differences_dropped_like_scipy():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    b = np.array([1.0, 1.5, 2.0, 4.0, 3.0, 8.0, 2.0])
    ours = paired_wilcoxon(a, b)
    ref = stats.wilcoxon(a - b, zero_method="wilcox")
    assert ours.n_ties == 2
    assert ours.pvalue == pytest.approx(ref.pvalue)


def test_wilcoxon_edge_cases():
    same = paired_wilcoxon([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same.pvalue, same.n, same.n_ties) == (1.0, 3, 3)
    empty = paired_wilcoxon([np.nan], [0.3])
    assert empty.n == 0
    assert math.isnan(empty.pvalue)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_wilcoxon([1, 2], [1])


def test_sign_test_hand_values():
    assert sign_test(9, 1) == pytest.approx(22 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2**10
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 0, alternative="greater") == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match=">= 0"):
        sign_test(-1, 2)


def test_paired_sign_test_ignores_ties():
    res = paired_sign_test([1, 2, 3, 4, 5], [0, 0, 0, 4, 9])
    assert (res.statistic, res.n, res.n_ties) == (3.0, 5, 1)
    assert res.pvalue == pytest.approx(stats.binomtest(3, 4).pvalue)


def test_count_wins_with_tolerance():
    w = count_wins([0.50, 0.60, 0.70, 0.40], [0.49, 0.50, 0.80, 0.40], tol=0.02)
    assert (w.wins, w.losses, w.ties) == (1, 1, 2)
    assert w.pvalue == pytest.approx(1.0)


def test_win_counts_over_thirty_domain_pairs():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.8, size=30)
    better = base + np.r_[np.full(25, 0.05), np.full(5, -0.05)]
    w = count_wins(better, base)
    assert (w.wins, w.losses, w.ties) == (25, 5, 0)
    assert w.pvalue == pytest.approx(2 * stats.binom.cdf(5, 30, 0.5))


# --- multiple comparisons -----------------------------------------------------------------------------------


def test_holm_and_bh_hand_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04 -> running min from the top
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_corrections_cap_at_one_keep_nan_and_validate():
    out = holm([0.6, np.nan, 0.5])
    assert out[0] == pytest.approx(1.0)
    assert out[2] == pytest.approx(1.0)
    assert math.isnan(out[1])
    assert benjamini_hochberg([0.02, np.nan]).tolist()[0] == pytest.approx(0.02)  # family of one
    assert adjust_pvalues([0.1, 0.2], "none").tolist() == [0.1, 0.2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])
    with pytest.raises(ValueError, match="bonferoni"):
        adjust_pvalues([0.1], "bonferoni")


def test_pairwise_comparisons_family():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.4, 0.6, size=15)
    scores = {"scratch": base, "full": base + 0.2, "first_k:2": base + 0.2 + 0.01 * rng.standard_normal(15)}
    comps = pairwise_comparisons(scores, correction="holm")
    assert [(c.a, c.b) for c in comps] == [("scratch", "full"), ("scratch", "first_k:2"), ("full", "first_k:2")]
    assert comps[0].mean_diff == pytest.approx(-0.2)
    assert [c.pvalue_adjusted for c in comps] == pytest.approx(holm([c.pvalue for c in comps]).tolist())
    signs = pairwise_comparisons(scores, test="sign", correction="bh")
    assert signs[0].statistic == 0.0  # scratch never beats full
    assert signs[0].pvalue == pytest.approx(2 / 2**15)


# --- bootstrap -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "scipy_method"), [("percentile", "percentile"), ("bca", "BCa")])
def test_bootstrap_matches_scipy(ours, scipy_method):
    x = np.random.default_rng(0).exponential(size=40)
    low, high = bootstrap_ci(x, method=ours, n_resamples=20000, seed=0)
    ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method=scipy_method, rng=1).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.02)
    assert high == pytest.approx(ref.high, abs=0.02)


def test_bootstrap_is_seeded_and_covers_the_mean():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(100):
        low, high = bootstrap_ci(rng.normal(1.0, 1.0, size=30), method="percentile", n_resamples=500)
        covered += low <= 1.0 <= high
    assert 85 <= covered <= 100  # nominal 95 %; binomial spread over 100 trials
    x = rng.normal(size=10)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([0.7]) == (0.7, 0.7)
    assert bootstrap_ci([0.3, 0.3, np.nan, 0.3]) == (0.3, 0.3)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def test_bootstrap_median_statistic():
    x = np.arange(21, dtype=float)
    low, high = bootstrap_ci(x, np.median, method="percentile")
    assert low < 10.0 < high


# --- gap closed ----------------------------------------------------------------------------------------------


def test_gap_closed_examples():
    assert gap_closed(0.75, 0.5, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.5, 0.5, 0.9) == pytest.approx(0.0)
    assert gap_closed(0.9, 0.5, 0.9) == pytest.approx(1.0)
    assert gap_closed(0.3, 0.5, 0.9) == pytest.approx(-0.5)  # worse than the baseline: kept, not clipped
    assert gap_closed(0.95, 0.5, 0.9) == pytest.approx(1.125)  # better than the oracle


def test_gap_closed_undefined_is_nan_never_inf():
    out = gap_closed([0.7, 0.7, np.nan, 0.7], [0.5, 0.5, 0.5, np.nan], [0.5, 0.4, 0.9, 0.9])
    assert np.isnan(out).all()  # no gap, negative gap, NaN fine-tuned, NaN baseline
    assert not np.isinf(out).any()
    assert gap_closed([0.6, 0.8], 0.5, 0.9) == pytest.approx([0.25, 0.75])  # broadcasting


def test_win_matrix_and_best_counts():
    scores = {"first": [0.8, 0.7, 0.9, np.nan], "all": [0.7, 0.7, 0.6, 0.5], "last": [0.9, 0.6, 0.5, 0.4]}
    m = win_matrix(scores)
    assert len(m) == 6
    assert (m["first", "all"].wins, m["first", "all"].losses, m["first", "all"].ties) == (2, 0, 1)
    assert (m["all", "first"].wins, m["all", "first"].losses) == (0, 2)
    assert m["first", "last"].pvalue == pytest.approx(sign_test(2, 1))
    assert best_counts(scores) == {"first": 2, "all": 1, "last": 1}  # the NaN position is left out
    assert best_counts(scores, tol=0.15) == {"first": 3, "all": 1, "last": 2}  # 0.8 and 0.6 now count
    assert best_counts({"a": [np.nan]}) == {"a": 0}


def test_float_noise_is_a_tie_and_a_constant_shift_has_no_d_z():
    """0.3 - 0.1 and 0.2 differ by 5.6e-17 in floats: the paired tests see a tie (scipy on the rounded
    differences), and a shift by 0.1 on every scan (which floats make 0.09999999999999998 / 0.10000000000000009)
    has SD 0, so d_z is undefined instead of ~1e15."""
    from scipy import stats as sps

    from medtransfer.report.equivalence import cohens_dz
    from medtransfer.report.stats import count_wins, paired_wilcoxon

    a = np.array([0.3, 0.5, 0.9, 0.7, 0.8, 0.35, 0.65])
    b = np.array([0.1 + 0.2, 0.4, 0.6, 0.75, 0.5, 0.3, 0.1])
    assert a[0] - b[0] != 0  # float noise
    wins = count_wins(a, b)
    assert (wins.wins, wins.losses, wins.ties) == (5, 1, 1)
    d = np.round(a - b, 12)
    expected = sps.wilcoxon(d[d != 0], zero_method="wilcox").pvalue
    assert paired_wilcoxon(a, b).pvalue == pytest.approx(expected)
    for base in ([0.2, 0.3, 0.5, 0.7, 0.9], [0.2, 0.3, 0.5], [0.11, 0.27, 0.33, 0.41, 0.58, 0.62, 0.93]):
        shifted = np.array(base) + 0.1
        assert np.ptp(shifted - np.array(base)) > 0  # not exactly constant in floats
        assert math.isnan(cohens_dz(shifted, base))
