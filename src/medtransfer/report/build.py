"""Build the report of a results folder and write it as one HTML page and a Markdown file with PNG figures.

Example:
    >>> build_report("results/shift_demo", "report")  # doctest: +SKIP
    ReportFiles(html=PosixPath('report/report.html'), markdown=PosixPath('report/report.md'), ...)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..utils import atomic_path
from . import plots, tables
from .comparisons import Verdict, compare_all, equivalence_table, overall_sentence
from .document import Figure, Report, Section
from .equivalence import DEFAULT_MARGIN
from .grouping import add_arms, group_rows, metric_name, sorted_values
from .overlays import OverlaySource, collect_overlays
from .provenance import provenance_table
from .results import CellRecord, Results, load_results, read_history

log = logging.getLogger(__name__)

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FIGURE_DIR = "figures"


@dataclass(frozen=True)
class ReportOptions:
    """What the report compares.

    Attributes:
        metric: the per-case metric that decides the winner (default ``dice``, else ``lesion_f1``, else the first
            one found); never a lesion detection rate, which alone rewards painting everything.
        alpha: significance level of the Holm-corrected tests (and of the equivalence tests).
        margin: equivalence margin in the metric's units (0.01 = one Dice point).
        baseline: ``STRATEGY[@BUDGET]`` glob of the baseline cells (source model without fine-tuning).
        oracle: ``STRATEGY[@BUDGET]`` glob of the oracle cells (e.g. ``scratch@nall``).
        max_overlays: how many qualitative overlays to show.
        title: page title (default names the grids).
    """

    metric: str | None = None
    alpha: float = 0.05
    margin: float = DEFAULT_MARGIN
    baseline: str = "baseline"
    oracle: str = "oracle"
    max_overlays: int = 4
    title: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha}")
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ConfigError(
                "--margin: the equivalence margin must be > 0 (in the metric's units, e.g. 0.01 Dice), "
                f"got {self.margin}"
            )
        if self.max_overlays < 0:
            raise ConfigError(f"max_overlays must be >= 0, got {self.max_overlays}")


@dataclass(frozen=True)
class ReportFiles:
    """The files a report consists of."""

    html: Path
    markdown: Path
    figures: tuple[Path, ...]


def build_report(results_dir: str | Path, out_dir: str | Path, options: ReportOptions | None = None) -> ReportFiles:
    """Read ``results_dir``, write ``report.html`` (self-contained) and ``report.md`` (+ ``figures/``) to ``out_dir``.

    Raises:
        DataError: the results folder is missing or holds no finished cell.
        ConfigError: the requested metric is not in the results.
    """
    report = create_report(load_results(results_dir), options or ReportOptions())
    return write_report(report, out_dir)


def create_report(results: Results, options: ReportOptions) -> Report:
    """The report (sections in order) of loaded results."""
    arms = _arms(results.cells, options)
    rows = [{**row, "arm": arms[row["cell_id"]]} for row in results.rows]
    metric = _metric(results, options.metric)
    verdicts = compare_all(rows, metric, alpha=options.alpha, margin=options.margin) if metric else []
    races, race_section = _race_section(results.root)
    headline = [line for line in [*races, overall_sentence(verdicts), *(v.sentence() for v in verdicts)] if line]
    sections = [
        *race_section,
        _tests_section(verdicts),
        _zoetmulder_section(rows),
        _lesion_section(rows),
        _budget_section(rows, metric),
        _heatmap_section(rows, metric),
        _gap_section(rows, metric),
        _wins_section(rows, metric),
        _convergence_section(results.cells, arms),
        _overlay_section(results.cells, arms, options.max_overlays),
        Section("Provenance", tables=(provenance_table(results.cells, rows),)),
    ]
    grids = sorted({c.grid for c in results.cells})
    title = options.title or f"medtransfer report: {', '.join(grids)}"
    subtitle = f"{len(results.cells)} finished cells, {len(rows)} per-case rows, from {results.root}"
    return Report(
        title, tuple(headline or ["No per-case metric to compare."]), tuple(sections), subtitle + _left_out(results)
    )


def _left_out(results: Results) -> str:
    """The cells the report does not include, said in the subtitle (never dropped without a word)."""
    if not results.skipped and not results.failed:
        return ""
    failed = [cell for cell, _ in results.failed]
    listed = f" ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''})" if failed else ""
    return f"; not included: {len(results.skipped)} skipped (unfinished or unreadable), {len(failed)} failed{listed}"


def _arms(cells: Sequence[CellRecord], options: ReportOptions) -> dict[str, str]:
    labelled = add_arms([c.columns for c in cells], baseline=options.baseline, oracle=options.oracle)
    return {row["cell_id"]: row["arm"] for row in labelled}


def _metric(results: Results, wanted: str | None) -> str | None:
    available = [m for m in results.metrics if m not in tables.DETECTION_RATES]
    if wanted in tables.DETECTION_RATES:
        raise ConfigError(
            f"--metric: {wanted} alone rewards painting everything (a mask of the whole brain touches every lesion), "
            f"so it cannot decide a winner in {results.root}; use lesion_f1 (the lesion table shows the detection rate "
            f"beside precision and F1) or one of: {', '.join(sorted(available))}"
        )
    if wanted is not None:
        if wanted not in available:
            raise ConfigError(f"--metric: {did_you_mean(wanted, available, what='metric')} in {results.root}")
        return wanted
    return next((m for m in ("dice", "lesion_f1") if m in available), next(iter(available), None))


def _race_section(root: Path) -> tuple[list[str], list[Section]]:
    """The races' headline sentences and the "Race" section, when the results hold saved races (else nothing)."""
    from .races import not_run_sentence, race_headlines, race_table, read_races

    records, problems = read_races(root)
    if not records and not problems:
        return [], []
    method = (
        "`grid run --race` ran each setting's arms (source x strategy) seed by seed. After each round, F-race "
        "compared the arms on the paired per-case results so far (Friedman test, then the best against each other "
        "arm with Holm-corrected paired Wilcoxon tests, each round at alpha / rounds) and dropped the arms "
        "significantly worse than the best; a race stopped when one arm was left, the arms left were equivalent "
        "within the margin (paired t and Wilcoxon TOSTs), or its seeds were spent."
    )
    paragraphs = [method] + ([not_run_sentence(records)] if records else [])
    paragraphs += [f"Unreadable race state: {problem}" for problem in problems]
    found = (race_table(records),) if records else ()
    return race_headlines(records), [Section("Race", tuple(paragraphs), found)]


def _tests_section(verdicts: Sequence[Verdict]) -> Section:
    title = "Which strategy won: paired tests"
    contested = [v for v in verdicts if len(v.means) > 1]
    if not contested:
        return Section(title, note="Omitted: fewer than two strategies with per-case results in every setting.")
    method = (
        f"Per setting (target x label budget) the strategies are compared on the same cases (domain pair x case, "
        f"seeds averaged) with the paired Wilcoxon signed-rank test and the sign test; each family of pairwise "
        f"tests is Holm-corrected. A win is significant when the best strategy beats every other one with a "
        f"corrected Wilcoxon p < {contested[0].alpha:g}. Otherwise the best strategy and every one it does not "
        f"beat are called equivalent when a paired t and a Wilcoxon two one-sided test (TOST) both show the "
        f"difference inside ±{contested[0].margin:g}; else the setting is undecided, and the report says how many "
        "paired cases would decide (paired t approximation, 80% power)."
    )
    found = [table for v in contested for table in (tables.comparison_table(v), equivalence_table(v))]
    return Section(title, (method,), tuple(found))


def _zoetmulder_section(rows) -> Section:
    title = "Sources and targets (Zoetmulder table)"
    found = tables.zoetmulder_tables(rows)
    if not found:
        return Section(title, note="Omitted: the results hold no Dice, IoU or lesion F1 per case.")
    text = "Source task x source domain x target: mean over cases (seeds and domain pairs pooled) with 95% CI."
    return Section(title, (text,), tuple(found))


def _lesion_section(rows) -> Section:
    title = "Lesion-wise detection"
    found = tables.lesion_tables(rows)
    if not found:
        return Section(title, note="Omitted: no lesion target (the per-case rows hold no lesion_* metric).")
    text = (
        "Per lesion target and label budget: lesion recall (detection rate), precision and F1 side by side (a "
        "detection rate alone rewards painting everything), false-positive components per scan, the Dice of the "
        "detected lesions, and the count and volume errors (predicted - reference). Then the lesion recall by "
        "reference-lesion volume: a pooled recall can hide that every small lesion is missed."
    )
    return Section(title, (text,), tuple(found) + tuple(tables.lesion_volume_tables(rows)))


def _budget_section(rows, metric: str | None) -> Section:
    title = "Metric vs label budget (Shirokikh view)"
    if metric is None or len(sorted_values(rows, "budget")) < 1:
        return Section(title, note="Omitted: no per-case metric.")
    figures, found = [], []
    for (target,), group in group_rows(rows, ("target",)).items():
        figures.append(Figure(_slug("budget", target), plots.budget_curves(group, metric, target)))
        found.append(tables.budget_table(group, metric, target))
    text = f"{metric_name(metric)} per strategy and label budget; error bars are 95% bootstrap CIs over cases."
    return Section(title, (text,), tuple(found), tuple(figures))


def _heatmap_section(rows, metric: str | None) -> Section:
    title = "Domain shift heatmaps"
    pairs = [r for r in rows if r.get("source_domain") is not None]
    if metric is None or not pairs:
        return Section(title, note="Omitted: the grid has no source->target domain pairs.")
    figures = [
        Figure(_slug("heatmap", target, budget), plots.domain_heatmaps(group, metric, f"{target}, {budget}"))
        for (target, budget), group in group_rows(pairs, ("target", "budget")).items()
    ]
    text = f"Mean {metric_name(metric)} per source domain (rows) and target domain (columns); grey: not run."
    return Section(title, (text,), figures=tuple(figures))


def _gap_section(rows, metric: str | None) -> Section:
    title = "Gap closed"
    table = tables.gap_closed_table(rows, metric) if metric else None
    if table is None:
        return Section(title, note="Omitted: needs both baseline and oracle cells (see --baseline / --oracle).")
    text = "Share of the baseline-to-oracle gap closed by fine-tuning: (fine-tuned - baseline) / (oracle - baseline)."
    return Section(title, (text,), (table,))


def _wins_section(rows, metric: str | None) -> Section:
    title = "Win counts over domain pairs"
    pairs = [r for r in rows if r.get("domain_pair") is not None]
    found = []
    for (target, budget), group in group_rows(pairs, ("target", "budget")).items():
        table = tables.win_count_table(group, metric, f"{target}, {budget}") if metric else None
        if table is not None:
            found.append(table)
    if not found:
        return Section(title, note="Omitted: needs at least two strategies on at least two domain pairs.")
    return Section(title, tables=tuple(found))


def _convergence_section(cells: Sequence[CellRecord], arms: dict[str, str]) -> Section:
    title = "Convergence"
    figures = []
    for (target, budget), group in group_rows([_cell_row(c, arms) for c in cells], ("target", "budget")).items():
        histories: dict[str, list] = {}
        for row in group:
            history = read_history(row["run_dir"])
            if history:
                histories.setdefault(row["arm"], []).append(history)
        if histories:
            image = plots.convergence_curves(histories, f"{target}, {budget}")
            figures.append(Figure(_slug("convergence", target, budget), image))
    if not figures:
        return Section(title, note="Omitted: no run folder holds a per-epoch history.jsonl.")
    text = "Training loss and validation metric per epoch: mean over runs (seeds, domain pairs); band = min..max."
    return Section(title, (text,), figures=tuple(figures))


def _overlay_section(cells: Sequence[CellRecord], arms: dict[str, str], limit: int) -> Section:
    title = "Qualitative overlays"
    by_arm = group_rows([_cell_row(c, arms) for c in cells], ("arm",))
    depth = max(map(len, by_arm.values()), default=0)
    order = [row for i in range(depth) for group in by_arm.values() for row in group[i : i + 1]]  # round robin
    sources = (OverlaySource(f"{row['arm']} ({row['cell_id']})", row["run_dir"]) for row in order)
    figures = collect_overlays(sources, limit) if limit else []
    if not figures:
        note = "Omitted: no run folder holds predictions/ + reference/ label maps or an overlays/ folder of PNGs."
        return Section(title, note=note)
    text = "Reference outline in green, prediction in red (yellow fill: agreement)."
    return Section(title, (text,), figures=tuple(figures))


def _cell_row(cell: CellRecord, arms: dict[str, str]) -> dict[str, Any]:
    return {**cell.columns, "arm": arms[cell.cell_id], "run_dir": cell.run_dir}


def _slug(*parts: Any) -> str:
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in str(p)) for p in parts)


def write_report(report: Report, out_dir: str | Path) -> ReportFiles:
    """Write the figures, then ``report.md``, then ``report.html``, each file atomically."""
    from .html import render_html
    from .markdown import render_markdown

    out = Path(out_dir)
    figures = []
    for figure in _unique(report.figures):
        path = out / FIGURE_DIR / f"{figure.name}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(figure.png)
        figures.append(path)
    markdown, page = out / MARKDOWN_FILE, out / HTML_FILE
    _write_text(markdown, render_markdown(report, FIGURE_DIR))
    _write_text(page, render_html(report))
    log.info("report written to %s (%d figures)", page, len(figures))
    return ReportFiles(page, markdown, tuple(figures))


def _unique(figures: Sequence[Figure]) -> list[Figure]:
    names = [f.name for f in figures]
    if len(set(names)) != len(names):
        raise ValueError(f"figure names must be unique within a report, got {names}")
    return list(figures)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
