"""Who won: per setting (target x label budget), the best arm and whether it is significantly better.

The arms of a setting are compared on paired units (domain pair x case, seeds averaged; see
:func:`~.grouping.unit_scores`) present for every arm.  The winner is the arm with the highest mean on those
units.  Every pair of arms is tested with the paired Wilcoxon signed-rank test and with the sign test, each
family Holm-corrected (:func:`~.stats.pairwise_comparisons`).  The win is *significant* when the winner beats
every other arm with a corrected Wilcoxon p-value below ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grouping import group_rows, is_reference, metric_name, unit_scores
from .stats import Comparison, Correction, PairedTest, align, pairwise_comparisons


@dataclass(frozen=True)
class Verdict:
    """The outcome of one setting.

    Attributes:
        setting: e.g. ``{"target": "brain", "budget": "n3"}``.
        metric: the compared metric column.
        means: arm -> mean over the paired units, best first.
        n: number of paired units (NaN-free for every arm).
        wilcoxon: every pair of arms, Holm-corrected paired Wilcoxon tests.
        sign: the same pairs, Holm-corrected sign tests.
        alpha: significance level.
    """

    setting: dict[str, Any]
    metric: str
    means: dict[str, float]
    n: int
    wilcoxon: tuple[Comparison, ...]
    sign: tuple[Comparison, ...]
    alpha: float = 0.05

    @property
    def winner(self) -> str | None:
        return next(iter(self.means), None)

    @property
    def tied(self) -> bool:
        """Every arm has the same mean (e.g. all at Dice 0: nothing learnt): there is no winner."""
        values = [v for v in self.means.values() if math.isfinite(v)]
        return len(self.means) > 1 and len(values) == len(self.means) and max(values) - min(values) < 1e-9

    @property
    def runner_up(self) -> str | None:
        return list(self.means)[1] if len(self.means) > 1 else None

    def versus(self, other: str, test: str = PairedTest.WILCOXON) -> tuple[float, float]:
        """``(mean difference winner - other, corrected p-value)`` of the winner against ``other``."""
        family = self.wilcoxon if PairedTest(test) is PairedTest.WILCOXON else self.sign
        for c in family:
            if {c.a, c.b} == {self.winner, other}:
                sign = 1.0 if c.a == self.winner else -1.0
                return sign * c.mean_diff, c.pvalue_adjusted
        return math.nan, math.nan

    @property
    def not_beaten(self) -> list[str]:
        """Other arms the winner does not beat significantly (corrected Wilcoxon p >= alpha, or untestable)."""
        others = [arm for arm in self.means if arm != self.winner]
        return [arm for arm in others if not self.versus(arm)[1] < self.alpha or not self.versus(arm)[0] > 0]

    @property
    def significant(self) -> bool:
        return len(self.means) > 1 and not self.not_beaten

    @property
    def label(self) -> str:
        return ", ".join(str(v) for v in self.setting.values())

    def sentence(self) -> str:
        """The plain-language verdict of this setting (``**`` marks emphasis)."""
        name = metric_name(self.metric)
        if not self.means:
            return f"**{self.label}**: only the references (baseline / oracle) ran here; there is nothing to compare."
        if len(self.means) < 2:
            return f"**{self.label}**: only one strategy ({self.winner}) has results here; there is nothing to compare."
        best, second = self.winner, self.runner_up
        if self.tied:
            return (
                f"**{self.label}**: every strategy has the same mean {name} ({_fmt(self.means[best])}; "
                f"n = {self.n} paired cases): no strategy is better than another here."
            )
        if self.n == 0:
            return (
                f"**{self.label}**: **{best}** has the highest mean {name} ({_fmt(self.means[best])} vs "
                f"{_fmt(self.means[second])} for {second}), but no case has results for every strategy, so the "
                "difference cannot be tested."
            )
        head = (
            f"**{self.label}**: **{best}** has the highest mean {name} ({_fmt(self.means[best])} vs "
            f"{_fmt(self.means[second])} for {second}, the runner-up; n = {self.n} paired cases)"
        )
        if self.significant:
            p_w = max(self.versus(arm)[1] for arm in self.means if arm != best)
            p_s = max(self.versus(arm, PairedTest.SIGN)[1] for arm in self.means if arm != best)
            return (
                f"{head} and **the win is significant**: it beats every other strategy with Holm-corrected paired "
                f"Wilcoxon {_p_bound(p_w)} (sign test {_p_bound(p_s)})."
            )
        rivals = self.not_beaten
        tests = "; ".join(
            f"vs {arm}: Wilcoxon p = {_fmt_p(self.versus(arm)[1])}, sign test p = "
            f"{_fmt_p(self.versus(arm, PairedTest.SIGN)[1])}"
            for arm in rivals
        )
        return (
            f"{head}, but **the difference is not significant** against {', '.join(rivals)} "
            f"(Holm-corrected, α = {self.alpha:g}; {tests}): the data do not single out a winner."
        )


def compare_setting(
    rows: Sequence[Mapping[str, Any]], metric: str, setting: Mapping[str, Any], *, alpha: float = 0.05
) -> Verdict:
    """The :class:`Verdict` of one setting's rows (with an ``arm`` column; reference arms are left out)."""
    scores = {arm: s for arm, s in unit_scores(rows, metric).items() if not is_reference(arm)}
    if not scores:
        return Verdict(dict(setting), metric, {}, 0, (), (), alpha)
    _, aligned = align(scores)
    complete = np.all([np.isfinite(v) for v in aligned.values()], axis=0) if aligned else np.array([])
    aligned = {arm: v[complete] for arm, v in aligned.items()}
    n = int(complete.sum()) if complete.size else 0
    means = {arm: float(v.mean()) if n else _plain_mean(scores[arm]) for arm, v in aligned.items()}
    means = dict(sorted(means.items(), key=lambda kv: (-_finite_or(kv[1], -math.inf), kv[0])))
    wil = pairwise_comparisons(aligned, test=PairedTest.WILCOXON, correction=Correction.HOLM) if n else []
    sig = pairwise_comparisons(aligned, test=PairedTest.SIGN, correction=Correction.HOLM) if n else []
    return Verdict(dict(setting), metric, means, n, tuple(wil), tuple(sig), alpha)


def compare_all(
    rows: Sequence[Mapping[str, Any]], metric: str, by: Sequence[str] = ("target", "budget"), *, alpha: float = 0.05
) -> list[Verdict]:
    """One :class:`Verdict` per setting (distinct values of ``by``) that has the metric."""
    verdicts = []
    for key, group in group_rows(rows, by).items():
        if any(row.get(metric) is not None for row in group):
            verdicts.append(compare_setting(group, metric, dict(zip(by, key, strict=True)), alpha=alpha))
    return verdicts


def overall_sentence(verdicts: Sequence[Verdict]) -> str:
    """One line over all settings: how many each strategy won, and how many of those significantly."""
    contested = [v for v in verdicts if len(v.means) > 1]
    if len(contested) < 2:
        return ""
    wins: dict[str, list[int]] = {}
    for v in contested:
        if v.tied:
            continue
        count = wins.setdefault(v.winner, [0, 0])
        count[0] += 1
        count[1] += int(v.significant)
    ranked = sorted(wins.items(), key=lambda kv: (-kv[1][0], kv[0]))
    parts = [f"**{arm}** won {w} ({s} significantly)" for arm, (w, s) in ranked]
    ties = sum(v.tied for v in contested)
    parts += [f"{ties} tied (every strategy the same)"] if ties else []
    return f"Over {len(contested)} settings (target x label budget): " + "; ".join(parts) + "."


def _plain_mean(values: Mapping[Any, float]) -> float:
    x = np.asarray(list(values.values()), dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def _p_bound(p: float) -> str:
    return "p < 0.0001" if p < 1e-4 else f"p ≤ {_fmt_p(p)}"


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "< 0.0001"
