"""Who won: per setting (target x label budget), the best arm and whether it is significantly better.

The paired unit is the held-out test scan (target domain x case; :data:`~.grouping.SCAN_UNIT`): an arm's score on a
scan is its mean over the seeds and over the domain pairs that share the scan's target domain, so a scan counts once
however many seeds and source domains scored it. When the rows hold several grids, the grid is part of the setting.
Each pair of arms is compared on the scans both have, each averaged over the (domain pair, seed) runs *both* arms
have (:func:`~.grouping.common_scan_scores`): after a failed or skipped cell no arm is averaged over seeds its rival
lacks, and the sentence says so. The winner is the arm with the highest mean over the runs every arm has (the
lowest for a lower-is-better metric such as HD95: :data:`~.grouping.LOWER_IS_BETTER`). Every pair
of arms is tested with the paired Wilcoxon signed-rank test and with the sign test, each family Holm-corrected
(:func:`~.stats.compare_pairs`). The win is *significant* when the winner beats every other arm with a corrected
Wilcoxon p-value below ``alpha``.

Otherwise the verdict says which of the two other answers the data give (:func:`verdict_sentence`):
*equivalence* when every arm the winner does not beat is equivalent to it within ``margin`` (paired t and
Wilcoxon TOSTs both below ``alpha``; :func:`~.equivalence.paired_equivalence`), else *undecided*, with how
many more paired cases would detect the observed difference at 80 % power (paired t approximation at the
Bonferroni share of ``alpha`` over the Holm family, which Holm never needs more than) and how many would show
equivalence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .document import Table, literal
from .equivalence import DEFAULT_MARGIN, WILCOXON_MAX_N, Contrast, paired_equivalence
from .grouping import (
    best_word,
    common_scan_scores,
    direction,
    group_rows,
    is_reference,
    metric_name,
    replicate_scores,
    unit_scores,
)
from .stats import Comparison, Correction, PairedTest, compare_pairs


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
        margin: equivalence margin in the metric's units.
        contrasts: the winner against each other arm (difference with CI, TOSTs, effect sizes, sample sizes).
        runs: arm -> the (domain pair, seed) runs it has a finite score from (see :attr:`uneven_runs`).
        unscored: arms of the setting with no finite value of the metric on any scan (e.g. every Dice NaN): left
            out of the comparison (they would leave no scan common to all arms) and named in the sentence.
    """

    setting: dict[str, Any]
    metric: str
    means: dict[str, float]
    n: int
    wilcoxon: tuple[Comparison, ...]
    sign: tuple[Comparison, ...]
    alpha: float = 0.05
    margin: float = DEFAULT_MARGIN
    contrasts: dict[str, Contrast] = field(default_factory=dict)
    runs: dict[str, tuple] = field(default_factory=dict)
    unscored: tuple[str, ...] = ()

    @property
    def uneven_runs(self) -> bool:
        """The arms were not all run on the same seeds and domain pairs (a failed or skipped cell)."""
        return len({frozenset(r) for r in self.runs.values()}) > 1

    @property
    def n_domain_pairs(self) -> int:
        """Distinct domain pairs the compared arms ran on (0 without domain pairs)."""
        return len({pair for r in self.runs.values() for pair, _ in r} - {None})

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
        return [
            arm
            for arm in others
            if not self.versus(arm)[1] < self.alpha
            or not direction(self.metric) * self.versus(arm)[0] > 0
            or not self.rank_lead(arm)
        ]

    def rank_lead(self, other: str) -> bool:
        """Whether the rank test's shift (Hodges-Lehmann of winner - other) points the winner's way: a Wilcoxon
        rejection with a shift the wrong way is a significant difference in the *other* arm's favour on most scans,
        whatever the means say (a few large wins can lift the mean); for a lower-is-better metric (HD95) the
        winner's shift is negative.  True where no contrast was computed."""
        c = self.contrasts.get(other)
        return c is None or not math.isfinite(c.hodges_lehmann) or direction(self.metric) * c.hodges_lehmann > 0

    @property
    def significant(self) -> bool:
        return len(self.means) > 1 and not self.not_beaten

    @property
    def label(self) -> str:
        return ", ".join(str(v) for v in self.setting.values())

    @property
    def equivalent(self) -> bool:
        """No significant winner, but every arm the winner does not beat is equivalent to it at ``margin``."""
        rivals = self.not_beaten
        return (
            len(self.means) > 1
            and not self.significant
            and bool(rivals)
            and all(arm in self.contrasts and self.contrasts[arm].equivalent for arm in rivals)
        )

    @property
    def family_size(self) -> int:
        """Number of pairwise tests in the Holm family (every pair of arms)."""
        return len(self.means) * (len(self.means) - 1) // 2

    def sentence(self) -> str:
        """The plain-language verdict of this setting (``**`` marks emphasis); see :func:`verdict_sentence`."""
        return verdict_sentence(self)


def verdict_sentence(verdict: Verdict) -> str:
    """The plain-language verdict of one setting (``**`` marks emphasis).

    One of: a significant winner (with its margin over the runner-up, CI and p-value), an equivalence at the
    margin, or *undecided* with the number of paired cases that would decide.  "The data do not single out a
    winner" is never the whole sentence: it is followed by what the data do say (equivalence, or how far
    they are from a decision).
    """
    verdict = _literal_names(verdict)
    text = _verdict_text(verdict)
    if verdict.unscored:
        name = metric_name(verdict.metric)
        parts = "; ".join(f"{arm}: no finite {name} on any scan" for arm in verdict.unscored)
        text += f" Left out of the comparison: {parts}."
    return text


def _literal_names(v: Verdict) -> Verdict:
    """The verdict with its arm names and setting values escaped (:func:`~.document.literal`) for the sentence: a
    strategy named ``a**b**c`` must not turn bold, nor ``<b>`` or ``[x](y)`` into markup."""
    name = literal
    return replace(
        v,
        setting={k: name(x) for k, x in v.setting.items()},
        means={name(arm): m for arm, m in v.means.items()},
        wilcoxon=tuple(replace(c, a=name(c.a), b=name(c.b)) for c in v.wilcoxon),
        sign=tuple(replace(c, a=name(c.a), b=name(c.b)) for c in v.sign),
        contrasts={name(arm): c for arm, c in v.contrasts.items()},
        runs={name(arm): r for arm, r in v.runs.items()},
        unscored=tuple(name(arm) for arm in v.unscored),
    )


def _verdict_text(verdict: Verdict) -> str:
    v, name = verdict, metric_name(verdict.metric)
    if not v.means and v.unscored:
        return f"**{v.label}**: no strategy has a finite {name} on any scan; there is nothing to compare."
    if not v.means:
        return f"**{v.label}**: only the references (baseline / oracle) ran here; there is nothing to compare."
    if len(v.means) < 2:
        return f"**{v.label}**: only one strategy ({v.winner}) has results here; there is nothing to compare."
    best, second = v.winner, v.runner_up
    if v.tied:
        return (
            f"**{v.label}**: every strategy has the same mean {name} ({_fmt(v.means[best])}; "
            f"n = {v.n} paired cases): no strategy is better than another here.{_runs_note(v)}"
        )
    if v.n == 0:
        return (
            f"**{v.label}**: **{best}** has the {best_word(v.metric)} mean {name} ({_fmt(v.means[best])} vs "
            f"{_fmt(v.means[second])} for {second}), but no case has results for every strategy, so the "
            f"difference cannot be tested.{_runs_note(v)}"
        )
    head = (
        f"**{v.label}**: **{best}** has the {best_word(v.metric)} mean {name} ({_fmt(v.means[best])} vs "
        f"{_fmt(v.means[second])} for {second}, the runner-up; n = {v.n} paired cases, {unit_phrase(v)})"
    )
    if v.significant:
        p_w = max(v.versus(arm)[1] for arm in v.means if arm != best)
        p_s = max(v.versus(arm, PairedTest.SIGN)[1] for arm in v.means if arm != best)
        return (
            f"{head} and **the win is significant**: it beats every other strategy with Holm-corrected paired "
            f"Wilcoxon {_p_bound(p_w)} (sign test {_p_bound(p_s)}){_margin_clause(v, second, name)}."
            f"{_runs_note(v)}"
        )
    rivals = v.not_beaten
    tests = "; ".join(
        f"vs {arm}: Wilcoxon p = {_fmt_p(v.versus(arm)[1])}, sign test p = {_fmt_p(v.versus(arm, PairedTest.SIGN)[1])}"
        + (
            ""
            if v.rank_lead(arm)
            else f" (the rank shift, Hodges-Lehmann {_signed(v.contrasts[arm].hodges_lehmann)}, favours {arm}: the "
            "mean lead comes from a few scans)"
        )
        for arm in rivals
    )
    not_sig = (
        f"{head}, but **the difference is not significant** against {', '.join(rivals)} "
        f"(Holm-corrected, α = {v.alpha:g}; {tests})"
    )
    if v.equivalent:
        return (
            f"{not_sig}; **they are equivalent** within ±{v.margin:g} {name}: {_equivalence_clause(v, rivals)}."
            f"{_runs_note(v)}"
        )
    return f"{not_sig}: the data do not single out a winner yet. {_undecided_clause(v, rivals, name)}{_runs_note(v)}"


def unit_phrase(v: Verdict) -> str:
    """What one paired case is: a distinct held-out scan, with what was averaged into it."""
    if v.n_domain_pairs > 1:
        return (
            "i.e. distinct held-out scans, each averaged over its seeds and the domain pairs sharing its target domain"
        )
    return "i.e. distinct held-out scans, seeds averaged"


def _runs_note(v: Verdict) -> str:
    """When the arms ran on different seeds / domain pairs: say so, and how the comparison was restricted."""
    if not v.uneven_runs:
        return ""
    groups: dict[tuple, list[str]] = {}
    for arm in v.means:
        groups.setdefault(v.runs.get(arm, ()), []).append(arm)
    parts = "; ".join(f"{', '.join(arms)}: {_describe_runs(runs)}" for runs, arms in groups.items())
    head = f" Not every strategy ran the same seeds and domain pairs ({parts})"
    if v.n == 0:
        return f"{head}: no run is common to all, so the means above are each strategy's own and not comparable."
    return (
        f"{head}: each pair of strategies is compared only on the seeds and domain pairs both ran (scan by scan), "
        "and the means above use those every strategy ran."
    )


def _describe_runs(runs: Sequence[tuple]) -> str:
    pairs = sorted({str(p) for p, _ in runs if p is not None})
    seeds = sorted({s for _, s in runs}, key=lambda x: (str(type(x)), x))
    text = f"seed{'' if len(seeds) == 1 else 's'} {', '.join(map(str, seeds))}"
    return f"{len(pairs)} domain pairs, {text} ({len(runs)} runs)" if pairs else text


def _margin_clause(v: Verdict, arm: str, name: str) -> str:
    c = v.contrasts.get(arm)
    if c is None or not math.isfinite(c.ci[0]):
        return ""
    return (
        f"; its margin over {arm} is {_signed(c.mean_diff)} {name} (95% CI {_signed(c.ci[0])} to "
        f"{_signed(c.ci[1])}; " + (f"d_z = {c.d_z:.2f})" if math.isfinite(c.d_z) else "the same on every scan)")
    )


def _equivalence_clause(v: Verdict, rivals: Sequence[str]) -> str:
    parts = []
    for arm in rivals:
        c = v.contrasts[arm]
        low, high = c.tost_t.ci
        parts.append(
            f"vs {arm} difference {_signed(c.mean_diff)} ({1 - 2 * v.alpha:.0%} CI {_signed(low)} to {_signed(high)}), "
            f"TOST {_p_is(c.tost_pvalue)} (paired t and Wilcoxon)"
        )
    return "; ".join(parts)


def _undecided_clause(v: Verdict, rivals: Sequence[str], name: str) -> str:
    """How far from a decision: the rival needing the most cases, and what equivalence would need."""
    contrasts = {arm: v.contrasts[arm] for arm in rivals if arm in v.contrasts}
    if not contrasts or all(c.n < 2 for c in contrasts.values()):
        return f"**Undecided**: with n = {v.n} paired case(s) the per-case spread cannot be estimated; add cases."
    arm, c = max(contrasts.items(), key=lambda kv: _need(kv[1].n_detect))
    if c.n_detect is None and c.mean_diff == 0:
        detect = (
            f"**Undecided**: against {arm} the mean difference is {_signed(c.mean_diff)} {name}, so no number of "
            "cases would show a difference"
        )
    elif c.n_detect is None and not c.hodges_lehmann * c.mean_diff > 0:
        detect = (
            f"**Undecided**: against {arm} the mean difference is {_signed(c.mean_diff)} {name} but the rank test's "
            f"shift (Hodges-Lehmann {_signed(c.hodges_lehmann)}) does not point the same way, so more cases would "
            "not show this lead on the Wilcoxon test"
        )
    elif c.n_detect is None:
        detect = (
            f"**Undecided**: against {arm} the observed difference ({_signed(c.mean_diff)} {name}, Hodges-Lehmann "
            f"{_signed(c.hodges_lehmann)}) would need more than {WILCOXON_MAX_N} paired cases at {c.power:.0%} power "
            f"({_power_method(c)})"
        )
    elif c.n_detect > c.n:
        detect = (
            f"**Undecided**: about {c.n_detect - c.n} more paired cases (n ≈ {c.n_detect} in all) would detect the "
            f"observed difference of {_signed(c.mean_diff)} {name} against {arm} (Hodges-Lehmann shift "
            f"{_signed(c.hodges_lehmann)}, what the Wilcoxon test detects) at {c.power:.0%} power ({_power_method(c)})"
        )
    else:
        detect = (
            f"**Undecided**: n = {c.n_detect} paired cases give {c.power:.0%} power for the observed difference of "
            f"{_signed(c.mean_diff)} {name} against {arm} ({_power_method(c)}), and there are {c.n}: these cases "
            "are among the samples of that size that do not reject; more cases would settle it"
        )
    return f"{detect}; {_equivalence_need(v, contrasts)}."


def _n_detect_cell(c: Contrast) -> str:
    """The equivalence table's "n for 80% power": a number, ``> WILCOXON_MAX_N``, or — (nothing to detect)."""
    if c.n_detect is not None:
        return str(c.n_detect)
    return f"> {WILCOXON_MAX_N}" if c.n >= 2 and c.hodges_lehmann * c.mean_diff > 0 else "—"


def _power_method(c: Contrast) -> str:
    """How :attr:`Contrast.n_detect` was found, for the sentence that quotes it."""
    return (
        f"two-sided Wilcoxon signed-rank test at α = {c.alpha_detect:.2g}, resampling the {c.n} observed differences "
        "with their ties and zeros; optimistic, as it takes the observed difference of the best strategy as the "
        "true one"
    )


def _equivalence_need(v: Verdict, contrasts: Mapping[str, Contrast]) -> str:
    outside = [arm for arm, c in contrasts.items() if c.n_equivalent is None]
    if outside:
        return (
            f"against {', '.join(outside)} the observed difference is at least the margin, so if it is the true "
            f"one no number of cases would show equivalence within ±{v.margin:g}"
        )
    arm, c = max(contrasts.items(), key=lambda kv: _need(kv[1].n_equivalent))
    more = max(c.n_equivalent - c.n, 0)
    return (
        f"showing equivalence within ±{v.margin:g} (against {arm}) would take about {more} more "
        f"(n ≈ {c.n_equivalent}; TOST {_p_is(c.tost_pvalue)} now)"
    )


def equivalence_table(verdict: Verdict) -> Table:
    """The winner against every other arm: difference with CI, effect sizes, TOSTs and the cases a decision needs."""
    name = metric_name(verdict.metric)
    body = tuple(
        (
            str(verdict.winner),
            arm,
            str(c.n),
            f"{_signed(c.mean_diff)} [{_signed(c.ci[0])}, {_signed(c.ci[1])}]",
            _fmt_num(c.d_z),
            _signed(c.hodges_lehmann),
            _fmt_num(c.rank_biserial),
            _fmt_p(c.tost_t.pvalue),
            _fmt_p(c.tost_wilcoxon.pvalue),
            "yes" if c.equivalent else "no",
            _n_detect_cell(c),
            "—" if c.n_equivalent is None else str(c.n_equivalent),
        )
        for arm, c in verdict.contrasts.items()
    )
    header = (
        "best",
        "other",
        "n pairs",
        f"{name} difference [95% CI]",
        "d_z",
        "Hodges-Lehmann",
        "rank-biserial r",
        "TOST p (t)",
        "TOST p (Wilcoxon)",
        f"equivalent (±{verdict.margin:g})",
        "n for 80% power",
        "n for equivalence",
    )
    note = (
        f"TOST at α = {verdict.alpha:g}: equivalent when both the paired t and the Wilcoxon TOST reject. Sample "
        "sizes: n for 80% power resamples the observed differences (ties and zeros kept) under the two-sided "
        "Wilcoxon signed-rank test, at α shared among the pairs as Holm's first step does; n for equivalence: paired t "
        "TOST approximation from the per-case SD of the differences (— where no size would do)."
    )
    return Table(f"Equivalence and power, {verdict.label}", header, body, note)


def compare_setting(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    setting: Mapping[str, Any],
    *,
    alpha: float = 0.05,
    margin: float = DEFAULT_MARGIN,
) -> Verdict:
    """The :class:`Verdict` of one setting's rows (with an ``arm`` column; reference arms are left out).

    Arms with no finite value on any scan are left out (:attr:`Verdict.unscored`).  The paired unit is the held-out
    scan (target domain x case): an arm's score on a scan is its mean over
    the seeds and domain pairs that scored it.  Each pair of arms is compared on the scans both have, each
    averaged over the (domain pair, seed) runs *both* arms have (a failed seed of one arm is left out of the
    other's mean too); the means that rank the arms use the runs every arm has.
    """
    table = {arm: s for arm, s in replicate_scores(rows, metric).items() if not is_reference(arm)}
    unscored = tuple(arm for arm, scans in table.items() if not any(scans.values()))  # every value NaN
    table = {arm: s for arm, s in table.items() if arm not in unscored}
    if not table:
        return Verdict(dict(setting), metric, {}, 0, (), (), alpha, margin, unscored=unscored)
    arms = list(table)
    runs = {arm: tuple(sorted({r for scan in s.values() for r in scan}, key=repr)) for arm, s in table.items()}
    common = common_scan_scores(table, arms)
    n = len(next(iter(common.values())))
    scans = sorted(next(iter(common.values())), key=repr)
    fallback = unit_scores([r for r in rows if r["arm"] in table], metric)
    means = {arm: float(np.mean([common[arm][k] for k in scans])) if n else _plain_mean(fallback[arm]) for arm in arms}
    sign = direction(metric)  # rank best first: highest mean, or lowest for a lower-is-better metric (HD95)
    means = dict(sorted(means.items(), key=lambda kv: (-_finite_or(sign * kv[1], -math.inf), kv[0])))
    pairs = []
    for a, b in itertools.combinations(arms, 2):
        both = common_scan_scores(table, [a, b])
        keys = sorted(both[a], key=repr)
        pairs.append((a, b, np.array([both[a][k] for k in keys]), np.array([both[b][k] for k in keys])))
    wil = compare_pairs(pairs, test=PairedTest.WILCOXON, correction=Correction.HOLM) if n else []
    sig = compare_pairs(pairs, test=PairedTest.SIGN, correction=Correction.HOLM) if n else []
    best, family = next(iter(means)), max(len(means) * (len(means) - 1) // 2, 1)
    contrasts = {}
    for a, b, x, y in pairs if n else []:
        if best in (a, b):
            other, (mine, theirs) = (b, (x, y)) if a == best else (a, (y, x))
            contrasts[other] = paired_equivalence(mine, theirs, margin, alpha=alpha, alpha_detect=alpha / family)
    contrasts = {arm: contrasts[arm] for arm in list(means)[1:] if arm in contrasts}
    return Verdict(dict(setting), metric, means, n, tuple(wil), tuple(sig), alpha, margin, contrasts, runs, unscored)


def compare_all(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    by: Sequence[str] = ("target", "budget"),
    *,
    alpha: float = 0.05,
    margin: float = DEFAULT_MARGIN,
) -> list[Verdict]:
    """One :class:`Verdict` per setting (distinct values of ``by``) that has the metric.

    When the rows come from more than one grid, the grid is part of the setting (``("grid", *by)``): two
    experiments are never pooled into one comparison as if they were seeds of one.
    """
    if "grid" not in by and len({row.get("grid") for row in rows}) > 1:
        by = ("grid", *by)
    verdicts = []
    for key, group in group_rows(rows, by).items():
        if any(row.get(metric) is not None for row in group):
            setting = dict(zip(by, key, strict=True))
            verdicts.append(compare_setting(group, metric, setting, alpha=alpha, margin=margin))
    return verdicts


def overall_sentence(verdicts: Sequence[Verdict]) -> str:
    """One line over all settings: wins per strategy (how many significantly) and settings ending in equivalence."""
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
    parts = [f"**{literal(arm)}** won {w} ({s} significantly)" for arm, (w, s) in ranked]
    ties = sum(v.tied for v in contested)
    parts += [f"{ties} tied (every strategy the same)"] if ties else []
    equivalent = sum(v.equivalent for v in contested)
    parts += [f"{equivalent} with the best arms equivalent (within the margin)"] if equivalent else []
    kind = "grid x target x label budget" if any("grid" in v.setting for v in contested) else "target x label budget"
    return f"Over {len(contested)} settings ({kind}): " + "; ".join(parts) + "."


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


def _p_is(p: float) -> str:
    return "p < 0.0001" if math.isfinite(p) and p < 1e-4 else f"p = {_fmt_p(p)}"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def _fmt_num(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "—"


def _need(n: int | None) -> float:
    return math.inf if n is None else float(n)
