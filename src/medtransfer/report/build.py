"""Build the report of a results folder and write it as one HTML page and a Markdown file with PNG figures.

Example:
    >>> build_report("results/shift_demo", "report")  # doctest: +SKIP
    ReportFiles(html=PosixPath('report/report.html'), markdown=PosixPath('report/report.md'), ...)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError, did_you_mean
from . import plots, tables
from .comparisons import Verdict, compare_all, equivalence_table, overall_sentence
from .document import Figure, Report, Section, Table, literal
from .equivalence import DEFAULT_MARGIN
from .grouping import SIGNED_ERRORS, add_arms, group_rows, metric_name, sorted_values
from .overlays import OverlaySource, collect_overlays
from .provenance import provenance_table
from .results import CellRecord, Results, load_results, read_history

log = logging.getLogger(__name__)

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
FIGURE_DIR = "figures"
MARKER_FILE = ".medtransfer-report"  # names the files a report wrote: how a later report knows it may replace them


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
    return unique_figure_names(
        Report(
            title, tuple(headline or ["No per-case metric to compare."]), tuple(sections), subtitle + _left_out(results)
        )
    )


def _left_out(results: Results) -> str:
    """The cells the report does not include, said in the subtitle (never dropped without a word)."""
    if not results.skipped and not results.failed:
        return ""
    failed = [cell for cell, _ in results.failed]
    listed = f" ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''})" if failed else ""
    skipped = f"{len(results.skipped)} skipped (unfinished, unreadable or no longer in the grid)"
    return f"; not included: {skipped}, {len(failed)} failed{listed}"


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
    if wanted in SIGNED_ERRORS and wanted in available:
        raise ConfigError(
            f"--metric: {wanted} is a signed error (predicted - reference): 0 is best, not the highest or lowest "
            f"value, so it cannot rank strategies in {results.root}; the lesion table shows it. Use one of: "
            f"{', '.join(sorted(m for m in available if m not in SIGNED_ERRORS))}"
        )
    if wanted is not None:
        if wanted not in available:
            raise ConfigError(f"--metric: {did_you_mean(wanted, available, what='metric')} in {results.root}")
        return wanted
    rankable = [m for m in available if m not in SIGNED_ERRORS]
    return next((m for m in ("dice", "lesion_f1") if m in rankable), next(iter(rankable), None))


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
    paragraphs += [f"Unreadable race state: {literal(problem)}" for problem in problems]
    found = (race_table(records),) if records else ()
    return race_headlines(records), [Section("Race", tuple(paragraphs), found)]


def _tests_section(verdicts: Sequence[Verdict]) -> Section:
    title = "Which strategy won: paired tests"
    contested = [v for v in verdicts if len(v.means) > 1]
    if not contested:
        return Section(title, note="Omitted: fewer than two strategies with per-case results in every setting.")
    method = (
        f"Per setting (target x label budget, and grid when there are several) the strategies are compared on the "
        f"same held-out scans (target domain x case; each arm's score averaged over the seeds and domain pairs both "
        f"arms ran) with the paired Wilcoxon signed-rank test and the sign test; each family of pairwise "
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
    found = _per_grid_tables(rows, tables.zoetmulder_tables)
    if not found:
        return Section(title, note="Omitted: the results hold no Dice, IoU or lesion F1 per case.")
    text = (
        "Source task x source domain x target: mean over held-out scans (each scan's seeds and domain pairs averaged "
        "first) with 95% CI; one "
        "table per grid when the results hold several (two grids' runs are never pooled)."
    )
    return Section(title, (text,), tuple(found))


def _lesion_section(rows) -> Section:
    title = "Lesion-wise detection"
    found = _per_grid_tables(rows, tables.lesion_tables)
    if not found:
        return Section(title, note="Omitted: no lesion target (the per-case rows hold no lesion_* metric).")
    text = (
        "Per lesion target and label budget: lesion recall (detection rate), precision and F1 side by side (a "
        "detection rate alone rewards painting everything), false-positive components per scan, the Dice of the "
        "detected lesions, and the count and volume errors (predicted - reference). Then the lesion recall by "
        "reference-lesion volume: a pooled recall can hide that every small lesion is missed."
    )
    return Section(title, (text,), tuple(found) + tuple(_per_grid_tables(rows, tables.lesion_volume_tables)))


def _budget_section(rows, metric: str | None) -> Section:
    title = "Metric vs label budget (Shirokikh view)"
    if metric is None or len(sorted_values(rows, "budget")) < 1:
        return Section(title, note="Omitted: no per-case metric.")
    figures, found = [], []
    for key, group in group_rows(rows, _per_grid(rows, ("target",))).items():
        label = f"{key[-1]}, grid {key[0]}" if len(key) > 1 else str(key[0])
        figures.append(Figure(_slug("budget", *key), plots.budget_curves(group, metric, label)))
        found.append(tables.budget_table(group, metric, label))
    text = (
        f"{metric_name(metric)} per strategy and label budget; error bars are 95% bootstrap CIs over held-out scans "
        "(seeds averaged per scan)."
    )
    return Section(title, (text,), tuple(found), tuple(figures))


def _heatmap_section(rows, metric: str | None) -> Section:
    title = "Domain shift heatmaps"
    pairs = [r for r in rows if r.get("source_domain") is not None]
    if metric is None or not pairs:
        return Section(title, note="Omitted: the grid has no source->target domain pairs.")
    figures = [
        Figure(_slug("heatmap", *key), plots.domain_heatmaps(group, metric, ", ".join(map(str, key))))
        for key, group in group_rows(pairs, _per_grid(pairs, ("target", "budget"))).items()
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
    rows = [_cell_row(c, arms) for c in cells]
    for key, group in group_rows(rows, _per_grid(rows, ("target", "budget"))).items():
        histories: dict[str, list] = {}
        for row in group:
            history = read_history(row["run_dir"])
            if history:
                histories.setdefault(row["arm"], []).append(history)
        if histories:
            image = plots.convergence_curves(histories, ", ".join(map(str, key)))
            figures.append(Figure(_slug("convergence", *key), image))
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


def _per_grid(rows, by: tuple[str, ...]) -> tuple[str, ...]:
    """``by`` with the grid in front when ``rows`` hold more than one grid: as the tables and paired tests do, two
    grids' runs of one setting are two figures, never one pooled mean (one grid keeps the shorter names)."""
    return ("grid", *by) if len({r.get("grid") for r in rows}) > 1 else by


def _per_grid_tables(rows, make) -> list[Table]:
    """``make(rows)``'s tables, made once per grid (captions end with the grid) when ``rows`` hold several grids."""
    grids = group_rows(rows, ("grid",))
    if len(grids) <= 1:
        return list(make(rows))
    return [replace(t, caption=f"{t.caption}, grid {grid}") for (grid,), group in grids.items() for t in make(group)]


def _slug(*parts: Any) -> str:
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in str(p)) for p in parts)


def write_report(report: Report, out_dir: str | Path) -> ReportFiles:
    """Write the figures, ``report.md`` and ``report.html`` to ``out_dir``, which the complete report replaces at once.

    The report is written to a staging folder inside ``out_dir`` (created with its parents when missing) and moved
    in only when every file is there, so a failure leaves nothing half-written (and an earlier report as it was);
    ``out_dir`` itself is kept, with its permissions.  An existing ``out_dir`` must be empty or hold an earlier
    medtransfer report (:func:`check_report_folder`), which is replaced wholly: none of its old figures stay behind.

    Raises:
        OutputError: ``out_dir`` holds files a report did not write, or the report cannot be written.
    """
    from .html import render_html
    from .markdown import render_markdown

    out = Path(out_dir)
    check_report_folder(out)
    report = unique_figure_names(report)
    figures = report.figures
    created = next((p for p in (out, *out.absolute().parents) if p.parent.exists()), out) if not out.exists() else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        for leftover in [p for p in out.iterdir() if _leftover(p.name)]:  # of a report run that was killed
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".report-", suffix=".tmp", dir=out))
    except OSError as err:
        raise OutputError.from_os_error(out, err, "the report") from None
    try:
        (staging / FIGURE_DIR).mkdir()
        for figure in figures:
            (staging / FIGURE_DIR / f"{figure.name}.png").write_bytes(figure.png)
        (staging / MARKDOWN_FILE).write_text(render_markdown(report, FIGURE_DIR), encoding="utf-8")
        (staging / HTML_FILE).write_text(render_html(report), encoding="utf-8")
        names = [HTML_FILE, MARKDOWN_FILE, *(f"{FIGURE_DIR}/{f.name}.png" for f in figures)]
        (staging / MARKER_FILE).write_text(json.dumps({"written_by": "medtransfer report", "files": names}) + "\n")
        _swap_in(staging, out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise OutputError.from_os_error(out, err, "the report") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    page = out / HTML_FILE
    log.info("report written to %s (%d figures)", page, len(figures))
    return ReportFiles(page, out / MARKDOWN_FILE, tuple(out / FIGURE_DIR / f"{f.name}.png" for f in figures))


def check_report_folder(out: str | Path) -> None:
    """Refuse, before any work, a report folder that holds anything a medtransfer report did not write.

    Allowed: a folder that does not exist yet, an empty one, or an earlier report: one with the marker file that
    lists its files (every entry of the folder among them), or one written before the marker existed (only
    ``report.html`` with the report's page, ``report.md`` and ``figures/*.png``).

    Raises:
        OutputError: ``out`` is a file, or a folder holding other files (named; nothing is written).
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise OutputError(f"{out}: exists and is not a report folder; give --out a new or empty folder")
    entries = sorted(p.name for p in out.iterdir() if not _leftover(p.name))
    if not entries:
        return
    foreign = _foreign_files(out, entries)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputError(
            f"{out}: holds files a medtransfer report did not write ({shown}); nothing was written: give --out a new "
            "or empty folder (an earlier report there is replaced)"
        )


def _leftover(name: str) -> bool:
    """A staging folder of a report run that was killed (removed by the next report)."""
    return name.startswith(".report-") and name.endswith((".tmp", ".old"))


def _foreign_files(out: Path, entries: list[str]) -> list[str]:
    """The entries of ``out`` that are not an earlier report's (all of them when it is not a report)."""
    marker = out / MARKER_FILE
    if marker.is_file():
        try:
            listed = set(json.loads(marker.read_text()).get("files") or [])
        except (OSError, ValueError, AttributeError):
            listed = set()
        tops = {name.split("/")[0] for name in listed} | {MARKER_FILE, FIGURE_DIR}
        foreign = [name for name in entries if name not in tops]
        figures = out / FIGURE_DIR
        if figures.is_dir():
            foreign += [
                f"{FIGURE_DIR}/{p.name}" for p in sorted(figures.iterdir()) if f"{FIGURE_DIR}/{p.name}" not in listed
            ]
        return foreign
    return _foreign_legacy(out, entries)


def _foreign_legacy(out: Path, entries: list[str]) -> list[str]:
    """An earlier report without the marker: its page must be one this module rendered."""
    from .html import CSS

    page = out / HTML_FILE
    try:
        ours = page.is_file() and CSS.strip() in page.read_text(encoding="utf-8", errors="replace")
    except OSError:
        ours = False
    if not ours:
        return entries
    foreign = [name for name in entries if name not in (HTML_FILE, MARKDOWN_FILE, FIGURE_DIR)]
    figures = out / FIGURE_DIR
    if figures.exists():
        if not figures.is_dir():
            return [*foreign, FIGURE_DIR]
        foreign += [
            f"{FIGURE_DIR}/{p.name}" for p in sorted(figures.iterdir()) if p.suffix != ".png" or not p.is_file()
        ]
    if (out / MARKDOWN_FILE).exists() and not (out / MARKDOWN_FILE).is_file():
        foreign.append(MARKDOWN_FILE)
    return foreign


REPORT_ENTRIES = (HTML_FILE, MARKDOWN_FILE, FIGURE_DIR, MARKER_FILE)


def _swap_in(staging: Path, out: Path) -> None:
    """Replace the report entries of ``out`` (an earlier report's, checked by :func:`check_report_folder`) with
    the finished ``staging`` folder's, inside ``out`` itself (so the folder keeps its permissions and ``--out .``
    works): the old entries are moved aside, the new ones in, the old ones removed; if a move fails, the old ones
    are put back."""
    aside = Path(tempfile.mkdtemp(prefix=".report-", suffix=".old", dir=out))
    moved: list[str] = []
    try:
        for name in REPORT_ENTRIES:
            if (out / name).exists() or (out / name).is_symlink():
                os.rename(out / name, aside / name)
                moved.append(name)
        placed = []
        try:
            for name in REPORT_ENTRIES:
                if (staging / name).exists():
                    os.rename(staging / name, out / name)
                    placed.append(name)
        except OSError:
            for name in placed:
                shutil.rmtree(out / name, ignore_errors=True) if (out / name).is_dir() else (out / name).unlink()
            for name in moved:
                os.rename(aside / name, out / name)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def unique_figure_names(report: Report) -> Report:
    """The report with every figure's file name unique: a repeated name (compared without case, as some file
    systems do) gets ``-2``, ``-3``, ... in order of appearance.  Names can repeat: :func:`_slug` maps ``/``, space
    and ``_`` alike to ``-`` (targets ``t/1`` and ``t 1``), and overlay names are cut to a length."""
    taken: set[str] = set()
    sections = []
    for section in report.sections:
        figures = []
        for figure in section.figures:
            name, k = figure.name, 1
            while name.lower() in taken:
                k += 1
                name = f"{figure.name}-{k}"
            taken.add(name.lower())
            figures.append(figure if name == figure.name else replace(figure, name=name))
        sections.append(replace(section, figures=tuple(figures)))
    return replace(report, sections=tuple(sections))
