"""The report's paired unit: one held-out scan per (target domain, case), grids never pooled, seeds matched.

Expected values are worked out here by hand (per-scan means) and checked against scipy's Wilcoxon test and
statsmodels' Holm correction.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medtransfer.report.comparisons import compare_all, compare_setting, overall_sentence
from medtransfer.report.grouping import common_scan_scores, replicate_scores, unit_scores
from medtransfer.report.stats import compare_pairs, pairwise_comparisons
from medtransfer.report.tables import comparison_table, win_count_table

multitest = pytest.importorskip("statsmodels.stats.multitest")
SETTING = {"target": "brain", "budget": "n1"}


def row(arm, case, value, *, seed=0, pair=None, grid="g", **extra):
    out = {"grid": grid, "target": "brain", "budget": "n1", "arm": arm, "case": case, "seed": seed, "dice": value}
    if pair is not None:
        out.update(domain_pair=pair, source_domain=pair.split("->")[0], target_domain=pair.split("->")[1])
    return {**out, **extra}


def test_domain_pairs_sharing_a_target_domain_count_each_scan_once():
    """Two source domains x two seeds on the same 6 philips scans: n = 6 scans, scores averaged over 4 runs."""
    rng = np.random.default_rng(0)
    scans = [f"sub{i}" for i in range(6)]
    values = {
        (arm, p, s): rng.uniform(0.5, 0.9, 6)
        for arm in ("full", "scratch")
        for p in ("siemens", "philips")
        for s in (0, 1)
    }
    rows = [
        row(arm, scans[i], v[i], seed=s, pair=f"{p}->philips") for (arm, p, s), v in values.items() for i in range(6)
    ]
    verdict = compare_setting(rows, "dice", SETTING)
    per_scan = {
        arm: np.mean([values[arm, p, s] for p in ("siemens", "philips") for s in (0, 1)], axis=0)
        for arm in ("full", "scratch")
    }
    assert verdict.n == 6  # the old unit (domain pair x case) gave 12
    (c,) = verdict.wilcoxon
    assert c.n == 6
    assert c.pvalue == pytest.approx(stats.wilcoxon(per_scan["full"] - per_scan["scratch"]).pvalue)
    assert c.mean_diff == pytest.approx((per_scan["full"] - per_scan["scratch"]).mean())
    assert verdict.means["full"] == pytest.approx(per_scan["full"].mean())
    assert "n = 6 paired cases, i.e. distinct held-out scans, each averaged over its seeds and the domain pairs" in (
        verdict.sentence()
    )
    note = comparison_table(verdict).note
    assert "n pairs = distinct held-out scans (target domain x case)" in note
    assert "Holm-corrected over the 1 pair of strategies" in note


def test_scans_of_different_target_domains_are_different_units():
    rows = [
        row(a, f"c{i}", 0.5 + 0.01 * i + (a == "full") * 0.1, pair=p)
        for a in ("full", "x")
        for p in ("s->t1", "s->t2")
        for i in range(4)
    ]
    assert compare_setting(rows, "dice", SETTING).n == 8
    # rows written without target_domain: it is read from the domain pair's target side
    bare = [{k: v for k, v in r.items() if k not in ("source_domain", "target_domain")} for r in rows]
    assert set(unit_scores(bare, "dice")["full"]) == {(t, f"c{i}") for t in ("t1", "t2") for i in range(4)}


def test_two_grids_are_two_settings_never_pooled():
    g = [
        row(a, f"c{i}", v, grid="g")
        for a, v0 in (("full", 0.8), ("scratch", 0.7))
        for i, v in enumerate(v0 + 0.01 * np.arange(8))
    ]
    g2 = [
        row(a, f"c{i}", v, grid="g2")
        for a, v0 in (("full", 0.3), ("scratch", 0.4))
        for i, v in enumerate(v0 + 0.01 * np.arange(8))
    ]
    verdicts = compare_all(g + g2, "dice")
    assert [v.setting for v in verdicts] == [{"grid": "g", **SETTING}, {"grid": "g2", **SETTING}]
    assert [v.label for v in verdicts] == ["g, brain, n1", "g2, brain, n1"]
    assert [v.winner for v in verdicts] == ["full", "scratch"]
    assert verdicts[0].means == pytest.approx({"full": 0.835, "scratch": 0.735})  # mean of 0.80..0.87; 0.70..0.77
    assert [v.n for v in verdicts] == [8, 8]
    assert overall_sentence(verdicts).startswith("Over 2 settings (grid x target x label budget): ")
    # one grid: the setting stays target x budget, as before
    assert compare_all(g, "dice")[0].setting == SETTING


def test_win_counts_keep_the_grids_domain_pairs_apart():
    rows = [row("a", "c0", 0.9, pair="s->t", grid="g"), row("b", "c0", 0.5, pair="s->t", grid="g")]
    rows += [row("a", "c0", 0.1, pair="s->t", grid="g2"), row("b", "c0", 0.5, pair="s->t", grid="g2")]
    table = win_count_table(rows, "dice", "brain, n1")
    # pooled, a (0.5) and b (0.5) would tie at one position; per grid, each wins one of two
    assert table.rows[0][:3] == ("a", "1 / 2", "—")
    assert table.rows[0][3].startswith("1-1 ")


def test_arms_with_different_seeds_are_compared_on_the_seeds_both_ran():
    """full lost seed 1 (a failed cell): every comparison with full uses seed 0 only; the others keep both seeds."""
    rng = np.random.default_rng(4)
    n = 10
    v = {(a, s): rng.uniform(0.5, 0.9, n) for a in ("full", "first_k:1", "scratch") for s in (0, 1)}
    rows = [row(a, f"c{i}", x[i], seed=s) for (a, s), x in v.items() if (a, s) != ("full", 1) for i in range(n)]
    verdict = compare_setting(rows, "dice", SETTING)
    assert verdict.uneven_runs
    assert verdict.means == pytest.approx({a: v[a, 0].mean() for a in ("full", "first_k:1", "scratch")})  # seed 0
    both = {a: (v[a, 0] + v[a, 1]) / 2 for a in ("first_k:1", "scratch")}
    expected = {
        ("full", "first_k:1"): v["full", 0] - v["first_k:1", 0],
        ("full", "scratch"): v["full", 0] - v["scratch", 0],
        ("first_k:1", "scratch"): both["first_k:1"] - both["scratch"],
    }
    raw = {(c.a, c.b): c for c in verdict.wilcoxon}
    assert set(raw) == set(expected)
    keys = list(expected)
    p = [stats.wilcoxon(expected[k]).pvalue for k in keys]
    holm = multitest.multipletests(p, method="holm")[1]
    for k, p_raw, p_holm in zip(keys, p, holm, strict=True):
        assert raw[k].n == n
        assert raw[k].pvalue == pytest.approx(p_raw)
        assert raw[k].pvalue_adjusted == pytest.approx(p_holm)
        assert raw[k].mean_diff == pytest.approx(expected[k].mean())
    sentence = verdict.sentence()
    assert "Not every strategy ran the same seeds and domain pairs (full: seed 0; first_k:1, scratch: seeds 0, 1)" in (
        sentence
    )
    assert "each pair of strategies is compared only on the seeds and domain pairs both ran" in sentence


def test_a_nan_seed_of_one_arm_drops_that_seed_of_that_scan_for_both():
    rows = [row("a", "c0", 0.8, seed=0), row("a", "c0", 0.6, seed=1), row("b", "c0", 0.5, seed=0)]
    rows += [row("b", "c0", float("nan"), seed=1)]
    table = replicate_scores(rows, "dice")
    assert common_scan_scores(table, ["a", "b"]) == {"a": {(None, "c0"): 0.8}, "b": {(None, "c0"): 0.5}}


def test_no_run_common_to_every_arm_is_said_not_tested():
    rows = [row("full", f"c{i}", 0.8, seed=0) for i in range(4)] + [
        row("scratch", f"c{i}", 0.6, seed=1) for i in range(4)
    ]
    verdict = compare_setting(rows, "dice", SETTING)
    assert verdict.n == 0
    assert verdict.wilcoxon == ()
    assert "cannot be tested" in verdict.sentence()
    assert "(full: seed 0; scratch: seed 1): no run is common to all" in verdict.sentence()


def test_compare_pairs_matches_scipy_wilcoxon_and_statsmodels_holm():
    from statsmodels.stats.multitest import multipletests

    scores = {
        "a": [0.1, 0.5, 0.3, 0.9, 0.7, 0.65],
        "b": [0.2, 0.1, 0.0, 0.4, 0.3, 0.35],
        "c": [0.35, 0.3, 0.25, 0.8, 0.15, 0.5],
    }
    names = (("a", "b"), ("a", "c"), ("b", "c"))
    pairs = [(x, y, scores[x], scores[y]) for x, y in names]
    # b - c holds -0.15 twice and +0.15 once, which floats make -0.14999999999999997, -0.15000000000000002 and 0.15:
    # the paired tests see them as the ties they are (scipy on the differences rounded to 1e-12)
    raw = [stats.wilcoxon(np.round(np.subtract(scores[x], scores[y]), 12)).pvalue for x, y in names]
    holm = multipletests(raw, method="holm")[1]
    got = compare_pairs(pairs)
    assert [(c.a, c.b, c.n) for c in got] == [(x, y, 6) for x, y in names]
    assert [c.pvalue for c in got] == pytest.approx(raw)
    assert [c.pvalue_adjusted for c in got] == pytest.approx(list(holm))
    assert [c.mean_diff for c in got] == pytest.approx([np.mean(np.subtract(scores[x], scores[y])) for x, y in names])
    assert pairwise_comparisons(scores) == got  # the aligned form is the same family


def test_heatmaps_keep_the_grids_domain_pairs_apart(monkeypatch):
    from medtransfer.report import build as report_build

    drawn = []
    monkeypatch.setattr(report_build.plots, "domain_heatmaps", lambda rows, metric, title: drawn.append(rows) or b"")
    rows = [row("a", "c0", 0.9, pair="s->t", grid="g"), row("a", "c0", 0.1, pair="s->t", grid="g2")]
    section = report_build._heatmap_section(rows, "dice")
    # pooled, one heatmap would show s->t at 0.5; per grid, two heatmaps show 0.9 and 0.1
    assert [f.name for f in section.figures] == ["heatmap_g_brain_n1", "heatmap_g2_brain_n1"]
    assert [[r["dice"] for r in group] for group in drawn] == [[0.9], [0.1]]
    assert [f.name for f in report_build._heatmap_section(rows[:1], "dice").figures] == ["heatmap_brain_n1"]


def test_mean_tables_and_budget_curves_keep_two_grids_apart(monkeypatch):
    """Two grids' runs of one (target, budget, strategy): per-grid means (0.9 and 0.1), never one pooled 0.5."""
    from medtransfer.report import build as report_build

    def two_grids(**extra):
        return [
            row("a", f"c{i}", value, grid=grid, source="mri_seg", strategy="full", **extra)
            for grid, value in (("g", 0.9), ("g2", 0.1))
            for i in range(3)
        ]

    rows = two_grids()
    zoet = report_build._zoetmulder_section(rows).tables
    assert [t.caption for t in zoet] == [
        "Label budget n1, target brain, grid g",
        "Label budget n1, target brain, grid g2",
    ]
    assert [t.rows[0][-1].split()[0] for t in zoet] == ["0.900", "0.100"]

    drawn = []
    monkeypatch.setattr(report_build.plots, "budget_curves", lambda rows, metric, target: drawn.append(rows) or b"")
    budget = report_build._budget_section(rows, "dice")
    assert [f.name for f in budget.figures] == ["budget_g_brain", "budget_g2_brain"]
    assert [{r["dice"] for r in group} for group in drawn] == [{0.9}, {0.1}]
    assert [t.rows[0][1].split()[0] for t in budget.tables] == ["0.900", "0.100"]
    assert [t.caption for t in budget.tables][0].endswith("target brain, grid g")
    # one grid: the names and captions are as before
    assert [f.name for f in report_build._budget_section(rows[:3], "dice").figures] == ["budget_brain"]
    assert [t.caption for t in report_build._zoetmulder_section(rows[:3]).tables] == ["Label budget n1, target brain"]

    lesion_rows = two_grids(lesion_f1=0.5, lesion_precision=0.5, lesion_detection_rate=0.5)
    lesion = report_build._lesion_section(lesion_rows).tables
    assert [t.caption.rsplit(", ", 1)[-1] for t in lesion] == ["grid g", "grid g2"]


def test_convergence_curves_keep_two_grids_apart(monkeypatch):
    from types import SimpleNamespace

    from medtransfer.report import build as report_build

    cells = [
        SimpleNamespace(cell_id=f"{grid}-x", run_dir=grid, columns={"grid": grid, "target": "brain", "budget": "n1"})
        for grid in ("g", "g2")
    ]
    histories = {"g": [{"epoch": 0, "train_loss": 1.0}], "g2": [{"epoch": 0, "train_loss": 3.0}]}
    monkeypatch.setattr(report_build, "read_history", lambda run_dir: histories[run_dir])
    drawn = []
    monkeypatch.setattr(report_build.plots, "convergence_curves", lambda h, title: drawn.append((title, h)) or b"")
    section = report_build._convergence_section(cells, {c.cell_id: "full" for c in cells})
    assert [f.name for f in section.figures] == ["convergence_g_brain_n1", "convergence_g2_brain_n1"]
    # pooled, one curve would average losses 1 and 3; per grid each figure holds its own run
    assert [(t, [r[0]["train_loss"] for r in h["full"]]) for t, h in drawn] == [
        ("g, brain, n1", [1.0]),
        ("g2, brain, n1", [3.0]),
    ]


def test_table_intervals_are_over_scans_not_over_scan_seed_rows():
    """4 scans x 3 seeds: the budget and Zoetmulder tables' mean [CI] is the bootstrap of the 4 per-scan means
    (seeds averaged first), not of the 12 rows, which would treat a scan's seeds as independent cases."""
    from medtransfer.report.grouping import scan_means
    from medtransfer.report.stats import bootstrap_ci
    from medtransfer.report.tables import SCAN_CI, budget_table, format_mean_ci, zoetmulder_tables

    seeds = {0: [0.50, 0.62, 0.71, 0.90], 1: [0.54, 0.60, 0.75, 0.88], 2: [0.52, 0.64, 0.73, 0.86]}
    rows = [row("full", f"s{i}", v, seed=s, source="mri_seg") for s, vals in seeds.items() for i, v in enumerate(vals)]
    per_scan = [np.mean([seeds[s][i] for s in seeds]) for i in range(4)]  # 0.52, 0.62, 0.73, 0.88
    np.testing.assert_allclose(scan_means(rows, "dice"), per_scan)
    low, high = bootstrap_ci(per_scan, np.mean, seed=0)
    expected = f"{np.mean(per_scan):.3f} [{low:.3f}, {high:.3f}]"
    assert format_mean_ci(scan_means(rows, "dice")) == expected
    pooled = format_mean_ci([r["dice"] for r in rows])
    assert pooled != expected  # 12 rows give a narrower interval than the 4 scans support
    table = budget_table(rows, "dice", "brain")
    assert table.rows == (("full", expected),)
    assert table.note == SCAN_CI
    (zoetmulder,) = zoetmulder_tables(rows)
    assert zoetmulder.rows[0][-1] == expected  # the Dice column (no IoU in these rows)
