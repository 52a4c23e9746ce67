"""Figures of the report as PNG bytes (matplotlib's object API on the Agg canvas: no pyplot, no display).

Every function returns the encoded PNG of one figure; the caller embeds it (HTML) or writes it (Markdown).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .grouping import axis_label, group_rows, metric_name, scan_means, sorted_values, unit_scores
from .tables import mean_ci

DPI = 100
MISSING_COLOR = "#dddddd"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def to_png(fig) -> bytes:
    """Encode a matplotlib figure as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def budget_curves(rows: Sequence[Mapping[str, Any]], metric: str, target: Any) -> bytes:
    """Metric vs label budget, one line per arm, with 95% bootstrap CIs as error bars (x: budgets in order)."""
    budgets = sorted_values(rows, "budget")
    fig = _figure(max(4.5, 1.2 * len(budgets) + 2.5), 3.4)
    ax = fig.add_subplot()
    arms = group_rows(rows, ("arm",))
    for i, ((arm,), cells) in enumerate(arms.items()):
        by_budget = group_rows(cells, ("budget",))
        stats = np.array([mean_ci(scan_means(by_budget.get((b,), []), metric)) for b in budgets])
        x = np.arange(len(budgets)) + (i - (len(arms) - 1) / 2) * 0.04  # dodge overlapping error bars
        err = np.abs(stats[:, 1:].T - stats[:, 0])
        ax.errorbar(x, stats[:, 0], yerr=np.nan_to_num(err), marker="o", capsize=3, label=str(arm))
    ax.set_xticks(np.arange(len(budgets)), [str(b) for b in budgets])
    ax.set_xlabel("label budget (n<scans>[_k<every k-th slice>])")
    ax.set_ylabel(axis_label(metric))
    ax.set_title(f"{metric_name(metric)} vs label budget, target {target}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return to_png(fig)


def domain_heatmaps(rows: Sequence[Mapping[str, Any]], metric: str, title: str) -> bytes:
    """One source-domain x target-domain heatmap of the mean metric per arm (NaN cells grey), all panels on one
    colour scale with one colour bar (0..1 for overlap metrics, else the panels' min..max), the metric in the title."""
    domains = sorted({r.get("source_domain") for r in rows} | {r.get("target_domain") for r in rows} - {None})
    index = {d: i for i, d in enumerate(domains)}
    arms = group_rows(rows, ("arm",))
    cols = min(len(arms), 3)
    nrows = math.ceil(len(arms) / cols)
    size = 0.55 * len(domains) + 1.6
    fig = _figure(cols * size + 0.8, nrows * size + 0.4)
    fig.suptitle(f"{axis_label(metric)}, {title}")
    grids = []
    for (arm,), cells in arms.items():
        grid = np.full((len(domains), len(domains)), np.nan)
        for (pair,), value in _pair_scores(cells, metric).items():
            src, _, tgt = str(pair).partition("->")
            if src in index and tgt in index:
                grid[index[src], index[tgt]] = value
        grids.append((str(arm), grid))
    low, high = color_range(np.concatenate([g.ravel() for _, g in grids]) if grids else np.array([]))
    for k, (arm, grid) in enumerate(grids):
        ax = fig.add_subplot(nrows, cols, k + 1)
        image = _heatmap(ax, grid, domains, arm, low, high)
    if grids:
        fig.colorbar(image, ax=fig.axes, shrink=0.7, label=axis_label(metric))
    return to_png(fig)


def color_range(values: np.ndarray) -> tuple[float, float]:
    """The colour scale of the heatmaps: 0..1 when every finite value is in [0, 1] (overlap metrics), else
    min..max, widened by 0.5 each way when min == max (one colour, mid-scale, so its text stays readable).

    Example:
        >>> color_range(np.array([0.2, np.nan, 0.9])), color_range(np.array([3.0, 3.0]))
        ((0.0, 1.0), (2.5, 3.5))
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1):
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low - 0.5, high + 0.5) if high == low else (low, high)


def _pair_scores(rows, metric: str) -> dict[tuple, float]:
    scores = unit_scores(rows, metric, units=("domain_pair",))
    return {k: v for s in scores.values() for k, v in s.items()}


def _heatmap(ax, grid: np.ndarray, domains: Sequence[str], title: str, low: float, high: float):
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad=MISSING_COLOR)
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=low, vmax=high)
    ticks = np.arange(len(domains))
    ax.set_xticks(ticks, domains, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(ticks, domains, fontsize="small")
    ax.set_xlabel("target domain")
    ax.set_ylabel("source domain")
    ax.set_title(title, fontsize="medium")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            color = "w" if (value - low) < 0.6 * (high - low) else "k"  # white on viridis' dark low end
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small", color=color)
    return image


def convergence_curves(histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], title: str) -> bytes:
    """Training loss and validation metric per epoch, one line per arm (mean over runs, band = min..max)."""
    from matplotlib.ticker import MaxNLocator

    keys = _history_keys(histories)
    fig = _figure(4.2 * len(keys) + 0.6, 3.3)
    fig.suptitle(title)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), k + 1)
        for arm, runs in histories.items():
            table = _epoch_table(runs, key)
            if table.size == 0:
                continue
            epochs = np.arange(1, table.shape[1] + 1)
            with np.errstate(all="ignore"):
                mean, low, high = np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)
            (line,) = ax.plot(epochs, mean, label=str(arm))
            if table.shape[0] > 1:
                ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    return to_png(fig)


def _history_keys(histories) -> list[str]:
    seen = {key for runs in histories.values() for run in runs for record in run for key in record}
    val = sorted(k for k in seen if k.startswith("val_"))
    preferred = [k for k in ("train_loss", "val_dice") if k in seen]
    return preferred + [k for k in val if k not in preferred][: max(0, 2 - len(preferred))]


def _epoch_table(runs: Sequence[Sequence[Mapping[str, Any]]], key: str) -> np.ndarray:
    length = max((len(run) for run in runs), default=0)
    table = np.full((len(runs), length), np.nan)
    for i, run in enumerate(runs):
        for j, record in enumerate(run):
            value = record.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                table[i, j] = value
    return table[:, np.isfinite(table).any(axis=0)] if table.size else table


def overlay(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray, title: str) -> bytes:
    """A 2D slice with the reference (green) and predicted (red) outlines; yellow where they agree."""
    fig = _figure(3.6, 3.8)
    ax = fig.add_subplot()
    ax.imshow(np.rot90(image), cmap="gray", interpolation="nearest")
    for mask, color in ((reference, "#00c000"), (prediction, "#ff3030")):
        if np.any(mask) and not np.all(mask):
            ax.contour(np.rot90(mask.astype(float)), levels=[0.5], colors=[color], linewidths=1.2)
    both = np.rot90(reference & prediction)
    ax.imshow(np.ma.masked_where(~both, both.astype(float)), cmap="autumn_r", alpha=0.25, vmin=0, vmax=1)
    ax.set_title(title, fontsize="small")
    ax.set_axis_off()
    return to_png(fig)
