"""Equivalence, power and effect sizes of paired comparisons (arm A vs arm B on the same cases).

"Is A better than B?" has three honest answers: yes (a significant difference), *practically the same* (a
significant equivalence within a margin), or *undecided* (neither; then: how many more paired cases would
decide?).  This module gives the second and third answers; :mod:`.stats` gives the first.

- **Equivalence** is a two one-sided test (TOST, Schuirmann 1987) at a margin ``m`` (default 0.01 Dice): A and
  B are called equivalent when both ``H0: delta <= -m`` and ``H0: delta >= +m`` are rejected at ``alpha``, i.e.
  when the ``(1 - 2 alpha)`` confidence interval of the difference lies inside ``(-m, +m)``.  Two versions:
  :func:`paired_ttost` (paired t, the mean difference; statsmodels' ``ttost_paired``) and
  :func:`paired_wilcoxon_tost` (two one-sided Wilcoxon signed-rank tests of the differences shifted by
  ``+-m``; it tests the pseudo-median, the centre of a symmetric difference distribution, with the
  Hodges-Lehmann estimate and its distribution-free interval).  :func:`paired_equivalence` requires *both*
  to reject: an intersection-union test, still of level ``alpha`` (Berger 1982), robust to skewed differences
  (which hurt the t version) and to asymmetry (which hurts the Wilcoxon version).
- **Power** is the paired t approximation from the per-case SD of the differences: the number of pairs at
  which a two-sided paired t-test detects a given mean difference (statsmodels' ``TTestPower``), and at which
  the paired TOST shows equivalence when the true difference is the observed one (the power of the TOST is
  bounded below by ``P(reject lower) + P(reject upper) - 1``, so the sample size is slightly conservative).
- **Effect sizes**: Cohen's ``d_z`` (mean / SD of the differences), the Hodges-Lehmann shift (median of the
  Walsh averages) and the matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` (Kerby 2014).

Pairs with a NaN on either side are dropped (as in :mod:`.stats`); higher is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from .stats import ArrayLike, _paired_differences

DEFAULT_MARGIN = 0.01
DEFAULT_POWER = 0.8
_ZERO = 1e-12  # shifted differences closer to 0 than this count as ties (float noise of d +- margin)
_MAX_N = 10**7


@dataclass(frozen=True)
class TostResult:
    """A two one-sided test of ``-margin < delta < margin``.

    Attributes:
        pvalue: the TOST p-value, the larger of the two one-sided p-values; equivalent when below alpha.
        p_lower: p-value of ``H0: delta <= -margin``.
        p_upper: p-value of ``H0: delta >= +margin``.
        estimate: the mean difference (t) or the Hodges-Lehmann estimate (Wilcoxon).
        ci: the ``(1 - 2 alpha)`` confidence interval of ``delta`` (inside ``+-margin`` when equivalent).
        n: number of complete pairs.
        margin: the equivalence margin.
        method: ``t`` or ``wilcoxon``.
    """

    pvalue: float
    p_lower: float
    p_upper: float
    estimate: float
    ci: tuple[float, float]
    n: int
    margin: float
    method: str


@dataclass(frozen=True)
class Contrast:
    """Everything the report says about A vs B on paired cases: difference, CI, equivalence, effect, power.

    Attributes:
        n: complete pairs.
        mean_diff: mean of ``a - b``; ``sd_diff`` its sample SD (ddof=1).
        ci: ``confidence`` (default 95 %) paired t interval of the mean difference.
        tost_t, tost_wilcoxon: the two TOSTs at ``margin``.
        equivalent: both TOSTs reject at ``alpha``.
        d_z: Cohen's d_z; ``hodges_lehmann``: the HL shift; ``rank_biserial``: matched-pairs rank-biserial r.
        n_detect: pairs the two-sided Wilcoxon signed-rank test (the report's) at ``alpha_detect`` needs to reject
            with ``power`` if the observed differences were the population (:func:`wilcoxon_sample_size`; None: no
            difference observed, fewer than two pairs, or beyond :data:`WILCOXON_MAX_N`).
        n_equivalent: pairs the paired TOST needs to show equivalence at ``margin`` with ``power`` if the true
            difference is ``mean_diff`` (None: ``|mean_diff| >= margin``, equivalence cannot be shown).
    """

    n: int
    mean_diff: float
    sd_diff: float
    ci: tuple[float, float]
    tost_t: TostResult
    tost_wilcoxon: TostResult
    alpha: float
    margin: float
    d_z: float
    hodges_lehmann: float
    rank_biserial: float
    n_detect: int | None
    n_equivalent: int | None
    alpha_detect: float
    power: float = DEFAULT_POWER

    @property
    def equivalent(self) -> bool:
        return self.tost_t.pvalue < self.alpha and self.tost_wilcoxon.pvalue < self.alpha

    @property
    def tost_pvalue(self) -> float:
        """p-value of the intersection-union test: the larger of the two TOST p-values."""
        return max(self.tost_t.pvalue, self.tost_wilcoxon.pvalue)


# --- equivalence -------------------------------------------------------------------------------------------------


def paired_ttost(a: ArrayLike, b: ArrayLike, margin: float = DEFAULT_MARGIN, *, alpha: float = 0.05) -> TostResult:
    """Paired t TOST of ``-margin < mean(a - b) < margin`` (statsmodels' ``ttost_paired(a, b, -m, m)``).

    With every difference equal (SD 0) the t statistics are infinite: p = 0 on the side the mean clears,
    1 on the other.  Fewer than two pairs give NaN.

    Example:
        >>> r = paired_ttost([0.80, 0.81, 0.79, 0.80], [0.80, 0.80, 0.80, 0.80], 0.02)
        >>> round(r.pvalue, 4), [round(x, 4) for x in r.ci]
        (0.0081, [-0.0096, 0.0096])
    """
    _check(margin, alpha)
    d = _paired_differences(a, b)
    n = int(d.size)
    if n < 2:
        return TostResult(math.nan, math.nan, math.nan, _mean(d), (math.nan, math.nan), n, margin, "t")
    mean, se, df = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n), n - 1
    if se == 0:
        p_lower, p_upper = float(mean <= -margin), float(mean >= margin)
    else:  # special.stdtr is the t CDF (what stats.t.cdf calls), without the distribution-object overhead
        p_lower = float(special.stdtr(df, -(mean + margin) / se))
        p_upper = float(special.stdtr(df, (mean - margin) / se))
    half = float(special.stdtrit(df, 1 - alpha)) * se
    return TostResult(max(p_lower, p_upper), p_lower, p_upper, mean, (mean - half, mean + half), n, margin, "t")


def paired_wilcoxon_tost(
    a: ArrayLike, b: ArrayLike, margin: float = DEFAULT_MARGIN, *, alpha: float = 0.05
) -> TostResult:
    """Wilcoxon TOST: signed-rank tests of ``d + margin > 0`` and ``d - margin < 0`` (``d = a - b``).

    Valid for the centre of a symmetric distribution of differences (the pseudo-median in general).  Shifted
    differences that are zero are dropped (``zero_method="wilcox"``, as :func:`.stats.paired_wilcoxon`); if
    all are, that side's p-value is 1.  The estimate is the Hodges-Lehmann shift, the interval the
    distribution-free ``(1 - 2 alpha)`` interval from the Walsh averages (infinite when n is too small for
    any bound, e.g. n <= 4 at alpha = 0.05).

    Example:
        >>> r = paired_wilcoxon_tost([0.5] * 6, [0.5] * 6, 0.01)  # six exact ties: p = 2**-6 on each side
        >>> r.pvalue, r.estimate
        (0.015625, 0.0)
    """
    _check(margin, alpha)
    d = _paired_differences(a, b)
    n = int(d.size)
    if n == 0:
        return TostResult(math.nan, math.nan, math.nan, math.nan, (math.nan, math.nan), 0, margin, "wilcoxon")
    p_lower = _signed_rank_pvalue(d + margin, "greater")
    p_upper = _signed_rank_pvalue(d - margin, "less")
    return TostResult(
        max(p_lower, p_upper), p_lower, p_upper, _hodges_lehmann(d), _walsh_ci(d, alpha), n, margin, "wilcoxon"
    )


def paired_equivalence(
    a: ArrayLike,
    b: ArrayLike,
    margin: float = DEFAULT_MARGIN,
    *,
    alpha: float = 0.05,
    alpha_detect: float | None = None,
    power: float = DEFAULT_POWER,
    confidence: float = 0.95,
) -> Contrast:
    """The :class:`Contrast` of A vs B: mean difference with CI, both TOSTs, effect sizes and sample sizes.

    Args:
        margin: equivalence margin in the metric's units (0.01 = one Dice point).
        alpha: level of each TOST (equivalence needs both below it).
        alpha_detect: level of the two-sided test whose sample size is asked (default ``alpha``; pass the
            Bonferroni share ``alpha / m`` of a family of ``m`` Holm-corrected tests).
        power: the power the sample sizes aim at.
        confidence: level of ``ci``.

    Example:
        >>> c = paired_equivalence([0.90, 0.92, 0.91, 0.93], [0.89, 0.90, 0.90, 0.91], 0.01)
        >>> round(c.mean_diff, 3), c.equivalent, c.n_detect
        (0.015, False, 4)
    """
    alpha_detect = alpha if alpha_detect is None else alpha_detect
    d = _paired_differences(a, b)
    mean, sd = _mean(d), float(d.std(ddof=1)) if d.size > 1 else math.nan
    return Contrast(
        n=int(d.size),
        mean_diff=mean,
        sd_diff=sd,
        ci=mean_ci(d, confidence),
        tost_t=paired_ttost(a, b, margin, alpha=alpha),
        tost_wilcoxon=paired_wilcoxon_tost(a, b, margin, alpha=alpha),
        alpha=alpha,
        margin=margin,
        d_z=cohens_dz(a, b),
        hodges_lehmann=hodges_lehmann(a, b),
        rank_biserial=rank_biserial(a, b),
        n_detect=wilcoxon_sample_size(d, alpha=alpha_detect, power=power),
        n_equivalent=sample_size_equivalence(mean, sd, margin, alpha=alpha, power=power),
        alpha_detect=alpha_detect,
        power=power,
    )


def mean_ci(d: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Paired t confidence interval of the mean of the differences ``d`` (NaN with fewer than two).

    Example:
        >>> [round(x, 4) for x in mean_ci([1.0, 2.0, 3.0])]  # 2 +- t(0.975, 2) * 1 / sqrt(3)
        [-0.4841, 4.4841]
    """
    x = np.asarray(d, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return float(x.mean()) - half, float(x.mean()) + half


# --- effect sizes ------------------------------------------------------------------------------------------------


def cohens_dz(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d_z: mean / SD (ddof=1) of the paired differences; NaN with fewer than two pairs or SD 0.

    Example:
        >>> cohens_dz([3.0, 4.0, 8.0], [1.0, 1.0, 1.0])  # d = 2, 3, 7: mean 4, SD sqrt(7)
        1.5118578920369088
    """
    d = _paired_differences(a, b)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    # every difference equal (a constant shift): the SD is 0 up to the float rounding of the mean, d_z undefined
    return float(d.mean()) / sd if sd > 1e-12 * max(1.0, abs(float(d.mean()))) else math.nan


def hodges_lehmann(a: ArrayLike, b: ArrayLike) -> float:
    """Hodges-Lehmann shift: the median of the Walsh averages ``(d_i + d_j) / 2, i <= j`` of ``d = a - b``.

    Example:
        >>> hodges_lehmann([1.0, 2.0, 10.0], [0.0, 0.0, 0.0])  # Walsh: 1, 1.5, 5.5, 2, 6, 10
        3.75
    """
    return _hodges_lehmann(_paired_differences(a, b))


def rank_biserial(a: ArrayLike, b: ArrayLike) -> float:
    """Matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` of ``d = a - b`` (zeros dropped).

    +1: every difference favours A; -1: every one favours B; NaN without a non-zero difference.

    Example:
        >>> rank_biserial([2.0, 3.0, 0.0], [1.0, 1.0, 3.0])  # d = 1, 2, -3: ranks 1, 2, 3 -> (3 - 3) / 6
        0.0
    """
    d = _paired_differences(a, b)
    d = d[d != 0]
    if d.size == 0:
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


# --- power -------------------------------------------------------------------------------------------------------


def paired_t_power(effect: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs at standardised effect ``effect`` (= d_z).

    Both tails count, as in statsmodels' ``TTestPower().power(effect, n, alpha)``.

    Example:
        >>> round(paired_t_power(0.5, 34), 4)
        0.8078
    """
    if n < 2:
        return math.nan
    df, nc = n - 1, effect * math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def tost_power(mean_diff: float, sd: float, n: int, margin: float, *, alpha: float = 0.05) -> float:
    """Lower bound of the paired t TOST's power, ``P(reject lower) + P(reject upper) - 1`` (clipped at 0).

    The two rejections are nearly disjoint failures, so the bound is tight once the power is useful (>= 0.5).
    """
    if n < 2 or not sd > 0:
        return math.nan
    df, root = n - 1, math.sqrt(n) / sd
    crit = float(stats.t.ppf(1 - alpha, df))
    lower = stats.nct.sf(crit, df, (mean_diff + margin) * root)
    upper = stats.nct.cdf(-crit, df, (mean_diff - margin) * root)
    return max(0.0, float(lower + upper - 1))


def sample_size_difference(
    mean_diff: float, sd: float, *, alpha: float = 0.05, power: float = DEFAULT_POWER
) -> int | None:
    """Smallest number of pairs (>= 2) at which a two-sided paired t-test detects ``mean_diff`` with ``power``.

    ``ceil`` of statsmodels' ``TTestPower().solve_power(mean_diff / sd, alpha=alpha, power=power)``.  None when
    there is nothing to detect (difference 0) or the SD is unknown (NaN, fewer than two pairs).  With SD 0
    and a non-zero difference, 2 pairs suffice.

    Example:
        >>> sample_size_difference(0.5, 1.0)  # d_z = 0.5, alpha 0.05, power 0.8
        34
    """
    if not (math.isfinite(mean_diff) and math.isfinite(sd)) or mean_diff == 0:
        return None
    if sd == 0:
        return 2
    effect = abs(mean_diff) / sd
    return _smallest_n(lambda n: paired_t_power(effect, n, alpha=alpha) >= power)


WILCOXON_RESAMPLES = 2000
WILCOXON_MAX_N = 2000


def wilcoxon_power(
    d: ArrayLike, n: int, *, alpha: float = 0.05, resamples: int = WILCOXON_RESAMPLES, seed: int = 0
) -> float:
    """Power of the two-sided Wilcoxon signed-rank test (zero differences dropped, as the report's) on ``n`` pairs
    if the observed paired differences ``d`` were the population: the share of ``resamples`` samples of ``n``
    differences drawn from ``d`` with replacement (zeros included) that reject at ``alpha``.

    Each sample's p-value is the normal approximation with mid-ranks (variance ``sum(r**2) / 4``, exact under
    ties) and a continuity correction, and never below ``2 / 2**k``, the smallest p any exact test on ``k``
    non-zero pairs can give: so 5 pairs can never reject at 0.05, whatever the effect.  Seeded per ``n``.

    Example:
        >>> round(wilcoxon_power([0.02] * 5 + [0.0] * 3, 8), 2)  # rejects iff >= 6 non-zero: P(Bin(8, 5/8) >= 6)
        0.37
    """
    x = np.asarray(d, dtype=float).ravel()
    x = np.round(x[np.isfinite(x)], 12)
    if x.size == 0 or n < 1:
        return math.nan
    rng = np.random.default_rng([seed, n])
    return float(np.mean(signed_rank_pvalues(x[rng.integers(0, x.size, size=(resamples, n))]) < alpha))


def signed_rank_pvalues(samples: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-value of each row of ``samples`` (paired differences; zeros dropped), as
    scipy's ``wilcoxon(row[row != 0], method="approx", correction=True)`` computes it (normal approximation, mid
    ranks, tie-corrected variance ``sum(r**2) / 4``, continuity correction), raised to ``2 / 2**k`` for ``k``
    non-zero differences, the smallest p an exact test can give; 1 for a row of zeros.  Vectorised over rows.
    """
    from scipy.stats import rankdata

    magnitude = np.abs(samples)
    zeros = (magnitude == 0).sum(axis=1, keepdims=True)
    ranks = np.where(magnitude > 0, rankdata(magnitude, axis=1) - zeros, 0.0)  # zeros rank lowest: drop them
    k = samples.shape[1] - zeros[:, 0]
    t_plus = np.where(samples > 0, ranks, 0.0).sum(axis=1)
    mean = k * (k + 1) / 4
    sd = np.sqrt((ranks**2).sum(axis=1) / 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, np.maximum(np.abs(t_plus - mean) - 0.5, 0) / np.where(sd > 0, sd, 1), 0.0)
    p = np.where(k > 0, np.minimum(1.0, 2 * stats.norm.sf(z)), 1.0)
    return np.maximum(p, np.minimum(1.0, 2.0 ** (1 - k.astype(float))))


def wilcoxon_sample_size(
    d: ArrayLike, *, alpha: float = 0.05, power: float = DEFAULT_POWER, resamples: int = WILCOXON_RESAMPLES
) -> int | None:
    """Smallest number of pairs at which the two-sided Wilcoxon signed-rank test rejects with ``power`` if the
    observed differences ``d`` were the population (:func:`wilcoxon_power`; zeros, ties and the exact test's
    smallest p included).  None when nothing is to be detected (mean difference 0, or no non-zero difference)
    or more than :data:`WILCOXON_MAX_N` pairs would be needed, or the rank test's shift (the Hodges-Lehmann
    estimate) does not point the mean's way (more cases would then show the other direction, if any).  The
    Wilcoxon test detects the shift of the differences' pseudo-median, not the mean.  Optimistic when the
    compared arm was chosen as the best on the same cases (the observed difference is then biased away from 0).

    Example:
        >>> wilcoxon_sample_size([0.02] * 5 + [0.0] * 3)  # P(Bin(n, 5/8) >= 6) >= 0.8 from n = 11
        11
    """
    x = np.asarray(d, dtype=float).ravel()
    x = np.round(x[np.isfinite(x)], 12)
    if x.size < 2 or not np.any(x != 0) or x.mean() == 0 or _hodges_lehmann(x) * x.mean() <= 0:
        return None

    return _smallest_n(lambda n: wilcoxon_power(x, n, alpha=alpha, resamples=resamples) >= power, WILCOXON_MAX_N)


def sample_size_equivalence(
    mean_diff: float, sd: float, margin: float, *, alpha: float = 0.05, power: float = DEFAULT_POWER
) -> int | None:
    """Smallest number of pairs at which the paired t TOST shows equivalence with ``power`` (see :func:`tost_power`).

    None when ``|mean_diff| >= margin`` (no sample size can show equivalence: the power tends to at most
    alpha) or the SD is unknown.

    Example:
        >>> sample_size_equivalence(0.0, 1.0, 0.5)  # delta 0, margin 0.5 SD
        36
    """
    if not (math.isfinite(mean_diff) and math.isfinite(sd)) or abs(mean_diff) >= margin:
        return None
    if sd == 0:
        return 2
    return _smallest_n(lambda n: tost_power(mean_diff, sd, n, margin, alpha=alpha) >= power)


# --- helpers -----------------------------------------------------------------------------------------------------


def _smallest_n(enough: Callable[[int], bool], limit: int = _MAX_N) -> int | None:
    """Smallest n >= 2 with ``enough(n)`` for a condition monotone in n: doubling, then bisection; None when
    ``enough(limit)`` fails."""
    high = 2
    while not enough(high):
        if high >= limit:
            return None
        high = min(2 * high, limit)
    low = high // 2  # not enough (or below 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if mid >= 2 and enough(mid) else (mid, high)
    return max(high, 2)


def _signed_rank_pvalue(x: np.ndarray, alternative: str) -> float:
    nonzero = x[np.abs(x) > _ZERO]
    if nonzero.size == 0:
        return 1.0
    return float(stats.wilcoxon(nonzero, alternative=alternative).pvalue)


def _walsh(d: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(d.size)
    return np.sort((d[i] + d[j]) / 2)


def _hodges_lehmann(d: np.ndarray) -> float:
    return float(np.median(_walsh(d))) if d.size else math.nan


def _walsh_ci(d: np.ndarray, alpha: float) -> tuple[float, float]:
    """``(1 - 2 alpha)`` interval ``[W_(c+1), W_(M-c)]``, c the largest with ``P0(T+ <= c) <= alpha``."""
    walsh = _walsh(d)
    c = _signed_rank_critical(d.size, alpha)
    if c < 0:
        return -math.inf, math.inf
    return float(walsh[c]), float(walsh[walsh.size - 1 - c])


def _signed_rank_critical(n: int, alpha: float) -> int:
    """Largest c with ``P(T+ <= c) <= alpha`` under H0 (exact up to n = 400, normal approximation beyond)."""
    if n > 400:
        mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        return int(math.floor(mean + sd * stats.norm.ppf(alpha) - 0.5))
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):  # counts[t] = number of sign patterns of ranks 1..k with T+ = t
        counts[k:] = counts[k:] + counts[:-k].copy()
    cdf = np.cumsum(counts) / 2.0**n
    return int(np.searchsorted(cdf, alpha, side="right")) - 1


def _check(margin: float, alpha: float) -> None:
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")


def _mean(d: np.ndarray) -> float:
    return float(d.mean()) if d.size else math.nan
