"""Tables of the report: the Zoetmulder table, lesion-wise metrics, metric by budget, paired tests, gap closed, wins.

Values are shown as ``mean [low, high]``: the mean over per-case values (all seeds and domain pairs pooled)
and its 95% bootstrap confidence interval (BCa, seeded, so a report is reproducible).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .comparisons import Verdict
from .document import Table
from .grouping import (
    BASELINE,
    ORACLE,
    direction,
    group_rows,
    is_reference,
    metric_name,
    scan_means,
    sorted_values,
    unit_scores,
)
from .stats import adjust_pvalues, best_counts, bootstrap_ci, gap_closed, win_matrix

ZOETMULDER_METRICS = ("dice", "iou", "lesion_f1")
# A detection rate alone rewards painting everything (a mask of the whole brain touches every lesion): the report
# shows it only in the lesion table, always beside lesion precision and F1, and never decides a winner with it.
DETECTION_RATES = ("lesion_detection_rate", "detection_rate")
LESION_METRICS = (
    DETECTION_RATES,
    "lesion_precision",
    "lesion_f1",
    "lesion_fp",
    "lesion_detected_dice",
    "lesion_count_error",
    "lesion_volume_error",
)
SCAN_CI = (
    "mean [95% bootstrap CI] over held-out scans (each scan's seeds and domain pairs averaged first: the scan is the "
    "independent unit)"
)
LESION_DIGITS = {"lesion_fp": 2, "lesion_count_error": 2, "lesion_volume_error": 0}
LESION_MATCH = "lesion_match"
SOURCE_DOMAINS = {"mri": "MRI", "natural": "natural", "nat": "natural", "imagenet": "natural", "ct": "CT"}
SOURCE_TASKS = {
    "cls": "classification",
    "classification": "classification",
    "seg": "segmentation",
    "segmentation": "segmentation",
    "ssl": "self-supervised",
    "selfsup": "self-supervised",
    "restoration": "self-supervised",
    "genesis": "self-supervised",
}


def mean_ci(values: Sequence[float], *, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the finite values with a 95% BCa bootstrap interval (NaNs when none)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    low, high = bootstrap_ci(x, np.mean, seed=seed)
    return float(x.mean()), low, high


def format_mean_ci(values: Sequence[float], digits: int = 3) -> str:
    """``0.812 [0.781, 0.843]``; ``—`` without a finite value; the mean alone for a single value."""
    mean, low, high = mean_ci(values)
    if not math.isfinite(mean):
        return "—"
    if low == high:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def split_source(name: Any) -> tuple[str, str]:
    """``(task, domain)`` of a source name such as ``mri_seg`` or ``natural-cls`` (``-`` when unknown).

    Example:
        >>> split_source("mri_seg"), split_source("none")
        (('segmentation', 'MRI'), ('none (from scratch)', '-'))
    """
    text = str(name)
    if text.lower() in ("none", "scratch", "null"):
        return "none (from scratch)", "-"
    tokens = [t.lower() for t in re.split(r"[_\-\s.]+", text) if t]
    domain = next((SOURCE_DOMAINS[t] for t in tokens if t in SOURCE_DOMAINS), "-")
    task = next((SOURCE_TASKS[t] for t in tokens if t in SOURCE_TASKS), text)
    return task, domain


def present_metrics(rows: Sequence[Mapping[str, Any]], wanted=ZOETMULDER_METRICS) -> list[str]:
    """The columns of ``wanted`` present in ``rows`` (a tuple entry means: the first alias found)."""
    found = []
    for entry in wanted:
        for name in (entry,) if isinstance(entry, str) else entry:
            if any(row.get(name) is not None for row in rows):
                found.append(name)
                break
    return found


def zoetmulder_tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    """Source task x source domain (x strategy) rows, target x metric columns; one table per label budget.

    Each target shows the metrics its rows hold (Dice, IoU; lesion F1 for lesion targets).
    """
    targets = sorted_values(rows, "target")
    by_target = group_rows(rows, ("target",))
    columns = [(t, m) for t in targets for m in present_metrics(by_target[(t,)], ZOETMULDER_METRICS)]
    if not columns:
        return []
    header = ("source task", "source domain", "strategy") + tuple(
        f"{t}: {metric_name(m)}" if len(targets) > 1 else metric_name(m) for t, m in columns
    )
    tables = []
    for (budget,), group in group_rows(rows, ("budget",)).items():
        body = []
        for (source, strategy), cells in group_rows(group, ("source", "strategy")).items():
            per_target = group_rows(cells, ("target",))
            values = [
                format_mean_ci(scan_means(per_target[(t,)], m)) if (t,) in per_target else "—" for t, m in columns
            ]
            body.append((*split_source(source), str(strategy), *values))
        caption = f"Label budget {budget}" + (f", target {targets[0]}" if len(targets) == 1 else "")
        tables.append(Table(caption, header, tuple(body), SCAN_CI))
    return tables


def lesion_tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    """Per label budget and lesion target: lesion recall (detection rate), precision and F1 side by side, false
    positive components per scan, Dice of the detected lesions, count and volume error (predicted - reference).

    A target is a lesion target when its rows hold any of these columns; the table then shows all of them
    (``—`` where the results did not record one), so a detection rate never appears without precision and F1.
    """
    tables = []
    for (budget, target), group in group_rows(rows, ("budget", "target")).items():
        if not present_metrics(group, LESION_METRICS):
            continue
        columns = [_present_alias(group, entry) for entry in LESION_METRICS]
        body = tuple(
            (
                *split_source(source),
                str(strategy),
                *(format_mean_ci(scan_means(cells, c), LESION_DIGITS.get(c, 3)) for c in columns),
            )
            for (source, strategy), cells in group_rows(group, ("source", "strategy")).items()
        )
        header = ("source task", "source domain", "strategy", *(metric_name(c) for c in columns))
        tables.append(Table(f"Lesion-wise metrics, label budget {budget}, target {target}", header, body, _rule(group)))
    return tables


def lesion_volume_tables(rows: Sequence[Mapping[str, Any]]) -> list[Table]:
    """Per label budget and lesion target: lesion recall by reference-lesion volume, ``detected/reference
    (recall)`` pooled over cases and seeds, one column per volume bin that holds a reference lesion.

    The pooled recall of the lesion table can hide that every small lesion is missed; this table shows it.
    Rows without the per-bin counts (results written before they were recorded) give no table.
    """
    from ..metrics.lesions import pooled_volume_counts, volume_bin_columns

    columns = [n_ref for _, n_ref, _ in volume_bin_columns()]
    tables = []
    for (budget, target), group in group_rows(rows, ("budget", "target")).items():
        bins = [name for name, (total, _) in pooled_volume_counts(group).items() if total]
        if not bins:
            continue
        body, unrecorded = [], 0
        for (source, strategy), cells in group_rows(group, ("source", "strategy")).items():
            # rows written before the counts existed add nothing (not 0/0 each); the note counts them
            unrecorded += sum(not any(r.get(c) is not None for c in columns) for r in cells)
            pooled = pooled_volume_counts(cells)
            values = [
                f"{found}/{total} ({found / total:.2f})" if total else "—"
                for total, found in (pooled[name] for name in bins)
            ]
            body.append((*split_source(source), str(strategy), *values))
        header = ("source task", "source domain", "strategy", *(_bin_title(name) for name in bins))
        note = (
            "detected/reference lesions (recall), summed over cases and seeds; a lesion's volume is its voxel count "
            f"times the voxel volume; lesions matched by the rule {_match_rules(group)}"
        ) + (f"; {unrecorded} per-case rows without the counts (older results) are left out" if unrecorded else "")
        caption = f"Lesion recall by volume, label budget {budget}, target {target}"
        tables.append(Table(caption, header, tuple(body), note))
    return tables


def _bin_title(name: str) -> str:
    """``lt0.03ml`` -> ``< 0.03 ml``, ``0.1-1ml`` -> ``0.1-1 ml``, ``ge10ml`` -> ``>= 10 ml``."""
    body = name.removesuffix("ml")
    if body.startswith("lt"):
        return f"< {body[2:]} ml"
    if body.startswith("ge"):
        return f">= {body[2:]} ml"
    return f"{body} ml"


def _present_alias(rows: Sequence[Mapping[str, Any]], entry: str | tuple[str, ...]) -> str:
    """The column of ``entry`` the rows hold (the first alias found), else its first name."""
    names = (entry,) if isinstance(entry, str) else entry
    return next((n for n in names if any(row.get(n) is not None for row in rows)), names[0])


def _match_rules(rows: Sequence[Mapping[str, Any]]) -> str:
    rules = sorted({str(row[LESION_MATCH]) for row in rows if row.get(LESION_MATCH) is not None})
    return " or ".join(rules) if rules else "(rule not recorded)"


def _rule(rows: Sequence[Mapping[str, Any]]) -> str:
    rule = _match_rules(rows)
    return (
        f"{SCAN_CI}; lesions matched by the rule {rule}; a case without "
        "a lesion on either side has no "
        "recall, precision or F1 and is left out of those means; errors are predicted - reference, volumes in mm³"
    )


def budget_table(rows: Sequence[Mapping[str, Any]], metric: str, target: Any) -> Table:
    """Arm x label budget: mean [CI] of ``metric`` for one target (the numbers behind the budget plot)."""
    budgets = sorted_values(rows, "budget")
    body = []
    for (arm,), cells in group_rows(rows, ("arm",)).items():
        by_budget = group_rows(cells, ("budget",))
        body.append((str(arm), *(format_mean_ci(scan_means(by_budget.get((b,), []), metric)) for b in budgets)))
    header = ("strategy", *(str(b) for b in budgets))
    return Table(f"{metric_name(metric)} by label budget, target {target}", header, tuple(body), SCAN_CI)


def comparison_table(verdict: Verdict) -> Table:
    """Every pair of arms of one setting: mean difference, Holm-corrected Wilcoxon and sign-test p-values."""
    sign = {(c.a, c.b): c for c in verdict.sign}
    body = tuple(
        (
            c.a,
            c.b,
            str(c.n),
            f"{c.mean_diff:+.3f}" if math.isfinite(c.mean_diff) else "—",
            _p(c.pvalue_adjusted),
            _p(sign[c.a, c.b].pvalue_adjusted) if (c.a, c.b) in sign else "—",
        )
        for c in verdict.wilcoxon
    )
    header = ("A", "B", "n pairs", f"mean {metric_name(verdict.metric)} A - B", "Wilcoxon p (Holm)", "sign p (Holm)")
    note = (
        "n pairs = distinct held-out scans (target domain x case) both strategies were scored on; a strategy's "
        "value on a scan is its mean over the seeds and domain pairs both strategies ran on it. Two-sided tests, "
        f"Holm-corrected over the {verdict.family_size} pair{'' if verdict.family_size == 1 else 's'} of strategies."
    )
    return Table(f"Paired tests, {verdict.label}", header, body, note)


def gap_closed_table(rows: Sequence[Mapping[str, Any]], metric: str) -> Table | None:
    """Gap closed ``(fine-tuned - baseline) / (oracle - baseline)`` per target, arm and budget (mean over pairs).

    The baseline and oracle of a target (per domain pair when there are pairs) are the means of the
    ``baseline`` / ``oracle`` strategies' rows.  A target without either is left out, and the note says so; a
    cell is ``— (no gap)`` where the oracle is not better than the baseline on any of its domain pairs (the share
    is undefined), and the note says on how many pairs that was so.  None when no target has both references.
    """
    budgets = sorted_values([r for r in rows if not is_reference(r["arm"])], "budget")
    sign = direction(metric)
    body, skipped, no_gap = [], [], []
    for (target,), group in group_rows(rows, ("target",)).items():
        refs = {n: _pair_means([r for r in group if r["arm"].lower() == n], metric) for n in (BASELINE, ORACLE)}
        missing = [n for n in (BASELINE, ORACLE) if not refs[n]]
        if missing:
            skipped.append(f"{target} (no finite {' or '.join(missing)} result)")
            continue
        pairs = [p for p in refs[BASELINE] if p in refs[ORACLE]]
        flat = [p for p in pairs if not sign * (refs[ORACLE][p] - refs[BASELINE][p]) > 0]
        if flat:
            no_gap.append(f"{target}: {len(flat)} of {len(pairs)} domain pair{'' if len(pairs) == 1 else 's'}")
        for (arm,), cells in group_rows([r for r in group if not is_reference(r["arm"])], ("arm",)).items():
            by_budget = group_rows(cells, ("budget",))
            values = [_gap_cell(by_budget.get((b,), []), metric, refs) for b in budgets]
            body.append((str(target), str(arm), *values))
    if not body:
        return None
    note = "mean [95% bootstrap CI] over domain pairs; 0 = baseline, 1 = oracle"
    if no_gap:
        note += (
            f". No gap to close where the oracle is not better than the baseline ({'; '.join(no_gap)}): those "
            "pairs are left out of the means, and a cell with no other pair reads — (no gap)"
        )
    if skipped:
        note += f". Not shown, as gap closed needs both a baseline and an oracle: target {', '.join(skipped)}"
    return Table(f"Gap closed ({metric_name(metric)})", ("target", "strategy", *map(str, budgets)), tuple(body), note)


def _pair_means(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[Any, float]:
    """Mean per (grid, domain pair): two grids' runs of one domain pair are not pooled."""
    scores = unit_scores(rows, metric, units=("grid", "domain_pair"))
    return {k: v for arm_scores in scores.values() for k, v in arm_scores.items()}


def _gap_cell(rows, metric: str, refs: Mapping[str, Mapping[Any, float]]) -> str:
    finetuned = _pair_means(rows, metric)
    pairs = [p for p in finetuned if p in refs[BASELINE] and p in refs[ORACLE]]
    sign = direction(metric)  # lower-is-better (HD95): the oracle's gap is below the baseline; same ratio
    gaps = [gap_closed(sign * finetuned[p], sign * refs[BASELINE][p], sign * refs[ORACLE][p]) for p in pairs]
    if pairs and not np.isfinite(gaps).any() and all(np.isfinite(finetuned[p]) for p in pairs):
        return "— (no gap)"
    return format_mean_ci(gaps, digits=2)


def win_count_table(rows: Sequence[Mapping[str, Any]], metric: str, setting: str) -> Table | None:
    """Over domain pairs: how often each arm is best, and A-vs-B wins-losses with Holm-corrected sign tests."""
    by = ("grid", "domain_pair")  # two grids' runs of one domain pair are two positions, never pooled
    scores = {arm: s for arm, s in unit_scores(rows, metric, units=by).items() if not is_reference(arm)}
    pairs = sorted({k for s in scores.values() for k in s}, key=str)
    if len(scores) < 2 or len(pairs) < 2:
        return None
    sign = direction(metric)  # a win is the better value: the lower one for HD95 and other lower-is-better metrics
    aligned = {arm: [sign * s.get(p, math.nan) for p in pairs] for arm, s in scores.items()}
    best = best_counts(aligned)
    matrix = win_matrix(aligned)
    unordered = [(a, b) for i, a in enumerate(aligned) for b in list(aligned)[i + 1 :]]
    adjusted = dict(zip(unordered, adjust_pvalues([matrix[k].pvalue for k in unordered]), strict=True))
    adjusted.update({(b, a): p for (a, b), p in list(adjusted.items())})
    body = []
    for a in aligned:
        cells = [
            "—" if a == b else f"{matrix[a, b].wins}-{matrix[a, b].losses} (p={_p(adjusted[a, b])})" for b in aligned
        ]
        body.append((a, f"{best[a]} / {len(pairs)}", *cells))
    better = "lower" if sign < 0 else "higher"
    note = (
        f"row beats column ({better} {metric_name(metric)} is better): wins-losses over domain pairs (ties left out), "
        "two-sided sign test, Holm-corrected"
    )
    return Table(f"Win counts over domain pairs, {setting}", ("strategy", "best in", *aligned), tuple(body), note)


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return f"{p:.3g}" if p >= 1e-4 else "<0.0001"
