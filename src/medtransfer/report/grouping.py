"""How the report groups per-case rows: arms (what is compared), settings (target x budget), budget order.

An *arm* is what the report compares: the strategy, or ``source / strategy`` when the results hold more
than one source.  The reference arms ``baseline`` (the source model applied to the target without
fine-tuning) and ``oracle`` (trained on the target with all its labels) are recognised by their strategy
name, or by ``STRATEGY[@BUDGET]`` patterns (:func:`add_arms`); they anchor "gap closed" and are never
declared winners.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

BASELINE = "baseline"
ORACLE = "oracle"
METRIC_NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "surface_dice": "surface Dice",
    "hd95": "HD95",
    "assd": "ASSD",
    "lesion_detection_rate": "lesion recall (detection rate)",
    "detection_rate": "lesion recall (detection rate)",
    "lesion_precision": "lesion precision",
    "lesion_f1": "lesion F1",
    "lesion_fp": "false-positive lesions per scan",
    "lesion_detected_dice": "Dice of detected lesions",
    "lesion_count_error": "lesion count error",
    "lesion_volume_error": "lesion volume error (mm³)",
}
# Metrics where a lower value is better (distances, false positives): the one definition the report ranks, tests,
# bolds and computes "gap closed" by.  Every other metric is higher-is-better, except the signed errors below.
LOWER_IS_BETTER = frozenset({"hd95", "assd", "lesion_fp", "lesion_fp_per_case"})
# Signed errors (predicted - reference): neither higher nor lower is better (0 is), so they cannot rank strategies.
SIGNED_ERRORS = frozenset({"lesion_count_error", "lesion_volume_error", "count_error", "volume_error"})
_BUDGET = re.compile(r"^n(\d+|all)(?:_k(\d+))?$")


def metric_name(metric: str) -> str:
    """Display name of a metric column (``dice`` -> ``Dice``)."""
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def axis_label(metric: str) -> str:
    """:func:`metric_name` with its unit, for a plot axis or colour bar (``hd95`` -> ``HD95 (mm)``)."""
    name = metric_name(metric)
    return f"{name} (mm)" if metric in ("hd95", "assd") else name


def lower_is_better(metric: str | None) -> bool:
    """Whether a lower value of ``metric`` is better (HD95, ASSD, false-positive lesions).

    Example:
        >>> lower_is_better("hd95"), lower_is_better("dice")
        (True, False)
    """
    return metric in LOWER_IS_BETTER


def direction(metric: str | None) -> float:
    """+1 where higher is better, -1 where lower is better: ``direction * (a - b) > 0`` means a is better."""
    return -1.0 if lower_is_better(metric) else 1.0


def best_word(metric: str | None) -> str:
    """``highest`` or ``lowest``: how the best mean of ``metric`` is described."""
    return "lowest" if lower_is_better(metric) else "highest"


def budget_order(label: Any) -> tuple[float, str]:
    """Sort key of a budget label by the amount of labels: ``n1_k24`` < ``n1`` < ``n3`` < ``nall``.

    Example:
        >>> sorted(["nall", "n3", "n1", "n1_k24"], key=budget_order)
        ['n1_k24', 'n1', 'n3', 'nall']
    """
    match = _BUDGET.match(str(label))
    if not match:
        return math.inf, str(label)
    n = math.inf if match.group(1) == "all" else float(match.group(1))
    return n / float(match.group(2) or 1), str(label)


def sorted_values(rows: Iterable[Mapping[str, Any]], column: str) -> list[Any]:
    """Distinct non-missing values of a column (budgets by amount of labels, others by name)."""
    values = {row.get(column) for row in rows} - {None}
    key = budget_order if column == "budget" else (lambda v: (str(type(v)), v))
    return sorted(values, key=key)


def add_arms(
    rows: Sequence[Mapping[str, Any]], *, baseline: str = BASELINE, oracle: str = ORACLE
) -> list[dict[str, Any]]:
    """Copies of ``rows`` with an ``arm`` column: the strategy, prefixed by the source when sources vary.

    Rows matching ``baseline`` / ``oracle`` (``STRATEGY[@BUDGET]`` glob patterns, e.g. ``scratch@nall``: the
    from-scratch cells with every label) become the reference arms ``baseline`` / ``oracle``.

    Example:
        >>> [r["arm"] for r in add_arms([{"strategy": "scratch", "budget": "nall"}], oracle="scratch@nall")]
        ['oracle']
    """
    contenders = [row for row in rows if _reference(row, baseline, oracle) is None]
    several_sources = len({row.get("source") for row in contenders}) > 1
    return [{**row, "arm": _reference(row, baseline, oracle) or _arm(row, several_sources)} for row in rows]


def _reference(row: Mapping[str, Any], baseline: str, oracle: str) -> str | None:
    for name, pattern in ((BASELINE, baseline), (ORACLE, oracle)):
        strategy, _, budget = pattern.lower().partition("@")
        if fnmatch.fnmatchcase(str(row.get("strategy")).lower(), strategy) and (
            not budget or fnmatch.fnmatchcase(str(row.get("budget")).lower(), budget)
        ):
            return name
    return None


def _arm(row: Mapping[str, Any], several_sources: bool) -> str:
    strategy = str(row.get("strategy"))
    return f"{row.get('source')} / {strategy}" if several_sources else strategy


def is_reference(arm: str) -> bool:
    """Whether an arm is the baseline or the oracle (a reference, not a contender)."""
    return arm.lower() in (BASELINE, ORACLE)


def group_rows(rows: Iterable[Mapping[str, Any]], by: Sequence[str]) -> dict[tuple, list[Mapping[str, Any]]]:
    """Rows grouped by the values of ``by``, groups in sorted order (budgets by amount of labels)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    return dict(sorted(groups.items(), key=lambda item: _group_key(item[0], by)))


def _group_key(values: tuple, by: Sequence[str]) -> tuple:
    return tuple(budget_order(v) if k == "budget" else (str(v),) for k, v in zip(by, values, strict=True))


SCAN_UNIT = ("target_domain", "case")
"""The paired unit of the report's tests: a held-out test scan (its target domain and case name)."""
REPLICATE = ("domain_pair", "seed")
"""What is averaged within a scan: the runs that scored it (every domain pair sharing its target domain, every seed)."""


def unit_scores(
    rows: Iterable[Mapping[str, Any]], metric: str, units: Sequence[str] = SCAN_UNIT
) -> dict[str, dict[tuple, float]]:
    """Per arm, the metric of each unit (default: held-out scan = target domain x case), averaged over the rest.

    By default the unit is the scan: the seeds, and the domain pairs that share the scan's target domain, are
    averaged, because the scan, not the (scan, seed) or (domain pair, scan) pair, is the independent unit of a
    paired test.  Other ``units`` (e.g. ``("domain_pair",)``) give per-unit means for descriptive tables.
    NaN values are ignored in the average; a unit with only NaNs is NaN.
    """
    sums: dict[str, dict[tuple, list[float]]] = {}
    for row in rows:
        key = tuple(_column(row, u) for u in units)
        sums.setdefault(row["arm"], {}).setdefault(key, []).append(_as_float(row.get(metric)))
    return {arm: {k: _nanmean(v) for k, v in cells.items()} for arm, cells in sums.items()}


def scan_means(rows: Iterable[Mapping[str, Any]], metric: str) -> list[float]:
    """The metric of each held-out scan (:data:`SCAN_UNIT`) of ``rows``, its seeds and domain pairs averaged (NaNs
    ignored; a scan with none finite is NaN): the independent values a mean's confidence interval is taken over.
    Rows without a case name are each their own unit.

    Example:
        >>> rows = [{"case": "a", "seed": 0, "dice": 0.5}, {"case": "a", "seed": 1, "dice": 0.7},
        ...         {"case": "b", "seed": 0, "dice": 0.9}]
        >>> [round(v, 3) for v in scan_means(rows, "dice")]
        [0.6, 0.9]
    """
    values: dict[tuple, list[float]] = {}
    for i, row in enumerate(rows):
        key = tuple(_column(row, u) for u in SCAN_UNIT) if row.get("case") is not None else ("row", i)
        values.setdefault(key, []).append(_as_float(row.get(metric)))
    return [_nanmean(v) for v in values.values()]


def replicate_scores(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[str, dict[tuple, dict[tuple, float]]]:
    """Per arm and scan (:data:`SCAN_UNIT`), the metric of each run that scored it (:data:`REPLICATE`).

    ``{arm: {scan: {(domain_pair, seed): value}}}``; several rows of one run and scan (one per label of a
    multi-class target) are averaged, NaNs ignored; runs with no finite value are left out.
    """
    values: dict[str, dict[tuple, dict[tuple, list[float]]]] = {}
    for row in rows:
        scan = tuple(_column(row, u) for u in SCAN_UNIT)
        run = tuple(row.get(u) for u in REPLICATE)
        values.setdefault(row["arm"], {}).setdefault(scan, {}).setdefault(run, []).append(_as_float(row.get(metric)))
    out: dict[str, dict[tuple, dict[tuple, float]]] = {}
    for arm, scans in values.items():
        out[arm] = {}
        for scan, runs in scans.items():
            means = {run: _nanmean(v) for run, v in runs.items()}
            out[arm][scan] = {run: m for run, m in means.items() if math.isfinite(m)}
    return out


def common_scan_scores(
    table: Mapping[str, Mapping[tuple, Mapping[tuple, float]]], arms: Sequence[str]
) -> dict[str, dict[tuple, float]]:
    """Per arm of ``arms``, the mean of each scan over the runs (domain pair x seed) that *every* one of ``arms`` has.

    The arms are thus compared on the same scans, each averaged over the same seeds and domain pairs: a seed
    that failed for one arm (or a domain pair it did not run) is left out of the other arms' means on that
    comparison too.  Scans without a common run are left out.

    Example:
        >>> t = {"a": {("d", "c0"): {("x", 0): 0.6, ("x", 1): 0.8}}, "b": {("d", "c0"): {("x", 0): 0.5}}}
        >>> common_scan_scores(t, ["a", "b"])
        {'a': {('d', 'c0'): 0.6}, 'b': {('d', 'c0'): 0.5}}
    """
    out: dict[str, dict[tuple, float]] = {arm: {} for arm in arms}
    if not arms:
        return out
    scans = set(table.get(arms[0], {}))
    for arm in arms[1:]:
        scans &= set(table.get(arm, {}))
    for scan in sorted(scans, key=repr):
        runs = set(table[arms[0]][scan])
        for arm in arms[1:]:
            runs &= set(table[arm][scan])
        if runs:
            for arm in arms:
                out[arm][scan] = float(np.mean([table[arm][scan][run] for run in runs]))
    return out


def _column(row: Mapping[str, Any], name: str) -> Any:
    """A row's value of ``name``; ``target_domain`` falls back to the target side of ``domain_pair`` (``a->b``)."""
    value = row.get(name)
    if value is None and name == "target_domain" and "->" in str(row.get("domain_pair") or ""):
        return str(row["domain_pair"]).split("->", 1)[1]
    return value


def _nanmean(values: list[float]) -> float:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
