"""Statistics of the report: summaries, paired tests, multiple-comparison correction, bootstrap CIs, gap closed.

Pure functions on numbers (numpy/scipy only).  Conventions:

- Missing values are NaN.  Summaries ignore them (and count them in ``n_missing``); paired tests drop every pair
  with a NaN on either side, so ``n`` is the number of complete pairs.
- Higher is better for every metric passed here (negate distances such as HD95 before comparing).
- A test with no usable pair returns NaN statistic and p-value; a test where every pair is tied (all
  differences zero) returns p = 1: the data show no difference at all.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


class Correction(enum.StrEnum):
    """Multiple-comparison corrections: Holm (family-wise error), Benjamini-Hochberg (false discovery rate)."""

    HOLM = "holm"
    BH = "bh"
    NONE = "none"


class PairedTest(enum.StrEnum):
    """Paired tests between two strategies on the same cases (or domain pairs)."""

    WILCOXON = "wilcoxon"
    SIGN = "sign"


class BootstrapMethod(enum.StrEnum):
    """Bootstrap confidence intervals: plain percentile, or bias-corrected and accelerated (Efron 1987)."""

    PERCENTILE = "percentile"
    BCA = "bca"


@dataclass(frozen=True)
class Summary:
    """Mean, median and sample standard deviation (ddof=1; NaN when n < 2) of the ``n`` finite values."""

    n: int
    mean: float
    median: float
    std: float
    n_missing: int = 0


@dataclass(frozen=True)
class TestResult:
    """A paired test: ``statistic``, two-sided (or as asked) ``pvalue``, ``n`` complete pairs, ``n_ties``."""

    statistic: float
    pvalue: float
    n: int
    n_ties: int = 0
    method: str = ""


@dataclass(frozen=True)
class WinCount:
    """How often A beat B (over domain pairs, cases, ...), with the two-sided sign test of wins vs losses."""

    wins: int
    losses: int
    ties: int
    pvalue: float


@dataclass(frozen=True)
class Comparison:
    """One pairwise comparison of a family: ``a`` vs ``b``, mean of (a - b), raw and adjusted p-values."""

    a: str
    b: str
    n: int
    mean_diff: float
    statistic: float
    pvalue: float
    pvalue_adjusted: float


def summarize(values: ArrayLike) -> Summary:
    """Summary of one cell's per-case values (NaNs ignored and counted).

    Example:
        >>> summarize([1.0, 2.0, 6.0, float("nan")])
        Summary(n=3, mean=3.0, median=2.0, std=2.6457513110645907, n_missing=1)
    """
    x = np.asarray(values, dtype=float).ravel()
    finite = x[np.isfinite(x)]
    n = int(finite.size)
    if n == 0:
        return Summary(0, np.nan, np.nan, np.nan, int(x.size))
    std = float(np.std(finite, ddof=1)) if n > 1 else np.nan
    return Summary(n, float(np.mean(finite)), float(np.median(finite)), std, int(x.size - n))


def aggregate(rows: Iterable[Mapping[str, Any]], metric: str, by: Sequence[str]) -> dict[tuple, Summary]:
    """Summaries of ``metric`` per group of rows (e.g. ``by=("strategy", "budget")`` on per-case rows)."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(_as_float(row.get(metric)))
    return {key: summarize(values) for key, values in groups.items()}


def pivot(
    rows: Iterable[Mapping[str, Any]], metric: str, column: str, index: Sequence[str]
) -> dict[Any, dict[tuple, float]]:
    """``{column value: {index tuple: metric}}``, e.g. per strategy, the Dice of each (case, seed).

    Raises:
        ValueError: two rows share a column value and an index (the index does not identify a row).
    """
    table: dict[Any, dict[tuple, float]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in index)
        cells = table.setdefault(row.get(column), {})
        if key in cells:
            raise ValueError(f"two rows with {column}={row.get(column)!r} and {dict(zip(index, key, strict=True))}")
        cells[key] = _as_float(row.get(metric))
    return table


def align(table: Mapping[Any, Mapping[Hashable, float]]) -> tuple[list, dict[Any, np.ndarray]]:
    """The keys present in every column of a :func:`pivot` table and each column's values on them, in order."""
    columns = list(table.values())
    common = set(columns[0]) if columns else set()
    for column in columns[1:]:
        common &= set(column)
    keys = sorted(common, key=repr)
    return keys, {name: np.array([values[k] for k in keys], dtype=float) for name, values in table.items()}


def paired_wilcoxon(a: ArrayLike, b: ArrayLike, *, alternative: str = "two-sided") -> TestResult:
    """Wilcoxon signed-rank test of ``a - b`` (scipy's, zero differences dropped: ``zero_method="wilcox"``)."""
    d = _paired_differences(a, b)
    nonzero = d[d != 0]
    if d.size == 0:
        return TestResult(np.nan, np.nan, 0, 0, "wilcoxon")
    if nonzero.size == 0:
        return TestResult(0.0, 1.0, int(d.size), int(d.size), "wilcoxon")
    res = stats.wilcoxon(d, zero_method="wilcox", alternative=alternative)
    return TestResult(float(res.statistic), float(res.pvalue), int(d.size), int(d.size - nonzero.size), "wilcoxon")


def sign_test(wins: int, losses: int, *, alternative: str = "two-sided") -> float:
    """P-value of the exact binomial sign test of ``wins`` against ``losses`` (ties left out; 1 if none).

    Example:
        >>> round(sign_test(9, 1), 6)  # 2 * (1 + 10) / 2**10
        0.021484
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got {wins}, {losses}")
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5, alternative=alternative).pvalue)


def paired_sign_test(a: ArrayLike, b: ArrayLike, *, alternative: str = "two-sided") -> TestResult:
    """Sign test of ``a`` vs ``b``: statistic = number of pairs where a > b; ties (a == b) are left out."""
    wins = count_wins(a, b)
    p = sign_test(wins.wins, wins.losses, alternative=alternative)
    n = wins.wins + wins.losses + wins.ties
    return TestResult(float(wins.wins), p if n else np.nan, n, wins.ties, "sign")


def count_wins(a: ArrayLike, b: ArrayLike, *, tol: float = 0.0) -> WinCount:
    """Wins (a > b + tol), losses (a < b - tol) and ties of A vs B over paired values, with the sign test."""
    d = _paired_differences(a, b)
    wins, losses = int(np.sum(d > tol)), int(np.sum(d < -tol))
    return WinCount(wins, losses, int(d.size - wins - losses), sign_test(wins, losses))


def win_matrix(scores: Mapping[str, ArrayLike], *, tol: float = 0.0) -> dict[tuple[str, str], WinCount]:
    """:func:`count_wins` of every ordered pair of strategies over aligned values (e.g. the 30 domain pairs).

    Example:
        >>> m = win_matrix({"first": [0.8, 0.7, 0.9], "all": [0.7, 0.7, 0.6]})
        >>> (m["first", "all"].wins, m["first", "all"].ties, m["all", "first"].losses)
        (2, 1, 2)
    """
    return {(a, b): count_wins(scores[a], scores[b], tol=tol) for a, b in itertools.permutations(scores, 2)}


def best_counts(scores: Mapping[str, ArrayLike], *, tol: float = 0.0) -> dict[str, int]:
    """How many positions (cases, domain pairs) each strategy is best at, within ``tol`` of the best.

    Tied strategies are all credited; positions where any strategy is NaN are left out.

    Example:
        >>> best_counts({"first": [0.8, 0.7, 0.9], "all": [0.7, 0.7, 0.6]})
        {'first': 3, 'all': 1}
    """
    names = list(scores)
    table = np.vstack([np.asarray(scores[n], dtype=float).ravel() for n in names])
    table = table[:, np.isfinite(table).all(axis=0)]
    if table.size == 0:
        return dict.fromkeys(names, 0)
    best = table >= table.max(axis=0, keepdims=True) - tol
    return {n: int(c) for n, c in zip(names, best.sum(axis=1), strict=True)}


def adjust_pvalues(pvalues: ArrayLike, method: str = Correction.HOLM) -> np.ndarray:
    """Adjusted p-values for a family of tests; NaNs stay NaN and do not count in the family size."""
    method = Correction(method)
    if method is Correction.HOLM:
        return holm(pvalues)
    if method is Correction.BH:
        return benjamini_hochberg(pvalues)
    return np.asarray(pvalues, dtype=float).copy()


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i + 1), running max, capped at 1.

    Example:
        >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
        [0.03, 0.06, 0.06, 0.02]
    """
    p, ok = _finite_pvalues(pvalues)
    m = ok.sum()
    order = np.argsort(p[ok])
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[ok][order])
    out = np.full(p.shape, np.nan)
    out[np.flatnonzero(ok)[order]] = np.maximum.accumulate(scaled)
    return out


def benjamini_hochberg(pvalues: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg: the i-th smallest of m p-values times m / i, running min from the top, capped at 1.

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
        [0.02, 0.04, 0.04, 0.02]
    """
    p, ok = _finite_pvalues(pvalues)
    m = ok.sum()
    order = np.argsort(p[ok])
    scaled = np.minimum(1.0, p[ok][order] * m / np.arange(1, m + 1))
    out = np.full(p.shape, np.nan)
    out[np.flatnonzero(ok)[order]] = np.minimum.accumulate(scaled[::-1])[::-1]
    return out


def pairwise_comparisons(
    scores: Mapping[str, ArrayLike], *, test: str = PairedTest.WILCOXON, correction: str = Correction.HOLM
) -> list[Comparison]:
    """Every pair of strategies compared on paired values (same cases, same order), p-values corrected as one family.

    Args:
        scores: strategy -> per-case (or per-domain-pair) values, aligned (see :func:`align`).
        test: ``wilcoxon`` (signed-rank) or ``sign``.
        correction: ``holm``, ``bh`` or ``none``.
    """
    pairs = [(a, b, scores[a], scores[b]) for a, b in itertools.combinations(scores, 2)]
    return compare_pairs(pairs, test=test, correction=correction)


def compare_pairs(
    pairs: Sequence[tuple[str, str, ArrayLike, ArrayLike]],
    *,
    test: str = PairedTest.WILCOXON,
    correction: str = Correction.HOLM,
) -> list[Comparison]:
    """Pairwise comparisons where each pair ``(a, b, values_a, values_b)`` has its own paired values.

    Used when the arms of a family were not all run on the same data (a failed seed): each pair is then
    compared on what both arms have; the p-values are still corrected as one family.
    """
    run = paired_wilcoxon if PairedTest(test) is PairedTest.WILCOXON else paired_sign_test
    results = [run(x, y) for _, _, x, y in pairs]
    adjusted = adjust_pvalues([r.pvalue for r in results], correction)
    return [
        Comparison(a, b, r.n, _mean_or_nan(_paired_differences(x, y)), r.statistic, r.pvalue, adj)
        for (a, b, x, y), r, adj in zip(pairs, results, adjusted, strict=True)
    ]


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[..., np.ndarray] = np.mean,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    method: str = BootstrapMethod.BCA,
    seed: int = 0,
) -> tuple[float, float]:
    """Seeded bootstrap confidence interval of ``statistic`` (called as ``statistic(x, axis=-1)``).

    NaNs are dropped first.  With no value the interval is (NaN, NaN); with one value, or all values equal,
    it is the degenerate (value, value).  BCa falls back to the percentile interval when the bias correction
    is infinite (the estimate lies outside every resample's statistic) or the acceleration is undefined.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.nan, np.nan
    theta = float(statistic(x, axis=-1))
    if x.size == 1 or np.all(x == x[0]):
        return theta, theta
    rng = np.random.default_rng(seed)
    boot = statistic(x[rng.integers(0, x.size, size=(n_resamples, x.size))], axis=-1)
    alpha = (1 - confidence) / 2
    levels = np.array([alpha, 1 - alpha])
    if BootstrapMethod(method) is BootstrapMethod.BCA:
        levels = _bca_levels(x, boot, theta, statistic, levels)
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


def _bca_levels(x, boot, theta, statistic, levels: np.ndarray) -> np.ndarray:
    fraction = (np.sum(boot < theta) + np.sum(boot <= theta)) / (2 * boot.size)
    if not 0 < fraction < 1:
        return levels
    z0 = stats.norm.ppf(fraction)
    jack = _jackknife(x, statistic)
    dev = jack.mean() - jack
    denom = 6.0 * np.sum(dev**2) ** 1.5
    accel = np.sum(dev**3) / denom if denom > 0 else 0.0
    z = stats.norm.ppf(levels)
    return stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))


def gap_closed(finetuned: ArrayLike | float, baseline: ArrayLike | float, oracle: ArrayLike | float):
    """Share of the baseline-to-oracle gap that fine-tuning closed: ``(finetuned - baseline) / (oracle - baseline)``.

    0 means no better than the baseline (the source model applied to the target), 1 means as good as the
    oracle (trained on the target with all its labels); values below 0 (worse than the baseline) or above 1
    (better than the oracle) are kept, not clipped.  The result is NaN where any input is NaN and where
    ``oracle <= baseline``: there is no gap to close, so the ratio is undefined (never +-inf).  Broadcasts like
    numpy; returns a float for scalar inputs.

    Example:
        >>> gap_closed(0.75, 0.5, 1.0)
        0.5
    """
    f, b, o = (np.asarray(v, dtype=float) for v in (finetuned, baseline, oracle))
    gap = o - b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(gap > 0, (f - b) / np.where(gap > 0, gap, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def _jackknife(x: np.ndarray, statistic: Callable[..., np.ndarray], chunk: int = 256) -> np.ndarray:
    """Leave-one-out statistics, ``chunk`` rows of the (n, n - 1) leave-one-out matrix at a time."""
    out = []
    for start in range(0, x.size, chunk):
        rows = np.arange(start, min(start + chunk, x.size))
        keep = np.arange(x.size)[None, :] != rows[:, None]
        out.append(statistic(np.broadcast_to(x, keep.shape)[keep].reshape(rows.size, x.size - 1), axis=-1))
    return np.concatenate(out)


def _paired_differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
    # rounded to 1e-12: differences of scores that are equal up to float noise (0.3 - 0.1 against 0.2) are ties, and
    # equal differences (a constant shift) are equal, as the rank tests and effect sizes must see them
    d = np.round(a - b, 12)
    return d[np.isfinite(d)]


def _finite_pvalues(pvalues: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pvalues, dtype=float).ravel()
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok].tolist()}")
    return p, ok


def _mean_or_nan(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else np.nan


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan
